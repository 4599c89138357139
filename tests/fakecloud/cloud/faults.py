"""Faults from the cloud: answers and connections that go wrong on purpose.

inject_fault() is the one place where injected faults are decided from
the knobs: the per-request ones through request_fault() (the token
endpoint's outage, connection faults decided before any answer, Graph
throttling storms), the per-user ones (replication lag, fail_patch_for)
from Graph handlers.  response_fault() alters or cuts a 2xx answer after
routing, and send_fault() writes (or does not write) a Response whose
.fault is set.  The fault rules, the "foreign host" and FaultState, the
state of faults and throttling that Cloud.reset() renews, are here too.
"""

import re
import socket
import struct
import time
import urllib.parse
import uuid

from .directory import user_addresses
from .graph import graph_ok, not_found_text
from .knobs import KNOBS, Knob, _int_at_least
from .limits import graph_token_tenant, throttle_answer
from .wire import (ROUTES, Response, aad_error_response, bearer, graph_error,
                   graph_throttled, iso_ms, route)


# --------------------------------------------------------------------------
# Faults from the cloud (issue 6): Graph throttling storms, connection-level
# faults on Graph answers, the token endpoint going down, and a "foreign
# host" that records any bearer token sent to it.  Knobs here are added to
# KNOBS; inject_fault() calls request_fault() once per request (which asks
# limits.throttle_answer() about throttling storms), and Cloud.answer()
# calls response_fault() on the answer it built.  Handler sends a Response
# whose .fault is set with send_fault().
#
# State (Cloud.fault_state, reset with the cloud):
#   throttle windows per (tenant, service, client id): (sent, until) of each
#   429/503 with Retry-After; a request arriving after sent + GRACE and
#   before until is "early" (the grace covers requests already in flight
#   when the answer left);
#   per-tenant counters {"requests", "throttled", "early",
#   "connection_early"} (the last one: see "Throttling per connection" in
#   limits.py);
#   the fault rules with what each has left;
#   requests that reached the foreign host.
# --------------------------------------------------------------------------

THROTTLE_GRACE_MS = 100         # default of the throttle_grace_ms knob
STALL_DEFAULT_MS = 70000        # longer than galbridge's 60 s timeout
OVERSIZE_DEFAULT = 64 * 1024 * 1024 + 64 * 1024   # over galbridge's cap
LOGIN_DOWN_RETRY_AFTER = 1      # seconds (guess: Entra documents none)

# Kinds decided before routing (no answer is built) and after it (the
# 2xx answer is altered or cut).
FAULT_KINDS_BEFORE = ("reset_before_response", "stall", "deny")
FAULT_KINDS_AFTER = (
    "reset_mid_body", "truncate", "oversize", "invalid_json",
    "wrong_shape:value_string", "wrong_shape:no_value",
    "next_link_not_url", "next_link_foreign_host",
    "delta_link_foreign_host", "next_link_self", "next_link_endless",
    "invalid_utf8")
FAULT_RULE_KEYS = {"service", "method", "path", "kind", "count", "ms",
                   "bytes", "tenant", "items", "text"}
ENDLESS_ITEMS = 1               # default "items" of next_link_endless


class FaultState:
    def __init__(self):
        self.windows = {}       # (tenant, service, client) -> [(sent, until)]
        self.counts = {}        # tenant id -> {"requests", "throttled", ...}
        self.rules = []         # dicts: the rule plus "left" and "fired"
        self.foreign = []       # requests that reached the foreign host
        self.login_down_until = 0.0
        self.retry_after_turn = 0
        self.early_examples = {}  # tenant id -> descriptions (limits.py)
        self.connection_examples = {}   # the same, for connection_early

    def tenant_counts(self, tid):
        return self.counts.setdefault(
            tid, {"requests": 0, "throttled": 0, "early": 0,
                  "connection_early": 0})


def _fraction(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and 0 <= v <= 1)


def _check_fault_rules(value):
    if not isinstance(value, list):
        return False
    for rule in value:
        if not isinstance(rule, dict) or set(rule) - FAULT_RULE_KEYS:
            return False
        if rule.get("kind") not in FAULT_KINDS_BEFORE + FAULT_KINDS_AFTER:
            return False
        if rule.get("service", "graph") not in ("graph", "login",
                                                "exchange"):
            return False
        if rule["kind"] == "deny" and rule.get("service",
                                               "graph") != "graph":
            return False
        for key in ("method", "path", "tenant"):
            if not isinstance(rule.get(key, ""), str):
                return False
        try:
            re.compile(rule.get("path", ""))
        except re.error:
            return False
        for key, low in (("count", 1), ("ms", 0), ("bytes", 1),
                         ("items", 0)):
            if key in rule and not _int_at_least(low)(rule[key]):
                return False
        if not isinstance(rule.get("text", "x"), str) or \
                not rule.get("text", "x"):
            return False
        if rule["kind"] == "invalid_utf8" and "text" not in rule:
            return False
    return True


