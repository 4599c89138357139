"""Graph's limits and throttling.

Graph's documented write, invitation and resource-unit limits
(throttling-limits.md, "Identity and access service limits" and
"Invitation manager service limits"), which limits_admit() counts for
every Graph request from server.dispatch(); the throttling storm knobs
(throttle_write_fraction, throttle_read_fraction), which throttle_answer()
answers from faults.request_fault(); and the counters of clients that
come back before a Retry-After has passed: "early" (on any connection,
past a grace) and per connection (no grace).  The throttle windows and
counters live in Cloud.fault_state (faults.FaultState).
"""

import collections
import math
import re
import time
import urllib.parse

from .wire import bearer, graph_error, graph_throttled


# Directory writes (POST, PATCH, PUT, DELETE; each inner request of a
# $batch on its own, never the $batch itself) count against: per (tenant,
# app) limit_app_writes (3,000) per 150 s, per tenant limit_tenant_writes
# (18,000) per 300 s; POST /invitations also against the tenant's
# limit_invitations (150) per 5 s.  Every request (reads and writes, inner
# ones one by one, never the $batch itself) costs resource units
# (limits_unit_cost) against a per (tenant, app) quota per 10 s,
# limit_app_units, or by tenant size when that is null.  time_factor
# divides every period.  limit_model says how each limit counts:
# "bucket" (what Microsoft documents: a token bucket of the limit, full
# at first, refilled at the limit per period) or "window" (a sliding
# window of the period).  limit_other_app_share is the share of the
# tenant-wide write limit another application of the tenant spends all
# the time: the rest is what the apps galbridge uses find.  Both models
# always record; the knobs decide whether going over answers 429
# (enforce_limits: all four; enforce_invitation_limit: the invitation one
# only).  Answers to requests the limits let through carry
# x-ms-resource-unit, their cost.  Guesses (README): a refused request is
# not counted; Retry-After is the whole seconds (rounded up, at least 1)
# until the limit that refused has room; x-ms-throttle-limit-percentage
# is the fullest limit's used share with two decimals (the other
# application's share included).

LIMIT_APP_WINDOW = 150.0
LIMIT_TENANT_WINDOW = 300.0
INVITATION_WINDOW = 5.0
UNIT_WINDOW = 10.0
LIMIT_PERCENTAGE_FROM = 0.8

# Resource-unit quota per 10 s by live users in the tenant: S under 50,
# M 50 to 500, L above 500.
UNIT_QUOTAS = ((50, 3500), (501, 5000))
UNIT_QUOTA_LARGE = 8000

# Base costs other than 1 (any identity request not listed costs 1); a
# path of me/ costs the same under users/{id | userPrincipalName}/.
UNIT_ME = r"(?:me|users/[^/]+)/"
UNIT_COSTS = [(method, re.compile(pattern, re.I), cost)
              for method, pattern, cost in (
                  ("GET", r"applications", 2),
                  ("GET", r"applications/[^/]+/extensionProperties", 2),
                  ("GET", r"contracts", 3),
                  ("POST", r"directoryObjects/getByIds", 3),
                  ("GET", r"domains/[^/]+/domainNameReferences", 4),
                  ("POST", r"getObjectsById", 3),
                  ("GET", r"groups/[^/]+/members", 3),
                  ("GET", r"groups/[^/]+/transitiveMembers", 5),
                  ("POST", r"isMemberOf", 4),
                  ("POST", UNIT_ME + r"checkMemberGroups", 4),
                  ("POST", UNIT_ME + r"checkMemberObjects", 4),
                  ("POST", UNIT_ME + r"getMemberGroups", 2),
                  ("POST", UNIT_ME + r"getMemberObjects", 2),
                  ("GET", UNIT_ME + r"licenseDetails", 2),
                  ("GET", UNIT_ME + r"memberOf", 2),
                  ("GET", UNIT_ME + r"ownedObjects", 2),
                  ("GET", UNIT_ME + r"transitiveMemberOf", 2),
                  ("GET", r"oauth2PermissionGrants(?:/[^/]+)?", 2),
                  ("GET", r"servicePrincipals/[^/]+/appRoleAssignments", 2),
                  ("GET", r"subscribedSkus", 3),
                  ("GET", r"users", 2))]


