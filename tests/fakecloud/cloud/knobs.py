"""Knobs: every behaviour and fault switch, declared once.

POST /admin/knobs validates against KNOBS; on_set runs under Cloud.lock
after a change, and Cloud.reset() puts every knob back to its default.
The knobs of the faults from the cloud (throttling storms, fault rules,
the token endpoint going down) are added to this table by faults.py.
Fault injection (429/503, dropped connections, replication delay) is
decided in faults.inject_fault() from these values; count_stat() counts a
request in its tenant's stats and fires the touch_after knob.
"""

import collections
import os
import sys


Knob = collections.namedtuple("Knob", "default check on_set doc")


def _int_at_least(low):
    return lambda v: (isinstance(v, int) and not isinstance(v, bool)
                      and v >= low)


def _on_expire_delta_tokens(cloud, value):
    # Links issued so far become invalid; links issued from now on work.
    if value is None:
        cloud.expire_cut = -1
    else:
        cloud.expire_cut = cloud.link_gen
        cloud.link_gen += 1


def _on_revoke_tokens(cloud, value):
    # Access tokens issued so far are refused; new ones work.
    cloud.revoke_cut = cloud.token_serial if value else 0


KNOBS = {
    "delta_page_size": Knob(200, _int_at_least(1), None,
                            "users/delta items per page (server-chosen)"),
    "token_lifetime": Knob(3599, _int_at_least(1), None,
                           "expires_in of new access tokens, seconds"),
    "delta_duplicates": Knob(0, _int_at_least(0), None,
                             "items per delta round repeated on a later page"),
    "delta_empty_pages": Knob(0, _int_at_least(0), None,
                              "empty nextLink pages at the start of a round"),
    "expire_delta_tokens": Knob(
        None, lambda v: v in (None, "syncStateNotFound", "gone",
                              "resyncRequired"),
        _on_expire_delta_tokens,
        "delta/skip tokens issued before this was set answer like an "
        "expired token: syncStateNotFound (400), gone (410 + Location), "
        "resyncRequired (410)"),
    "latency_ms": Knob(0, _int_at_least(0), None,
                       "delay before answering each login/graph/exchange "
                       "request (outside the lock), milliseconds"),
    "revoke_tokens": Knob(False, lambda v: isinstance(v, bool),
                          _on_revoke_tokens,
                          "true: access tokens issued before now answer 401"),
    "replication_lag_ms": Knob(
        0, _int_at_least(0), None,
        "for this long after an invitation creates a user, GET/PATCH/DELETE "
        "of that user answer 404 Request_ResourceNotFound, milliseconds "
        "(measured from the invitation with the current value)"),
    "fail_patch_for": Knob(
        [], lambda v: isinstance(v, list)
        and all(isinstance(i, str) for i in v), None,
        "user ids or addresses (mail/otherMails): Graph PATCH of those users "
        "answers 403 Authorization_RequestDenied"),
    "exo_cmdlets_denied": Knob(
        [], lambda v: isinstance(v, list)
        and all(isinstance(i, str) for i in v), None,
        "Exchange cmdlet names the application has no role for: calling one "
        "answers as Exchange does for a cmdlet outside the caller's roles "
        "(CommandNotFoundException, 'is not recognized')"),
    "enforce_invitation_limit": Knob(
        False, lambda v: isinstance(v, bool), None,
        "true: more than limit_invitations (150) invitations per 5 s per "
        "tenant answer 429 with Retry-After (enforce_limits implies it)"),
    "enforce_limits": Knob(
        False, lambda v: isinstance(v, bool), None,
        "true: Graph directory writes over limit_app_writes per 150 s per "
        "(tenant, app) or limit_tenant_writes per 300 s per tenant, "
        "invitations over limit_invitations per 5 s per tenant, and "
        "resource units over limit_app_units per 10 s per (tenant, app) "
        "answer 429 TooManyRequests with Retry-After (counted as "
        "limit_model says); answers carry x-ms-throttle-limit-percentage "
        "once a limit is over 80 % used"),
    "time_factor": Knob(
        1, lambda v: isinstance(v, (int, float))
        and not isinstance(v, bool) and v >= 1, None,
        "every limit window (150 s, 300 s, 5 s, 10 s) is this many times "
        "shorter; counts unchanged"),
    "limit_app_writes": Knob(3000, _int_at_least(1), None,
                             "writes per 150 s per (tenant, app)"),
    "limit_tenant_writes": Knob(18000, _int_at_least(1), None,
                                "writes per 300 s per tenant, all apps"),
    "limit_invitations": Knob(150, _int_at_least(1), None,
                              "invitations per 5 s per tenant"),
    "limit_model": Knob(
        "bucket", lambda v: v in ("bucket", "window"), None,
        "how every Graph limit counts: bucket (as Microsoft documents: a "
        "token bucket of the limit, full at first, refilled at the limit "
        "per period) or window (a sliding window of the period)"),
    "limit_other_app_share": Knob(
        0, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
        and 0 <= v < 1, None,
        "share (0 to under 1) of the tenant-wide write limit "
        "(limit_tenant_writes) another application of the tenant spends "
        "all the time; the apps of the seed find the rest"),
    "limit_app_units": Knob(
        None, lambda v: v is None or _int_at_least(1)(v), None,
        "resource units per 10 s per (tenant, app); null: by the tenant's "
        "live users, 3500 under 50, 5000 up to 500, 8000 above"),
    "exo_guest_provisioning_ms": Knob(
        0, _int_at_least(0), None,
        "for this long after an invitation creates a guest, Exchange does "
        "not know it (Get-MailUser/Get-User/Get-Recipient of it answer "
        "ManagementObjectNotFoundException), milliseconds (measured from "
        "the invitation with the current value)"),
    "exo_rate_limit": Knob(
        0, _int_at_least(0), None,
        "Exchange InvokeCommand requests per second per tenant; past it "
        "429 with Retry-After and no body (0 = off)"),
    "batch_inner_429": Knob(
        0, _int_at_least(0), None,
        "the next N inner requests of Graph $batch requests answer 429 "
        "TooManyRequests with their own Retry-After of "
        "batch_inner_retry_after seconds (the batch itself answers 200)"),
    "batch_inner_retry_after": Knob(
        1, _int_at_least(0), None,
        "Retry-After (seconds) of the inner 429s of batch_inner_429"),
    "exo_max_concurrent": Knob(
        0, _int_at_least(0), None,
        "Exchange InvokeCommand requests in progress per tenant; one more "
        "answers the plain-text 'maximum number of concurrent requests per "
        "tenant' 429 (0 = off)"),
    "touch_after": Knob(
        None, lambda v: v is None or _check_touch(v), None,
        "{stat, count, path}: when a tenant's stat (a key of its /stats: "
        "invitations, patches, deletes, restores, reads, or an Exchange "
        "cmdlet name) reaches count, create the file path before that "
        "request is answered, once; for tests that switch on a fault of "
        "the client's own machine (tests/reliability/fsfault.c) at an "
        "exact point of a run. Answers are unchanged"),
}


def _check_touch(v):
    return (isinstance(v, dict) and set(v) == {"stat", "count", "path"}
            and isinstance(v["stat"], str) and v["stat"] != "exchange"
            and _int_at_least(1)(v["count"])
            and isinstance(v["path"], str) and os.path.isabs(v["path"]))


def count_stat(cloud, tenant, kind, exchange=False):
    """Count one request of `kind` in the tenant's stats (under the lock),
    and create the touch_after file when its count is reached."""
    counts = tenant.stats["exchange"] if exchange else tenant.stats
    counts[kind] = counts.get(kind, 0) + 1
    touch = cloud.knobs["touch_after"]
    if touch is not None and touch["stat"] == kind and \
            counts[kind] == touch["count"]:
        try:
            with open(touch["path"], "w"):
                pass
        except OSError as e:
            print(f"fakecloud: touch_after: {e}", file=sys.stderr)