def _on_faults(cloud, value):
    cloud.fault_state.rules = [
        dict(rule, left=rule.get("count", 1), fired=0) for rule in value]


def _on_login_down(cloud, value):
    cloud.fault_state.login_down_until = (
        time.monotonic() + value / 1000.0 if value else 0.0)


KNOBS.update({
    "throttle_write_fraction": Knob(
        0, _fraction, None,
        "fraction (0..1) of Graph writes (POST/PATCH/DELETE, $batch inner "
        "requests too) answered 429 TooManyRequests with Retry-After "
        "1-3 s"),
    "throttle_read_fraction": Knob(
        0, _fraction, None,
        "fraction (0..1) of Graph reads (GET) answered 503 "
        "serviceNotAvailable with Retry-After 1-3 s"),
    "faults": Knob(
        [], _check_fault_rules, _on_faults,
        "rules [{service, method, path (regex searched in path?query), "
        "tenant, kind, count, ms, bytes, items, text}]: each fires count "
        "times (default 1); "
        "kinds: " + ", ".join(FAULT_KINDS_BEFORE + FAULT_KINDS_AFTER)),
    "throttle_grace_ms": Knob(
        THROTTLE_GRACE_MS, _int_at_least(0), None,
        "a request arriving within this long after a throttled answer "
        "left is not counted early (it may have been sent before the "
        "client could read the answer), milliseconds"),
    "login_down_ms": Knob(
        0, _int_at_least(0), _on_login_down,
        "for this long from now the token endpoint answers 503 "
        "temporarily_unavailable with Retry-After, milliseconds"),
})


def inject_fault(req, user=None):
    """The one place where injected faults (429/503 with Retry-After,
    dropped connections, delays, replication lag, per-user failures) are
    decided from req.cloud.knobs.  Called once per request before routing
    (user None), and again by Graph handlers that address one user by id
    or UPN, with that user, once it is found.  Returns a Response to send
    instead of the real answer, or None."""
    knobs = req.cloud.knobs
    if user is None and req.batch_id is not None and \
            knobs["batch_inner_429"] > 0:
        # Each inner request of a $batch is throttled on its own.
        knobs["batch_inner_429"] -= 1
        return graph_throttled(req, knobs["batch_inner_retry_after"])
    if user is None:
        return request_fault(req)       # see "Faults from the cloud"
    lag = knobs["replication_lag_ms"] / 1000.0
    if user.invited_at and time.monotonic() < user.invited_at + lag:
        # Just-created objects are not yet replicated (MICROSOFT.md).
        return graph_error(req, 404, "Request_ResourceNotFound",
                           not_found_text(req.group(2)))
    if req.method == "PATCH" and knobs["fail_patch_for"]:
        keys = {user.id} | user_addresses(user.props, other_mails=True)
        if keys & {k.lower() for k in knobs["fail_patch_for"]}:
            return graph_error(req, 403, "Authorization_RequestDenied",
                               "Insufficient privileges to complete the "
                               "operation.")
    return None


def request_tenant_id(req):
    """The tenant a request acts for: its bearer token's (graph,
    exchange) or the one its token URL names (login); None if unknown."""
    if req.service == "login":
        tenant = req.cloud.find_tenant(req.path.strip("/").split("/")[0])
        return tenant.id if tenant is not None else None
    token, _ = req.cloud.check_token(bearer(req))
    return token.tenant_id if token is not None else None


def rule_matches(rule, req, kinds):
    if rule["left"] <= 0 or rule["kind"] not in kinds:
        return False
    if rule.get("service", "graph") != req.service:
        return False
    if rule.get("method") and rule["method"].upper() != req.method:
        return False
    target = req.path + ("?" + req.query if req.query else "")
    if re.search(rule.get("path", ""), target) is None:
        return False
    if rule.get("tenant"):
        tenant = req.cloud.find_tenant(rule["tenant"])
        return tenant is not None and tenant.id == request_tenant_id(req)
    return True


def take_rule(req, kinds, accept=None):
    for rule in req.cloud.fault_state.rules:
        if rule_matches(rule, req, kinds) and (accept is None
                                               or accept(rule)):
            rule["left"] -= 1
            rule["fired"] += 1
            return rule
    return None