def limits_unit_cost(method, path, query):
    """Resource units of a Graph identity request: the base cost of its
    method and path (without /v1.0 or /beta), $select -1, $expand +1,
    $top under 20 -1, never below 1."""
    rest = re.sub(r"^/(v1\.0|beta)/", "", path).strip("/")
    cost = 1
    for base_method, pattern, base in UNIT_COSTS:
        if method == base_method and pattern.fullmatch(rest):
            cost = base
            break
    params = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        params[key.lower().lstrip("$")] = value
    if "select" in params:
        cost -= 1
    if "expand" in params:
        cost += 1
    top = params.get("top", "").strip()
    if top.isdigit() and int(top) < 20:
        cost -= 1
    return max(1, cost)


class UnitWindow:
    """Resource units one (tenant, app) spent: (time, cost) oldest first,
    and their sum."""

    def __init__(self):
        self.spent = collections.deque()
        self.total = 0

    def trim(self, span, now):
        while self.spent and self.spent[0][0] <= now - span:
            self.total -= self.spent.popleft()[1]

    def wait(self, cost, limit, span, now):
        """Seconds until `cost` more fits under `limit`, 0 when it does (a
        cost over the whole limit fits an empty window)."""
        excess = self.total + cost - limit
        wait = 0.0
        for at, spent in self.spent:
            if excess <= 0:
                break
            excess -= spent
            wait = at + span - now
        return wait

    def add(self, now, cost):
        self.spent.append((now, cost))
        self.total += cost


class Bucket:
    """A token bucket of `limit` refilled at limit / span per second, full
    when first used; the limit and span are given on each call (knobs may
    change them), and the level never goes over the current limit."""

    def __init__(self):
        self.tokens = None
        self.last = 0.0

    def level(self, limit, span, now):
        if self.tokens is None:
            self.tokens = float(limit)
        elif now > self.last:
            self.tokens += (now - self.last) * limit / span
        self.tokens = min(self.tokens, float(limit))
        self.last = max(self.last, now)
        return self.tokens

    def wait(self, cost, limit, span, now):
        """Seconds until `cost` is in the bucket, 0 when it is (a cost over
        the whole limit waits for a full bucket)."""
        need = min(cost, limit)
        level = self.level(limit, span, now)
        return 0.0 if level >= need else (need - level) * span / limit

    def add(self, now, cost, limit, span):
        """Spend `cost`; never below empty (what a limit not enforced let
        through is no debt)."""
        self.level(limit, span, now)
        self.tokens = max(0.0, self.tokens - cost)

    def used(self, limit, span, now):
        return (limit - self.level(limit, span, now)) / limit


class TenantLimits:
    def __init__(self):
        self.writes = collections.deque()     # monotonic times, all apps
        self.app_writes = {}                  # client id -> deque
        self.app_units = {}                   # client id -> UnitWindow
        self.buckets = {}                     # (kind, client id) -> Bucket
        self.size = (None, 0)                 # (users key, live users)
        self.stats = {}                       # client id -> counters

    def bucket(self, kind, client_id=None):
        return self.buckets.setdefault((kind, client_id), Bucket())

    def client_stats(self, client_id):
        return self.stats.setdefault(client_id, {
            "writes": 0, "throttled": 0, "peak_writes_per_second": 0,
            "units": 0, "units_throttled": 0,
            "second": None, "in_second": 0})


def limits_is_batch(req):
    return re.match(r"^/(v1\.0|beta)/\$batch/?$", req.path) is not None


def limits_is_write(req):
    return req.method in ("POST", "PATCH", "PUT", "DELETE") and \
        not limits_is_batch(req)


def limits_is_invitation(req):
    return req.method == "POST" and \
        re.match(r"^/(v1\.0|beta)/invitations/?$", req.path) is not None