def request_fault(req):
    """Before routing: the token endpoint's outage, connection faults
    decided before any answer, Graph throttling.  Response or None."""
    cloud = req.cloud
    state = cloud.fault_state
    if req.service == "foreign":
        return None
    if req.service == "login" and \
            time.monotonic() < state.login_down_until:
        resp = aad_error_response(
            req, 503, "temporarily_unavailable", 90033,
            "A transient error has occurred. Please try again.")
        resp.headers["Retry-After"] = str(LOGIN_DOWN_RETRY_AFTER)
        return resp
    rule = (take_rule(req, FAULT_KINDS_BEFORE) if req.batch_id is None
            else None)
    if rule is not None and rule["kind"] == "deny":
        # The app lacks the permission: the documented refusal
        # (CROSS-TENANT-ACCESS.md §1.5, user-update.md).
        return graph_error(req, 403, "Authorization_RequestDenied",
                           "Insufficient privileges to complete the "
                           "operation.")
    if rule is not None:
        resp = Response(0)
        resp.fault = rule
        return resp
    if req.service != "graph" or re.match(r"^/(v1\.0|beta)/\$batch/?$",
                                          req.path):
        return None            # a $batch is throttled per inner request
    if not graph_token_tenant(req):
        return None
    answer = throttle_answer(req, req.method)
    if answer is None:
        return None
    status, body, headers = answer
    return Response(status, body, headers)