def limits_unit_quota(cloud, tenant):
    """limit_app_units, or the quota of the tenant's size (live users,
    counted again only after a user was added, deleted or restored)."""
    if cloud.knobs["limit_app_units"] is not None:
        return cloud.knobs["limit_app_units"]
    key = (len(tenant.users), tenant.deletions)
    counted, users = tenant.limits.size
    if counted != key:
        users = sum(1 for u in tenant.users.values() if u.deleted is None)
        tenant.limits.size = (key, users)
    for below, quota in UNIT_QUOTAS:
        if users < below:
            return quota
    return UNIT_QUOTA_LARGE


def window_trim(window, span, now):
    while window and window[0] <= now - span:
        window.popleft()


def window_wait(window, limit, span, now):
    """Seconds until `window` has room for one more, 0 when it has."""
    if len(window) < limit:
        return 0.0
    return window[len(window) - limit] + span - now


def limits_refuse(req, wait, limit, reason):
    """429 from a (tenant, app) window: Retry-After and the
    x-ms-throttle-* headers."""
    stats = req.tenant.limits.client_stats(req.client_id)
    stats["throttled"] += 1
    resp = graph_throttled(req, max(1, math.ceil(wait)))
    resp.headers["x-ms-throttle-scope"] = (
        f"{limit}/{req.client_id}/{req.tenant.id}")
    resp.headers["x-ms-throttle-information"] = reason
    return resp


def tenant_write_limit(knobs):
    """The tenant-wide write limit the apps galbridge uses find: what the
    other application (limit_other_app_share) leaves, at least 1."""
    return max(1.0, knobs["limit_tenant_writes"] *
               (1.0 - knobs["limit_other_app_share"]))


def write_checks(req, factor):
    """(window deque, bucket, limit, span, scope, applies, enforced) of
    each write limit that may refuse `req`, in the order they are
    checked."""
    cloud, tenant, knobs = req.cloud, req.tenant, req.cloud.knobs
    lim = tenant.limits
    write = limits_is_write(req)
    app = lim.app_writes.setdefault(req.client_id, collections.deque())
    return [(tenant.invitations, lim.bucket("invitations"),
             knobs["limit_invitations"], INVITATION_WINDOW / factor, None,
             limits_is_invitation(req),
             knobs["enforce_limits"] or knobs["enforce_invitation_limit"]),
            (app, lim.bucket("app_writes", req.client_id),
             knobs["limit_app_writes"], LIMIT_APP_WINDOW / factor,
             "Tenant_Application", write, knobs["enforce_limits"]),
            (lim.writes, lim.bucket("tenant_writes"),
             tenant_write_limit(knobs), LIMIT_TENANT_WINDOW / factor,
             "Tenant", write, knobs["enforce_limits"])]


def limit_wait(model, window, bucket, cost, limit, span, now):
    """Seconds until `cost` more fits under a limit, by the model."""
    if model == "bucket":
        return bucket.wait(cost, limit, span, now)
    return window_wait(window, max(1, int(limit)), span, now)


def limits_admit(req):
    """Count a Graph request against the limits, or answer 429 when
    enforcing and a limit is spent.  Called by dispatch() once the token
    named the tenant and app, for every request, inner ones included;
    the $batch itself costs nothing."""
    if limits_is_batch(req):
        return None
    write = limits_is_write(req)
    cloud, tenant = req.cloud, req.tenant
    knobs = cloud.knobs
    model = knobs["limit_model"]
    factor = float(knobs["time_factor"])
    now = time.monotonic()
    lim = tenant.limits
    checks = write_checks(req, factor)
    stats = lim.client_stats(req.client_id)
    for window, bucket, limit, span, scope, applies, enforced in checks:
        if not applies:
            continue
        window_trim(window, span, now)
        wait = limit_wait(model, window, bucket, 1, limit, span, now)
        if enforced and wait > 0:
            if scope is None:
                stats["throttled"] += 1
                return graph_throttled(req, max(1, math.ceil(wait)))
            return limits_refuse(req, wait, f"{scope}/Write",
                                 "WriteLimitExceeded")
    cost = limits_unit_cost(req.method, req.path, req.query)
    units = lim.app_units.setdefault(req.client_id, UnitWindow())
    unit_bucket = lim.bucket("units", req.client_id)
    quota = limits_unit_quota(cloud, tenant)
    span = UNIT_WINDOW / factor
    units.trim(span, now)
    if knobs["enforce_limits"]:
        if model == "bucket":
            wait = unit_bucket.wait(cost, quota, span, now)
        else:
            wait = units.wait(cost, quota, span, now)
        if wait > 0:
            stats["units_throttled"] += 1
            return limits_refuse(req, wait, "Tenant_Application/ReadWrite",
                                 "ResourceUnitLimitExceeded")
    units.add(now, cost)
    unit_bucket.add(now, cost, quota, span)
    stats["units"] += cost
    req.units = cost
    if not write:
        return None
    for window, bucket, limit, span, _, applies, _ in checks:
        if applies:
            window.append(now)
            bucket.add(now, 1, limit, span)
    stats["writes"] += 1
    second = int(now)
    if stats["second"] != second:
        stats["second"], stats["in_second"] = second, 0
    stats["in_second"] += 1
    stats["peak_writes_per_second"] = max(stats["peak_writes_per_second"],
                                          stats["in_second"])
    return None


def limits_unit_header(req, resp):
    """x-ms-resource-unit: the units the limits charged the request (none
    on a request they refused or never saw)."""
    if req.units:
        resp.headers["x-ms-resource-unit"] = str(req.units)


def limits_headers(req, resp):
    """x-ms-resource-unit, and x-ms-throttle-limit-percentage on a Graph
    answer to an app whose fullest limit (its writes, its tenant's writes
    with the other application's share, its resource units) is over 80 %
    used (only while enforce_limits)."""
    limits_unit_header(req, resp)
    knobs = req.cloud.knobs
    if not knobs["enforce_limits"] or req.client_id is None:
        return
    factor = float(knobs["time_factor"])
    now = time.monotonic()
    lim = req.tenant.limits
    share = knobs["limit_other_app_share"]
    quota = limits_unit_quota(req.cloud, req.tenant)
    unit_span = UNIT_WINDOW / factor
    app_span = LIMIT_APP_WINDOW / factor
    tenant_span = LIMIT_TENANT_WINDOW / factor
    # The tenant's writes: ours over what the other app leaves, plus the
    # other app's share, of the whole limit.
    tenant_left = tenant_write_limit(knobs)
    if knobs["limit_model"] == "bucket":
        app_used = lim.bucket("app_writes", req.client_id).used(
            knobs["limit_app_writes"], app_span, now)
        ours = lim.bucket("tenant_writes").used(tenant_left, tenant_span,
                                                now)
        units_used = lim.bucket("units", req.client_id).used(
            quota, unit_span, now)
    else:
        app = lim.app_writes.get(req.client_id, collections.deque())
        window_trim(app, app_span, now)
        window_trim(lim.writes, tenant_span, now)
        units = lim.app_units.get(req.client_id, UnitWindow())
        units.trim(unit_span, now)
        app_used = len(app) / knobs["limit_app_writes"]
        ours = len(lim.writes) / tenant_left
        units_used = units.total / quota
    tenant_used = ours * (1.0 - share) + share
    used = max(app_used, tenant_used, units_used)
    if used > LIMIT_PERCENTAGE_FROM:
        resp.headers["x-ms-throttle-limit-percentage"] = \
            f"{min(used, 1.8):.2f}"


def limits_stats(tenant):
    """Per app (client id): writes accepted, 429s the limits sent (all
    kinds), the most writes accepted within one second (1 s buckets),
    resource units accepted and 429s the resource-unit limit sent."""
    return {client_id: {k: v for k, v in counters.items()
                        if k in ("writes", "throttled",
                                 "peak_writes_per_second", "units",
                                 "units_throttled")}
            for client_id, counters in tenant.limits.stats.items()}


# --------------------------------------------------------------------------
# Throttling storms (the throttle_*_fraction knobs) and early requests:
# see "State" in faults.py for the windows and counters.
# --------------------------------------------------------------------------