def foreign_link(cloud, url):
    """url with its scheme and host replaced by the foreign host's."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(
        ("https", getattr(cloud, "foreign_netloc", "localhost:1"),
         parts.path, parts.query, ""))


def reshape(rule, body):
    """The altered JSON object for a body-changing kind, or None when the
    answer has nothing the kind could change (the rule is kept)."""
    kind = rule["kind"]
    if not isinstance(body, dict):
        return None
    body = dict(body)
    next_link = body.get("@odata.nextLink")
    delta_link = body.get("@odata.deltaLink")
    if kind == "wrong_shape:value_string":
        if "value" not in body:
            return None
        body["value"] = "not an array"
    elif kind == "wrong_shape:no_value":
        if "value" not in body:
            return None
        del body["value"]
    elif kind in ("next_link_not_url", "next_link_foreign_host"):
        link = next_link or delta_link
        if not link:
            return None
        body.pop("@odata.deltaLink", None)
        if kind == "next_link_not_url":
            body["@odata.nextLink"] = "users/delta?$skiptoken=not-a-url"
        else:
            body["@odata.nextLink"] = foreign_link(rule["cloud"], link)
    elif kind == "delta_link_foreign_host":
        if not delta_link:
            return None
        body["@odata.deltaLink"] = foreign_link(rule["cloud"], delta_link)
    elif kind == "next_link_self":
        if not (next_link or delta_link):
            return None
        body.pop("@odata.deltaLink", None)
        body["@odata.nextLink"] = rule["self_url"]
    return body


# -- next_link_endless: a users/delta round that never ends ----------------
#
# The answer's link (nextLink or deltaLink) is put away behind a new
# $skiptoken, given as the nextLink, and `items` (default 1) users that
# exist nowhere are added to the page.  Asked for, that skiptoken answers
# an empty page carrying the link it stands for, which the rule (while it
# fires) turns into one more endless page; once the rule is spent or
# cleared, the round goes on where it was.  Nothing Microsoft documents:
# a service fault, as the issue describes one.

def endless_applies(req, body):
    return (re.match(r"^/v1\.0/users/(?:microsoft\.graph\.)?delta/?$",
                     req.path) is not None
            and isinstance(body, dict) and isinstance(body.get("value"), list)
            and bool(body.get("@odata.nextLink")
                     or body.get("@odata.deltaLink")))


def endless_body(req, rule, body):
    cloud, tenant = req.cloud, req.tenant
    body = dict(body)
    kept = {k: body.pop(k) for k in ("@odata.nextLink", "@odata.deltaLink")
            if k in body}
    token = cloud.new_link("users-endless", tenant.id, kept)
    body["@odata.nextLink"] = (f"{cloud.graph_url}/v1.0/users/delta?"
                               f"$skiptoken={token}")
    value = list(body["value"])
    for _ in range(rule.get("items", ENDLESS_ITEMS)):
        uid = str(uuid.uuid4())
        nick = "endless-" + uid[:8]
        value.append({
            "id": uid, "displayName": f"Endless {uid[:8]}",
            "mail": f"{nick}@{tenant.domain}", "mailNickname": nick,
            "userPrincipalName": f"{nick}@{tenant.domain}",
            "userType": "Member", "accountEnabled": True})
    body["value"] = value
    return body


def endless_page(req, link):
    """The page behind an endless $skiptoken: no items, and the link the
    fault put away (the fault, still firing, makes it endless again)."""
    body = {"@odata.context":
            f"{req.cloud.graph_url}/v1.0/$metadata#users",
            "value": []}
    body.update(link.data)
    return graph_ok(req, body)


def response_fault(req, resp):
    """After routing: apply a rule of a body-changing or mid-answer kind
    to a 2xx answer.  Returns the (possibly new) Response."""
    if req.service in ("admin", "foreign") or not 200 <= resp.status < 300 \
            or getattr(resp, "fault", None) is not None:
        return resp
    body_kinds = ("wrong_shape:value_string", "wrong_shape:no_value",
                  "next_link_not_url", "next_link_foreign_host",
                  "delta_link_foreign_host", "next_link_self")
    self_url = (f"{req.cloud.graph_url}{req.path}"
                + (f"?{req.query}" if req.query else ""))

    def applies(rule):
        if rule["kind"] == "next_link_endless":
            return endless_applies(req, resp.body)
        if rule["kind"] == "invalid_utf8":
            return rule["text"].encode("utf-8") in resp.encode()
        if rule["kind"] not in body_kinds:
            return True
        return reshape(dict(rule, cloud=req.cloud, self_url=self_url),
                       resp.body) is not None

    rule = take_rule(req, FAULT_KINDS_AFTER, applies)
    if rule is None:
        return resp
    if rule["kind"] in body_kinds:
        new = Response(resp.status, reshape(dict(rule, cloud=req.cloud,
                                                 self_url=self_url),
                                            resp.body), resp.headers,
                       resp.content_type)
        return new
    if rule["kind"] == "next_link_endless":
        return Response(resp.status, endless_body(req, rule, resp.body),
                        resp.headers, resp.content_type)
    if rule["kind"] == "invalid_utf8":
        text = rule["text"].encode("utf-8")
        return Response(resp.status,
                        resp.encode().replace(text, text + b"\xff"),
                        resp.headers, resp.content_type)
    if rule["kind"] == "invalid_json":
        text = resp.encode()
        return Response(resp.status, text[:max(1, len(text) // 2)],
                        resp.headers, resp.content_type)
    resp.fault = rule
    return resp


def reset_socket(handler):
    """Close the connection with a TCP RST (SO_LINGER 0)."""
    handler.close_connection = True
    try:
        handler.wfile.flush()
    except OSError:
        pass
    try:
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      struct.pack("ii", 1, 0))
    except OSError:
        pass


def send_fault(handler, resp, payload):
    """Answer (or not) as resp.fault says; the connection is closed."""
    rule = resp.fault
    kind = rule["kind"]
    handler.close_connection = True
    try:
        if kind == "reset_before_response":
            reset_socket(handler)
            return
        if kind == "stall":
            deadline = time.monotonic() + rule.get(
                "ms", STALL_DEFAULT_MS) / 1000.0
            while time.monotonic() < deadline:
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            return                  # closed without a byte of answer
        handler.send_response(resp.status)
        headers = dict(resp.headers)
        headers.setdefault("Content-Type", resp.content_type)
        for name, value in headers.items():
            if name.lower() not in ("content-length", "transfer-encoding"):
                handler.send_header(name, value)
        if kind == "oversize":
            send_oversize(handler, payload, rule.get("bytes",
                                                     OVERSIZE_DEFAULT))
            return
        if kind == "truncate":
            handler.send_header("Content-Length", str(len(payload) + 4096))
            handler.end_headers()
            handler.wfile.write(payload)
            handler.wfile.flush()
            return                  # then a clean close, short of length
        # reset_mid_body: headers and half the body, then RST.
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload[:len(payload) // 2])
        handler.wfile.flush()
        reset_socket(handler)
    except OSError:
        pass                        # the client gave up first: fine


def send_oversize(handler, payload, size):
    """A chunked JSON body of `size` bytes: the real answer with a long
    string member added, so only its size is wrong."""
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    head = payload.rstrip()
    if head.endswith(b"}") and len(head) > 2:
        head = head[:-1] + b',"padding":"'
    else:
        head = b'{"padding":"'
    tail = b'"}'
    left = max(0, size - len(head) - len(tail))
    block = b"x" * (1024 * 1024)
    write = handler.wfile.write

    def chunk(data):
        write(b"%x\r\n" % len(data) + data + b"\r\n")

    chunk(head)
    while left > 0:
        piece = block[:min(left, len(block))]
        chunk(piece)
        left -= len(piece)
    chunk(tail)
    write(b"0\r\n\r\n")
    handler.wfile.flush()


# -- the foreign host: any request is recorded, never answered with data --

def foreign_request(req):
    token = req.cloud.tokens.get(bearer(req) or "")
    req.cloud.fault_state.foreign.append({
        "time": iso_ms(time.time()), "method": req.method, "path": req.path,
        "host": req.host, "authorization": bool(
            req.headers.get("Authorization")),
        "tenant": token.tenant_id if token is not None else None,
        "client_id": token.client_id if token is not None else None})
    return Response(404, {"error": {"code": "NotFound",
                                    "message": "foreign host"}})


ROUTES["foreign"] = []
for _method in ("GET", "POST", "PATCH", "DELETE", "PUT"):
    route("foreign", _method, r"^")(foreign_request)