def next_retry_after(state, rng):
    """1-3 s, alternately a whole number ("2") and a fraction ("1.5")."""
    state.retry_after_turn += 1
    if state.retry_after_turn % 2:
        seconds = rng.randint(1, 3)
        return float(seconds), str(seconds)
    seconds = rng.randint(10, 29) / 10.0
    if seconds == int(seconds):
        seconds += 0.5
    return seconds, f"{seconds:.1f}"


def throttle_window(state, key, now, seconds, req=None):
    windows = [w for w in state.windows.get(key, []) if w[1] > now]
    if req is None:
        window = [now, now + seconds]
    else:
        # Not in force until its answer is on its way (see below).
        window = [math.inf, math.inf]
        req.new_windows.append((window, seconds))
    windows.append(window)
    state.windows[key] = windows


def throttle_windows_sent(cloud, req):
    """The answer that tells the client to wait is about to be written:
    its windows start now. Not sooner (the client cannot read it before;
    under a $batch it leaves only once every item is done) and not after
    the write (a late stamp would make the client's first request after
    the Retry-After look early)."""
    if not req.new_windows:
        return
    with cloud.lock:
        now = time.monotonic()
        for window, seconds in req.new_windows:
            window[0], window[1] = now, now + seconds
        req.new_windows = []


def early_window(state, key, arrived, grace):
    """The (sent, until) window `arrived` falls in past the grace, or
    None."""
    for sent, until in state.windows.get(key, []):
        if sent + grace < arrived < until:
            return sent, until
    return None


EARLY_EXAMPLES = 20             # early requests described, per tenant


def throttle_answer(req, method):
    """Decide throttling of one Graph request (or $batch inner request)
    by `method` for req's tenant and client.  Counts it; returns
    (status, body, headers) for a throttled one, else None."""
    cloud = req.cloud
    state = cloud.fault_state
    key = (req.tenant.id, "graph", req.client_id)
    arrived = getattr(req, "arrived", time.monotonic())
    counts = state.tenant_counts(req.tenant.id)
    counts["requests"] += 1
    window = early_window(state, key, arrived,
                          cloud.knobs["throttle_grace_ms"] / 1000.0)
    if window is not None:
        counts["early"] += 1
        # What it was, for whoever has to find out why.
        examples = state.early_examples.setdefault(req.tenant.id, [])
        if len(examples) < EARLY_EXAMPLES:
            examples.append({
                "method": req.method, "path": req.path,
                "batch_item": req.batch_id is not None,
                "ms_after_answer": round((arrived - window[0]) * 1000),
                "ms_before_end": round((window[1] - arrived) * 1000),
                "request_on_connection": getattr(req, "on_connection", 0)})
    if method in ("POST", "PATCH", "DELETE"):
        fraction, status = cloud.knobs["throttle_write_fraction"], 429
    elif method == "GET":
        fraction, status = cloud.knobs["throttle_read_fraction"], 503
    else:
        return None
    if not fraction or cloud.rng.random() >= fraction:
        return None
    seconds, text = next_retry_after(state, cloud.rng)
    throttle_window(state, key, time.monotonic(), seconds, req)
    counts["throttled"] += 1
    if status == 429:
        # error-429-throttled.json: code, innerError, message, in order.
        body = graph_throttled(req, text).body
    else:
        # errors.md: serviceNotAvailable, "may repeat the request after a
        # delay, the length of which may be specified in a Retry-After
        # header".
        body = graph_error(req, 503, "serviceNotAvailable",
                           "The service is temporarily unavailable. Please "
                           "retry after the time given in Retry-After.").body
    return status, body, {"Retry-After": text}


def graph_token_tenant(req):
    """Sets req.tenant/client_id/token from a live Graph token without
    answering; False when the request would get a 401 anyway."""
    token, _ = req.cloud.check_token(bearer(req))
    if token is None or token.kind != "graph":
        return False
    req.token = token
    req.tenant = req.cloud.tenants[token.tenant_id]
    req.client_id = token.client_id
    return True


# --------------------------------------------------------------------------
# Throttling per connection.  HTTP/1.1 keep-alive without pipelining (what
# Handler serves, and what libcurl speaks): a client sends its next request
# on a connection only once it has read the previous answer there.  So a
# request that arrives on a connection after a throttled answer was written
# on it (a 429, a 503/504 with Retry-After, or a 200 $batch answer whose
# inner answers carry such a status), for the same tenant and client
# (app), before that answer's Retry-After has passed, was sent after its
# client read that answer: invariant 7 allows none, and no grace is
# needed, unlike "early" (which must allow for requests already on their
# way on other connections).  The window starts just before the answer is
# written (the client cannot read it sooner), so a client that waits
# Retry-After from reading it is never counted.  Counted for Graph and
# Exchange; an answer without Retry-After (Exchange's "too many concurrent
# requests" 429) opens no window, since it names no time.
# --------------------------------------------------------------------------

CONNECTION_SERVICES = ("graph", "exchange")
THROTTLED_STATUSES = (429, 503, 504)


def _retry_after_seconds(headers):
    for name, value in (headers or {}).items():
        if name.lower() != "retry-after":
            continue
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            return None
        return seconds if seconds >= 0 else None
    return None


def answer_retry_after(resp):
    """The wait a throttled answer asks of its client, in seconds, or None:
    the Retry-After of a 429 (503, 504), or the longest of the throttled
    inner answers of a 200 $batch answer."""
    if resp.status in THROTTLED_STATUSES:
        return _retry_after_seconds(resp.headers)
    body = resp.body
    if resp.status != 200 or not isinstance(body, dict) or \
            not isinstance(body.get("responses"), list):
        return None
    waits = [_retry_after_seconds(a.get("headers"))
             for a in body["responses"]
             if isinstance(a, dict) and a.get("status") in THROTTLED_STATUSES]
    waits = [w for w in waits if w is not None]
    return max(waits) if waits else None


def connection_key(req):
    """(tenant id, client id) of the token a request carries, live or not
    (a request sent with a revoked token was sent all the same), or
    None."""
    token = req.cloud.tokens.get(bearer(req) or "")
    return (token.tenant_id, token.client_id) if token is not None else None


def connection_check(handler, req):
    """Count req when it came on handler's connection inside a window an
    earlier answer there opened for its tenant and client."""
    cloud = req.cloud
    if req.service not in CONNECTION_SERVICES:
        return
    key = connection_key(req)
    waits = getattr(handler, "throttle_waits", None)
    if key is None or not waits or waits[0] is not cloud.fault_state:
        return
    window = waits[1].get(key)
    if window is None or not req.arrived < window[1]:
        return
    with cloud.lock:
        state = cloud.fault_state
        state.tenant_counts(key[0])["connection_early"] += 1
        examples = state.connection_examples.setdefault(key[0], [])
        if len(examples) < EARLY_EXAMPLES:
            examples.append({
                "service": req.service, "method": req.method,
                "path": req.path, "client_id": key[1],
                "ms_after_answer": round((req.arrived - window[0]) * 1000),
                "ms_before_end": round((window[1] - req.arrived) * 1000),
                "request_on_connection": getattr(req, "on_connection", 0),
                "after": window[2]})


def connection_throttled(handler, req, resp):
    """Just before resp is written on handler's connection: when it asks
    its client to wait, open (or extend) the window of req's tenant and
    client on this connection."""
    if req.service not in CONNECTION_SERVICES:
        return
    seconds = answer_retry_after(resp)
    key = connection_key(req)
    if seconds is None or key is None:
        return
    state = req.cloud.fault_state
    waits = getattr(handler, "throttle_waits", None)
    if waits is None or waits[0] is not state:
        waits = handler.throttle_waits = (state, {})   # after a reset
    now = time.monotonic()
    old = waits[1].get(key)
    if old is None or old[1] < now + seconds:
        # What opened it, for whoever has to find out why.
        waits[1][key] = (now, now + seconds,
                         f"{req.method} {req.path} -> {resp.status}")
