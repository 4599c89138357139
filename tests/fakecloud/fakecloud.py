#!/usr/bin/python3
"""fakecloud: a fake Microsoft cloud for galbridge's tests and demo.

Run:  /usr/bin/python3 tests/fakecloud/fakecloud.py --dir DIR
          [--seed FILE.json] [--admin-port N] [--verbose]
          [--record-raw] [--tls-fault KIND [--tls-fault-on SERVICES]]

At start it makes a throw-away CA and a server certificate for 127.0.0.1 /
localhost, writes DIR/ca.pem, listens with TLS on three ephemeral ports
(login = Microsoft identity platform token endpoint, graph = Microsoft Graph,
exchange = the Exchange Online admin API) and on one plain-HTTP admin port,
then writes DIR/ready.json atomically:

  {"pid", "ca_file", "login_url", "graph_url", "exchange_url", "admin_url"}

(A fourth TLS listener stands for "some other host" and records every
request that reaches it: GET /admin/faults names it; see "Faults from the
cloud".)

SIGTERM / SIGINT stop it cleanly (exit 0, ready.json removed).

For secrets and TLS tests (off by default; the environment variables
FAKECLOUD_RECORD_RAW=1, FAKECLOUD_TLS_FAULT and FAKECLOUD_TLS_FAULT_ON set
the same, so a test can use client.FakeCloud unchanged):
  --record-raw   every login/graph/exchange entry of the request log also
                 carries the request's raw "headers" ([name, value] pairs)
                 and "body" (text, undecodable bytes replaced);
  --tls-fault    serve a bad certificate: unknown-ca (signed by a CA that
                 is not in ca.pem), wrong-host (valid, but for
                 wrong-host.invalid only) or expired (valid names, expired
                 yesterday); --tls-fault-on names the listeners that serve
                 it (comma-separated login,graph,exchange; default all).
                 GET /admin/tls tells the fault and counts completed
                 and failed handshakes per listener (a client that checks
                 the host name after the handshake shows as a completed
                 handshake with no request).

Contract: every answer follows the shapes Microsoft documents (see
shared/MICROSOFT.md and shared/microsoft-fixtures/): key names and casing,
status codes, paging links.  Where Microsoft documents nothing, the shape
comes from public captures of the real service, and the comment says so.

Layout of this file:
  - knobs (fault and behaviour switches, one table),
  - state (tenants, users, groups, tokens, paging links; one lock),
  - routing (a table filled by the @route decorator: one function per
    endpoint, one per Exchange cmdlet via @cmdlet),
  - the four services' endpoints,
  - TLS material and the listeners.

Everything a handler touches is guarded by Cloud.lock; a handler runs with
the lock held and its answer is serialised before the lock is released, so
handlers never copy state.
"""

import argparse
import base64
import collections
import datetime
import hashlib
import http.client
import http.server
import ipaddress
import json
import math
import os
import random
import re
import secrets
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import traceback
import urllib.parse
import uuid

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# --------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------

LOG_MAX = 200000          # request log entries kept (oldest dropped)
LINKS_MAX = 50000         # paging links (skip/delta tokens) kept
BODY_MAX = 16 * 1024 * 1024
ADMIN_BODY_MAX = 512 * 1024 * 1024
CLOCK_SKEW = 300          # seconds allowed on client assertion nbf/exp
ASSERTION_MAX_LIFETIME = 86400

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# Resource (app ID URI) -> service kind, for every cloud in MICROSOFT.md.
# outlook.office.com is the host variant seen in public Exchange captures.
RESOURCES = {
    "https://graph.microsoft.com": "graph",
    "https://graph.microsoft.us": "graph",
    "https://dod-graph.microsoft.us": "graph",
    "https://microsoftgraph.chinacloudapi.cn": "graph",
    "https://outlook.office365.com": "exchange",
    "https://outlook.office.com": "exchange",
    "https://outlook.office365.us": "exchange",
    "https://webmail.apps.mil": "exchange",
    "https://partner.outlook.cn": "exchange",
}

# users/delta without $select returns this set (users-delta-api-example1),
# and so do GET /users/{id} and directoryObject collections for users.
DEFAULT_USER_SELECT = [
    "businessPhones", "displayName", "givenName", "jobTitle", "mail",
    "mobilePhone", "officeLocation", "preferredLanguage", "surname",
    "userPrincipalName",
]
DEFAULT_GROUP_SELECT = [
    "displayName", "description", "mail", "mailEnabled", "mailNickname",
    "securityEnabled", "groupTypes",
]

# Properties of microsoft.graph.user (v1.0).  $select of anything else is a
# 400, as the real service answers; properties a seed invents are accepted
# too (Tenant.extra_props).
USER_PROPERTIES = [
    "aboutMe", "accountEnabled", "ageGroup", "assignedLicenses",
    "assignedPlans", "birthday", "businessPhones", "city", "companyName",
    "consentProvidedForMinor", "country", "createdDateTime", "creationType",
    "deletedDateTime", "department", "displayName", "employeeHireDate",
    "employeeId", "employeeLeaveDateTime", "employeeOrgData",
    "employeeType", "externalUserState", "externalUserStateChangeDateTime",
    "faxNumber", "givenName", "hireDate", "identities", "imAddresses",
    "interests", "isResourceAccount", "jobTitle",
    "lastPasswordChangeDateTime", "legalAgeGroupClassification",
    "licenseAssignmentStates", "mail", "mailNickname", "mobilePhone",
    "mySite", "officeLocation", "onPremisesDistinguishedName",
    "onPremisesDomainName", "onPremisesExtensionAttributes",
    "onPremisesImmutableId", "onPremisesLastSyncDateTime",
    "onPremisesProvisioningErrors", "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier", "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName", "otherMails", "passwordPolicies",
    "passwordProfile", "pastProjects", "postalCode", "preferredDataLocation",
    "preferredLanguage", "preferredName", "provisionedPlans",
    "proxyAddresses", "responsibilities", "schools", "securityIdentifier",
    "showInAddressList", "signInSessionsValidFromDateTime", "skills",
    "state", "streetAddress", "surname", "usageLocation",
    "userPrincipalName", "userType",
]

GRAPH_JSON = ("application/json;odata.metadata=minimal;odata.streaming=true;"
              "IEEE754Compatible=false;charset=utf-8")
EXO_JSON = GRAPH_JSON
AAD_HEADERS = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache",
               "Content-Type": "application/json; charset=utf-8"}
GRAPH_WWW_AUTH = ('Bearer realm="", authorization_uri="https://login.'
                  'microsoftonline.com/common/oauth2/authorize", '
                  'client_id="00000003-0000-0000-c000-000000000000"')
# Observed shape of Exchange Online's challenge (public captures); the 401
# carries no body.
EXO_WWW_AUTH = ('Bearer client_id="00000002-0000-0ff1-ce00-000000000000", '
                'authorization_uri="https://login.microsoftonline.com/common/'
                'oauth2/authorize", error="invalid_token"')
EXO_SERVER = "FAKEPR01A001DC001.FAKEPR01A001.PROD.OUTLOOK.COM"


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def iso_ms(ts):
    return (datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --------------------------------------------------------------------------
# Knobs: every behaviour and fault switch, declared once.  POST /admin/knobs
# validates against this table; on_set runs under the lock after a change.
# Fault injection (429/503, dropped connections, replication delay) belongs
# here plus in inject_fault() below.
# --------------------------------------------------------------------------

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
        "answer 429 TooManyRequests with Retry-After; answers carry "
        "x-ms-throttle-limit-percentage once a window is over 80 %"),
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


# --------------------------------------------------------------------------
# Requests, responses, routing
# --------------------------------------------------------------------------

class Response:
    def __init__(self, status, body=None, headers=None,
                 content_type="application/json"):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.content_type = content_type
        self.drop = False          # reserved: close without answering

    def encode(self):
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        text = json.dumps(self.body, ensure_ascii=False,
                          separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (a user's value can hold one: the directory
            # stores UTF-16) cannot be UTF-8; Graph, a .NET service, sends
            # it as a \ud800 escape, as ensure_ascii does.
            return json.dumps(self.body, separators=(",", ":")).encode(
                "ascii")


class Reply(Exception):
    """Raised by a handler (or a helper deep inside one) to answer now."""

    def __init__(self, response):
        super().__init__(response.status)
        self.response = response


class Request:
    def __init__(self, cloud, service, method, path, query, headers, body,
                 host):
        self.cloud = cloud
        self.service = service
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.host = host
        self.arrived = time.monotonic()     # before waiting for the lock
        # Throttle windows this request opened: they count from when the
        # answer has left (Handler), which the client cannot see sooner.
        self.new_windows = []
        self.match = None
        self.tenant = None          # Tenant the request acts on, if known
        self.client_id = None
        self.token = None
        self.request_id = str(uuid.uuid4())
        self.client_request_id = (headers.get("client-request-id")
                                  or self.request_id)
        self.batch_id = None        # its id, for an inner request of $batch
        self.units = 0              # resource units the limits charged
        # Query options: "$select" and "select" are the same option.
        self.params = {}
        for key, value in urllib.parse.parse_qsl(query,
                                                 keep_blank_values=True):
            self.params[key.lower().lstrip("$")] = value

    def group(self, n):
        return urllib.parse.unquote(self.match.group(n))

    def json_body(self):
        try:
            return json.loads(self.body.decode("utf-8")) if self.body else None
        except (UnicodeDecodeError, ValueError):
            raise Reply(bad_body(self)) from None

    def form(self):
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        return dict(urllib.parse.parse_qsl(text, keep_blank_values=True))


ROUTES = {"login": [], "graph": [], "exchange": [], "admin": []}


def route(service, method, pattern):
    """Register fn(req) -> Response for METHOD on paths matching pattern."""
    def register(fn):
        ROUTES[service].append((method, re.compile(pattern), fn))
        return fn
    return register


def bad_body(req):
    if req.service == "graph":
        return graph_error(req, 400, "BadRequest",
                           "Unable to read JSON request payload. Please "
                           "ensure Content-Type header is set and payload "
                           "is of valid JSON format.")
    if req.service == "exchange":
        return exo_error(400, "BadRequest", "Ex4A1B2C",
                         "System.ArgumentException",
                         "The request body is not valid JSON.")
    return admin_error(400, "body is not valid JSON")


def no_route(req, method_mismatch):
    if req.service == "graph":
        if method_mismatch:
            return graph_error(req, 405, "Request_BadRequest",
                               "Specified HTTP method is not allowed for the "
                               "request target.")
        segment = req.path.rstrip("/").rsplit("/", 1)[-1]
        return graph_error(req, 400, "BadRequest",
                           f"Resource not found for the segment '{segment}'.")
    if req.service == "login" and method_mismatch:
        return aad_error_response(
            req, 400, "invalid_request", 900561,
            f"The endpoint only accepts POST, OPTIONS requests. Received a "
            f"{req.method} request.")
    if req.service == "admin":
        return admin_error(405 if method_mismatch else 404,
                           "no such admin endpoint")
    return Response(405 if method_mismatch else 404)


def dispatch(req):
    if req.service != "admin":          # the admin API never fails on purpose
        fault = inject_fault(req)
        if fault is not None:
            return fault
    if req.service == "graph":
        graph_authenticate(req)
        refused = limits_admit(req)
        if refused is not None:
            return refused
    method_mismatch = False
    for method, pattern, fn in ROUTES[req.service]:
        match = pattern.match(req.path)
        if match is None:
            continue
        if method != req.method:
            method_mismatch = True
            continue
        req.match = match
        return fn(req)
    return no_route(req, method_mismatch)


# --------------------------------------------------------------------------
# Error bodies
# --------------------------------------------------------------------------

def graph_date():
    return utcnow().strftime("%Y-%m-%dT%H:%M:%S")


def graph_error(req, status, code, message, headers=None):
    """Graph error body: {"error": {"code", "message", "innerError":
    {"date", "request-id", "client-request-id"}}} (errors.md, fixtures)."""
    body = {"error": {"code": code, "message": message, "innerError": {
        "date": graph_date(), "request-id": req.request_id,
        "client-request-id": req.client_request_id}}}
    return Response(status, body, headers)


def graph_fail(req, status, code, message, headers=None):
    raise Reply(graph_error(req, status, code, message, headers))


def aad_error_response(req, status, error, code, text):
    """Identity platform error body (reference-error-codes.md sample and
    token-error-invalid-scope.json)."""
    trace = str(uuid.uuid4())
    corr = req.headers.get("client-request-id") or str(uuid.uuid4())
    stamp = utcnow().strftime("%Y-%m-%d %H:%M:%SZ")
    body = {
        "error": error,
        "error_description": (f"AADSTS{code}: {text}\r\nTrace ID: {trace}"
                              f"\r\nCorrelation ID: {corr}\r\nTimestamp: "
                              f"{stamp}"),
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": corr,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }
    return Response(status, body, AAD_HEADERS)


def aad_fail(req, status, error, code, text):
    raise Reply(aad_error_response(req, status, error, code, text))


def exo_error(status, code, err_id, exc_type, text):
    """Exchange admin API error, as captured from the real service:
    details[0].message is "id|exception type|text"; note the lower-case
    "innererror" there (unlike Graph's "innerError")."""
    body = {"error": {
        "code": code,
        "message": "Error executing cmdlet",
        "details": [{"code": "Client", "target": "",
                     "message": f"{err_id}|{exc_type}|{text}"}],
        "innererror": {
            "message": "Error executing cmdlet",
            "type": ("Microsoft.Exchange.Admin.OData.Core."
                     "ODataServiceException"),
        },
    }}
    return Response(status, body)


def admin_error(status, message):
    return Response(status, {"error": message})


def admin_fail(status, message):
    raise Reply(admin_error(status, message))


# --------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------

class App:
    def __init__(self, client_id, secrets_, certificates):
        self.client_id = client_id
        self.secrets = list(secrets_)
        self.certs = []
        for pem in certificates:
            cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
            der = cert.public_bytes(serialization.Encoding.DER)
            self.certs.append({
                "cert": cert,
                "sha1": hashlib.sha1(der).digest(),
                "sha256": hashlib.sha256(der).digest(),
            })


class User:
    """props: current values ("never set" = key absent, cleared = None).
    prop_seq: per property, the tenant seq of its last change."""

    __slots__ = ("id", "props", "prop_seq", "created_seq", "deleted",
                 "deleted_seq", "restored_seq", "deleted_at", "invited_at",
                 "exo")

    # Shown by the admin API even when never set (then null).
    ADMIN_KEYS = ("showInAddressList", "creationType", "externalUserState",
                  "onPremisesExtensionAttributes")

    def __init__(self, uid, props, seq):
        self.id = uid
        self.props = dict(props)
        self.prop_seq = {name: seq for name in props}
        self.created_seq = seq
        self.deleted = None          # None | "soft" | "hard"
        self.deleted_seq = 0
        self.restored_seq = 0
        self.deleted_at = None       # time.time() of the deletion
        self.invited_at = 0          # time.monotonic() of its invitation
        self.exo = None              # {"Name", ...} if made by New-MailUser

    def admin_view(self):
        view = {"id": self.id}
        view.update(self.props)
        for name in self.ADMIN_KEYS:
            view.setdefault(name, None)
        view["deleted"] = self.deleted
        return view


class Contact:
    """An organizational (mail) contact: holds addresses, nothing else
    matters to the fake (conflicts, Get-Recipient)."""

    def __init__(self, cid, props):
        self.id = cid
        self.props = dict(props)
        # When it was made (orgContact has no createdDateTime; Exchange
        # shows it as WhenCreated).
        self.created = iso_ms(time.time())[:-5] + "Z"

    def admin_view(self):
        view = {"id": self.id}
        view.update(self.props)
        return view


def smtp_addresses(values):
    """Lower-case SMTP addresses of a proxyAddresses list."""
    out = set()
    for value in values or []:
        if isinstance(value, str) and value[:5].lower() == "smtp:":
            out.add(value[5:].lower())
    return out


def user_addresses(props, other_mails=False):
    """The addresses an object holds: mail and SMTP proxyAddresses (the
    ones that must be unique in a tenant), plus otherMails if asked."""
    out = smtp_addresses(props.get("proxyAddresses"))
    if isinstance(props.get("mail"), str):
        out.add(props["mail"].lower())
    if other_mails:
        out.update(m.lower() for m in props.get("otherMails") or []
                   if isinstance(m, str))
    return out


class Group:
    def __init__(self, gid, props, members):
        self.id = gid
        self.props = dict(props)
        self.members = list(dict.fromkeys(members))

    def admin_view(self):
        view = {"id": self.id}
        view.update(self.props)
        view["members"] = list(self.members)
        return view


class Tenant:
    def __init__(self, tid, domain):
        self.id = tid
        self.domain = domain
        self.apps = {}
        self.users = {}
        self.groups = {}
        self.seq = 0                 # tenant-wide change sequence
        self.contacts = {}
        self.extra_props = set()
        self.exo_window = (0, 0)     # (minute, requests) for Rate-Limit-*
        self.invitations = collections.deque()   # monotonic times, 5 s
        self.limits = TenantLimits()             # write windows, stats
        self.deletions = 0           # users deleted or restored, ever
        self.stats = {"invitations": 0, "patches": 0, "deletes": 0,
                      "restores": 0, "reads": 0, "exchange": {}}
        self.exo_calls = collections.deque()     # monotonic times, 1 s
        self.exo_in_progress = 0                 # guarded by Cloud.lock
        # (key, folded value) -> ids of users that held it when indexed:
        # a superset kept in step by add_user/patch_user, always checked
        # against the user itself, so lookups by mail, UPN, extension
        # attribute or address do not scan the tenant (benchmarks seed
        # 100,000 users).
        self.index = collections.defaultdict(set)

    def bump(self):
        self.seq += 1
        return self.seq

    def user_defaults(self, data):
        props = {k: v for k, v in data.items() if k != "id"}
        props.setdefault("userType", "Member")
        props.setdefault("accountEnabled", True)
        props.setdefault("creationType", None)
        # Every directory object has one (user.md: createdDateTime,
        # read-only); Exchange shows it as WhenCreated.
        props.setdefault("createdDateTime", iso_ms(time.time())[:-5] + "Z")
        if not props.get("userPrincipalName"):
            local = (props.get("mailNickname")
                     or (props.get("mail") or "").split("@")[0]
                     or re.sub(r"[^A-Za-z0-9]", "",
                               str(props.get("displayName") or ""))
                     or secrets.token_hex(4))
            props["userPrincipalName"] = f"{local}@{self.domain}"
        return props

    def add_user(self, data):
        if not isinstance(data, dict):
            raise ValueError("a user must be a JSON object")
        uid = str(data.get("id") or uuid.uuid4()).lower()
        if uid in self.users:
            raise KeyError(f"user {uid} already exists")
        props = self.user_defaults(data)
        self.extra_props.update(props)
        user = User(uid, props, self.bump())
        self.users[uid] = user
        self.index_user(user)
        return user

    @staticmethod
    def index_keys(user):
        props = user.props
        keys = {("@", a) for a in user_addresses(props, other_mails=True)}
        for name in ("mail", "userPrincipalName"):
            if isinstance(props.get(name), str):
                keys.add((name, props[name].casefold()))
        for name, value in (props.get("onPremisesExtensionAttributes")
                            or {}).items():
            if isinstance(value, str):
                keys.add(("onPremisesExtensionAttributes/" + name,
                          value.casefold()))
        return keys

    def index_user(self, user):
        for key in self.index_keys(user):
            self.index[key].add(user.id)

    def indexed(self, key, value):
        """Users that may hold `value` as `key` ("@" for an address):
        candidates to check, in creation order."""
        ids = self.index.get((key, value.casefold()), ())
        return sorted((self.users[i] for i in ids if i in self.users),
                      key=lambda u: u.created_seq)

    def patch_user(self, user, data):
        changed = {}
        for name, value in data.items():
            if name in ("id", "deleted"):
                raise ValueError(f"'{name}' cannot be set")
            old = user.props.get(name)
            if (name == "onPremisesExtensionAttributes"
                    and isinstance(value, dict)):
                merged = dict(old or {})
                merged.update(value)
                value = merged
            if name not in user.props or old != value:
                changed[name] = value
        if changed:
            seq = self.bump()
            for name, value in changed.items():
                user.props[name] = value
                user.prop_seq[name] = seq
            self.extra_props.update(changed)
            self.index_user(user)   # old keys stay: checked at lookup

    def delete_user(self, user, hard):
        if user.deleted is None:
            user.deleted_at = time.time()
        user.deleted = "hard" if hard else "soft"
        user.deleted_seq = self.bump()
        self.deletions += 1
        if hard:
            for group in self.groups.values():
                if user.id in group.members:
                    group.members.remove(user.id)

    def restore_user(self, user):
        user.deleted = None
        user.deleted_at = None
        user.restored_seq = self.bump()
        self.deletions += 1

    def address_owner(self, address, exclude=None):
        """("User"|"Group"|"Contact", id) of the live object holding the
        address (mail or SMTP proxy address, case-insensitive), or None.
        Deleted users hold nothing: their addresses are free again (a
        restore reconciles, Restore-MsolUser -AutoReconcileProxyConflicts)."""
        address = address.lower()
        for user in self.indexed("@", address):
            if user.deleted is None and user.id != exclude and \
                    address in user_addresses(user.props):
                return "User", user.id
        for group in self.groups.values():
            if group.id != exclude and address in user_addresses(group.props):
                return "Group", group.id
        for contact in self.contacts.values():
            if contact.id != exclude and \
                    address in user_addresses(contact.props):
                return "Contact", contact.id
        return None

    def add_contact(self, data):
        if not isinstance(data, dict):
            raise ValueError("a contact must be a JSON object")
        cid = str(data.get("id") or uuid.uuid4()).lower()
        if cid in self.contacts:
            raise KeyError(f"contact {cid} already exists")
        props = {k: v for k, v in data.items() if k != "id"}
        mail = props.get("mail")
        if mail is not None and not isinstance(mail, str):
            raise ValueError("mail must be a string")
        if mail and "proxyAddresses" not in props:
            props["proxyAddresses"] = [f"SMTP:{mail}"]
        props.setdefault("displayName", mail or cid)
        contact = Contact(cid, props)
        self.contacts[cid] = contact
        return contact

    def find_user(self, key):
        """Live user by id or userPrincipalName, else None."""
        key = key.lower()
        user = self.users.get(key)
        if user is None:
            for candidate in self.indexed("userPrincipalName", key):
                upn = candidate.props.get("userPrincipalName") or ""
                if upn.lower() == key:
                    user = candidate
                    break
        if user is None or user.deleted:
            return None
        return user

    def check_members(self, members):
        for member in members:
            if member not in self.users and member not in self.groups:
                raise ValueError(f"member {member} is neither a user nor a "
                                 f"group of tenant {self.id}")

    def transitive_members(self, gid):
        """[(kind, id)] of the group's members, nested groups flattened
        (each nested group listed too), cycle-safe, deleted users left out."""
        out, seen = [], {gid}
        queue = list(self.groups[gid].members)
        for member in queue:
            if member in seen:
                continue
            seen.add(member)
            if member in self.groups:
                out.append(("group", member))
                queue.extend(self.groups[member].members)
            elif member in self.users and not self.users[member].deleted:
                out.append(("user", member))
        return out


class Token:
    __slots__ = ("serial", "tenant_id", "client_id", "kind", "resource",
                 "expires")

    def __init__(self, serial, tenant_id, client_id, kind, resource,
                 expires):
        self.serial = serial
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.kind = kind
        self.resource = resource
        self.expires = expires


class Link:
    """Server-side state behind an opaque $skiptoken / $deltatoken."""

    __slots__ = ("kind", "tenant_id", "gen", "data")

    def __init__(self, kind, tenant_id, gen, data):
        self.kind = kind
        self.tenant_id = tenant_id
        self.gen = gen
        self.data = data


class DeltaRound:
    """One users/delta round: ids fixed at its start, paged; its deltaLink
    carries the tenant seq of the start, so changes made while the client
    pages come (again) in the next round."""

    def __init__(self, select, filter_ids, since, seq, pages):
        self.select = select
        self.filter_ids = filter_ids
        self.since = since
        self.seq = seq
        self.pages = pages
        self.next_tokens = {}
        self.delta_token = None


class Cloud:
    def __init__(self, verbose=False):
        self.lock = threading.RLock()
        self.verbose = verbose
        self.login_url = self.graph_url = ""
        self.exchange_url = self.admin_url = ""
        self.rng = random.Random()
        self.log_seq = 0
        self.record_raw = False     # --record-raw: keep headers and bodies
        self.tls_fault = None       # --tls-fault, for GET /admin/tls
        self.tls_failures = collections.Counter()
        self.tls_handshakes = collections.Counter()
        self.reset()

    def reset(self):
        self.tenants = {}
        self.knobs = {name: (list(knob.default)
                             if isinstance(knob.default, list)
                             else knob.default)
                      for name, knob in KNOBS.items()}
        self.tokens = {}
        self.token_serial = 0
        self.revoke_cut = 0
        self.links = collections.OrderedDict()
        self.link_gen = 0
        self.expire_cut = -1
        self.log = collections.deque(maxlen=LOG_MAX)
        self.fault_state = FaultState()

    # -- tenants -----------------------------------------------------------

    def find_tenant(self, key):
        key = (key or "").lower()
        for tenant in self.tenants.values():
            if key in (tenant.id, tenant.domain.lower()):
                return tenant
        return None

    def load_seed(self, seed):
        """Add or replace the seed's tenants.  Raises ValueError."""
        if not isinstance(seed, dict) or not isinstance(
                seed.get("tenants"), list):
            raise ValueError('seed must be {"tenants": [...]}')
        built = []
        for spec in seed["tenants"]:
            if not isinstance(spec, dict) or not spec.get("id") \
                    or not spec.get("domain"):
                raise ValueError("every tenant needs an id and a domain")
            tenant = Tenant(str(spec["id"]).lower(), str(spec["domain"]))
            for app in spec.get("apps", []):
                if not app.get("client_id"):
                    raise ValueError("every app needs a client_id")
                try:
                    tenant.apps[app["client_id"].lower()] = App(
                        app["client_id"].lower(), app.get("secrets", []),
                        app.get("certificates", []))
                except (ValueError, TypeError, AttributeError) as exc:
                    raise ValueError(f"app {app['client_id']}: bad "
                                     f"certificate: {exc}") from None
            for user in spec.get("users", []):
                try:
                    tenant.add_user(user)
                except KeyError as exc:
                    raise ValueError(str(exc)) from None
            for group in spec.get("groups", []):
                self.add_group(tenant, group)
            for contact in spec.get("contacts", []):
                try:
                    tenant.add_contact(contact)
                except KeyError as exc:
                    raise ValueError(str(exc)) from None
            for group in tenant.groups.values():
                tenant.check_members(group.members)
            built.append(tenant)
        for tenant in built:
            self.tenants[tenant.id] = tenant
        return [tenant.id for tenant in built]

    @staticmethod
    def add_group(tenant, data):
        if not isinstance(data, dict):
            raise ValueError("a group must be a JSON object")
        gid = str(data.get("id") or uuid.uuid4()).lower()
        if gid in tenant.groups:
            raise ValueError(f"group {gid} already exists")
        props = {k: v for k, v in data.items() if k not in ("id", "members")}
        props.setdefault("displayName", gid)
        members = [str(m).lower() for m in data.get("members", [])]
        group = Group(gid, props, members)
        tenant.groups[gid] = group
        return group

    # -- tokens and links --------------------------------------------------

    def issue_token(self, tenant, client_id, kind, resource):
        self.token_serial += 1
        lifetime = self.knobs["token_lifetime"]
        access = secrets.token_urlsafe(48)
        self.tokens[access] = Token(self.token_serial, tenant.id, client_id,
                                    kind, resource, time.time() + lifetime)
        if len(self.tokens) > 20000:
            now = time.time()
            for key in [k for k, t in self.tokens.items() if t.expires < now]:
                del self.tokens[key]
        return access, lifetime

    def check_token(self, access):
        """(Token, None) or (None, reason) with reason one of empty,
        invalid, expired."""
        if not access:
            return None, "empty"
        token = self.tokens.get(access)
        if token is None or token.serial <= self.revoke_cut:
            return None, "invalid"
        if time.time() >= token.expires:
            return None, "expired"
        if token.tenant_id not in self.tenants:
            return None, "invalid"
        return token, None

    def new_link(self, kind, tenant_id, data):
        token = secrets.token_urlsafe(32)
        self.links[token] = Link(kind, tenant_id, self.link_gen, data)
        while len(self.links) > LINKS_MAX:
            self.links.popitem(last=False)
        return token

    def get_link(self, token, kind, tenant_id):
        link = self.links.get(token)
        if link is None or link.kind != kind or link.tenant_id != tenant_id:
            return None
        return link

    def link_expired(self, link):
        return (self.knobs["expire_delta_tokens"] is not None
                and link.gen <= self.expire_cut)

    # -- requests ------------------------------------------------------------

    def handle(self, req):
        """Answer req; returns (Response, encoded body)."""
        early, slot = None, None
        if req.service != "admin":
            with self.lock:
                latency = self.knobs["latency_ms"]
                if req.service == "exchange":
                    early, slot = exo_enter(self, req)
            if latency and early is None:
                time.sleep(latency / 1000.0)
        try:
            return self.answer(req, early)
        finally:
            if slot is not None:
                with self.lock:
                    slot.exo_in_progress -= 1

    def answer(self, req, early=None):
        with self.lock:
            try:
                resp = early if early is not None else dispatch(req)
                resp = response_fault(req, resp)
            except Reply as reply:
                resp = reply.response
            except Exception:      # a bug here must not kill the listener
                traceback.print_exc(file=sys.stderr)
                resp = Response(500, {"error": {
                    "code": "InternalServerError",
                    "message": "fakecloud: unhandled exception"}})
            if req.service == "graph":
                resp.headers.setdefault("request-id", req.request_id)
                resp.headers.setdefault("client-request-id",
                                        req.client_request_id)
            if req.service == "graph" and req.tenant is not None:
                limits_headers(req, resp)
                kind = graph_request_kind(req.method, req.path)
                if kind is not None:
                    count_stat(self, req.tenant, kind)
            payload = resp.encode()
            self.log_seq += 1
            now = time.time()
            tenant = req.tenant.id if req.tenant is not None else None
            entry = {
                "seq": self.log_seq, "time": iso_ms(now),
                "service": req.service, "method": req.method,
                "path": req.path, "query": req.query, "status": resp.status,
                "tenant": tenant, "client_id": req.client_id}
            if self.record_raw and req.service != "admin":
                entry["headers"] = [[k, v] for k, v in req.headers.items()]
                entry["body"] = req.body.decode("utf-8", "replace")
            self.log.append(entry)
        if self.verbose:
            query = "?" + req.query if req.query else ""
            print(f"fakecloud: {req.service} {req.method} {req.path}{query}"
                  f" -> {resp.status}", file=sys.stderr, flush=True)
        return resp, payload


# --------------------------------------------------------------------------
# login: POST /{tenant}/oauth2/v2.0/token (client credentials)
# --------------------------------------------------------------------------

def parse_scope(req, scope):
    """Returns (kind, resource) for a valid client-credentials scope."""
    resources = set()
    for item in scope.split():
        if not item.lower().endswith("/.default"):
            aad_fail(req, 400, "invalid_scope", 1002012,
                     f"The provided value for scope {item} is not valid. "
                     f"Client credential flows must have a scope value with "
                     f"/.default suffixed to the resource identifier "
                     f"(application ID URI).")
        resource = item[:-len("/.default")].lower()
        if resource not in RESOURCES:
            aad_fail(req, 400, "invalid_scope", 70011,
                     f"The provided value for the input parameter 'scope' is "
                     f"not valid. The scope {scope} is not valid.")
        resources.add(resource)
    if not resources:
        aad_fail(req, 400, "invalid_request", 900144,
                 "The request body must contain the following parameter: "
                 "'scope'.")
    if len(resources) > 1:
        aad_fail(req, 400, "invalid_scope", 700022,
                 f"The provided value for the input parameter scope is not "
                 f"valid because it contains more than one resource. Scope "
                 f"{scope} is not valid.")
    resource = resources.pop()
    return RESOURCES[resource], resource


def assertion_time(ts):
    return (datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%S.0000000Z"))


def verify_assertion(req, app, assertion, token_url):
    """Checks a client assertion JWT as the identity platform does
    (certificate-credentials.md); raises Reply on any failure."""
    def malformed():
        aad_fail(req, 400, "invalid_request", 50027,
                 "JWT token is invalid or malformed.")

    parts = assertion.split(".")
    if len(parts) != 3:
        malformed()
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except ValueError:
        malformed()
    if not isinstance(header, dict) or not isinstance(claims, dict):
        malformed()

    alg = header.get("alg")
    if alg == "RS256":
        thumb_name, digest = "x5t", "sha1"
    elif alg == "PS256":
        thumb_name, digest = "x5t#S256", "sha256"
    else:
        malformed()
    try:
        thumb = b64url_decode(header.get(thumb_name))
    except ValueError:
        malformed()
    thumb_hex = thumb.hex().upper()
    entry = next((c for c in app.certs if c[digest] == thumb), None)
    portal = (f"Please visit the Azure Portal, Graph Explorer or directly "
              f"use MS Graph to see configured keys for app Id "
              f"'{app.client_id}'.")
    if entry is None:
        aad_fail(req, 401, "invalid_client", 700027,
                 f"Client assertion contains an invalid signature. [Reason -"
                 f" The key was not found., Thumbprint of key used by client:"
                 f" '{thumb_hex}', {portal}]")
    cert = entry["cert"]
    public_key = cert.public_key()
    signed = (parts[0] + "." + parts[1]).encode("ascii")
    try:
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise InvalidSignature()
        if alg == "RS256":
            public_key.verify(signature, signed, padding.PKCS1v15(),
                              hashes.SHA256())
        else:
            public_key.verify(signature, signed,
                              padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                          salt_length=32),
                              hashes.SHA256())
    except InvalidSignature:
        start = cert.not_valid_before.strftime("%m/%d/%Y %H:%M:%S")
        end = cert.not_valid_after.strftime("%m/%d/%Y %H:%M:%S")
        aad_fail(req, 401, "invalid_client", 700027,
                 f"Client assertion failed signature validation. [Reason - "
                 f"Key was found, but use of the key to verify the signature "
                 f"failed., Thumbprint of key used by client: '{thumb_hex}', "
                 f"Found key 'Start={start}, End={end}', {portal}]")

    aud = claims.get("aud")
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    if not isinstance(aud, str) or aud.lower() != token_url.lower():
        aad_fail(req, 401, "invalid_client", 50012,
                 "Client assertion audience claim does not match Realm "
                 "issuer.")
    iss, sub = claims.get("iss"), claims.get("sub")
    if not isinstance(iss, str) or not isinstance(sub, str) or \
            iss.lower() != sub.lower():
        aad_fail(req, 401, "invalid_client", 50048,
                 "Subject mismatches Issuer claim in the client assertion.")
    if iss.lower() != app.client_id:
        aad_fail(req, 401, "invalid_client", 700021,
                 "Client assertion application identifier doesn't match "
                 "'client_id' parameter. Review the documentation at "
                 "https://learn.microsoft.com/entra/identity-platform/"
                 "certificate-credentials .")
    if not isinstance(claims.get("jti"), str) or not claims["jti"]:
        malformed()
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if not isinstance(exp, (int, float)) or isinstance(exp, bool) or \
            not isinstance(nbf, (int, float)) or isinstance(nbf, bool):
        malformed()
    now = time.time()
    if exp <= now - CLOCK_SKEW or nbf > now + CLOCK_SKEW or \
            exp > now + ASSERTION_MAX_LIFETIME:
        aad_fail(req, 401, "invalid_client", 700024,
                 f"Client assertion is not within its valid time range. "
                 f"Current time: {assertion_time(now)}, assertion valid from "
                 f"{assertion_time(nbf)}, expiry time of assertion "
                 f"{assertion_time(exp)}. Review the documentation at "
                 f"https://learn.microsoft.com/entra/identity-platform/"
                 f"certificate-credentials .")


@route("login", "POST", r"^/([^/]+)/oauth2/v2\.0/token$")
def login_token(req):
    cloud = req.cloud
    segment = req.group(1)
    tenant = cloud.find_tenant(segment)
    if tenant is None:
        aad_fail(req, 400, "invalid_request", 90002,
                 f"Tenant '{segment}' not found. Check to make sure you have "
                 f"the correct tenant ID and are signing into the correct "
                 f"cloud. Check with your subscription administrator, this "
                 f"may happen if there are no active subscriptions for the "
                 f"tenant.")
    req.tenant = tenant
    form = req.form()

    # RFC 6749 2.3.1: the secret may come as HTTP Basic instead.
    basic_id = basic_secret = None
    auth = req.headers.get("Authorization") or ""
    if auth[:6].lower() == "basic ":
        try:
            pair = base64.b64decode(auth[6:].strip()).decode("utf-8")
            basic_id, _, basic_secret = pair.partition(":")
            basic_id = urllib.parse.unquote_plus(basic_id)
            basic_secret = urllib.parse.unquote_plus(basic_secret)
        except (ValueError, UnicodeDecodeError):
            pass

    def missing(name):
        aad_fail(req, 400, "invalid_request", 900144,
                 f"The request body must contain the following parameter: "
                 f"'{name}'.")

    client_id = (form.get("client_id") or basic_id or "").strip().lower()
    req.client_id = client_id or None
    grant = form.get("grant_type")
    if not grant:
        missing("grant_type")
    if grant != "client_credentials":
        aad_fail(req, 400, "unsupported_grant_type", 70003,
                 f"The app requested an unsupported grant type '{grant}'.")
    if not client_id:
        missing("client_id")
    if not form.get("scope"):
        missing("scope")
    app = tenant.apps.get(client_id)
    if app is None:
        aad_fail(req, 400, "unauthorized_client", 700016,
                 f"Application with identifier '{client_id}' was not found "
                 f"in the directory '{tenant.domain}'. This can happen if the "
                 f"application has not been installed by the administrator "
                 f"of the tenant or consented to by any user in the tenant. "
                 f"You may have sent your authentication request to the "
                 f"wrong tenant.")
    kind, resource = parse_scope(req, form["scope"])

    assertion = form.get("client_assertion")
    secret = form.get("client_secret", basic_secret)
    if assertion is not None:
        if form.get("client_assertion_type") != JWT_BEARER:
            aad_fail(req, 400, "invalid_request", 90014,
                     "The required field 'client_assertion_type' is missing "
                     "from the credential. Ensure that you have all the "
                     "necessary parameters for the login request.")
        # aud must be the token URL the client actually called.
        token_url = (f"https://{req.host}/{req.match.group(1)}"
                     f"/oauth2/v2.0/token")
        verify_assertion(req, app, assertion, token_url)
    elif secret is not None:
        if secret not in app.secrets:
            aad_fail(req, 401, "invalid_client", 7000215,
                     f"Invalid client secret provided. Ensure the secret "
                     f"being sent in the request is the client secret value, "
                     f"not the client secret ID, for a secret added to app "
                     f"'{client_id}'.")
    else:
        aad_fail(req, 401, "invalid_client", 7000218,
                 "The request body must contain the following parameter: "
                 "'client_assertion' or 'client_secret'.")

    access, lifetime = cloud.issue_token(tenant, client_id, kind, resource)
    return Response(200, {"token_type": "Bearer", "expires_in": lifetime,
                          "ext_expires_in": lifetime,
                          "access_token": access}, AAD_HEADERS)


# --------------------------------------------------------------------------
# graph
# --------------------------------------------------------------------------

def bearer(req):
    auth = (req.headers.get("Authorization") or "").strip()
    scheme, _, value = auth.partition(" ")
    if scheme.lower() != "bearer":
        return auth and "\0"       # non-empty but not a bearer token
    return value.strip()


def graph_authenticate(req):
    """Every Graph request needs a live Graph token; it names the tenant."""
    token, reason = req.cloud.check_token(bearer(req))
    if token is not None and token.kind != "graph":
        reason = "audience"
    message = {
        "empty": "Access token is empty.",
        "expired": "Access token has expired or is not yet valid.",
        "audience": "Access token validation failure. Invalid audience.",
        "invalid": "Access token validation failure.",
    }.get(reason)
    if message is not None:
        graph_fail(req, 401, "InvalidAuthenticationToken", message,
                   {"WWW-Authenticate": GRAPH_WWW_AUTH})
    req.token = token
    req.tenant = req.cloud.tenants[token.tenant_id]
    req.client_id = token.client_id


def graph_ok(req, body, headers=None):
    resp = Response(200, body, headers)
    resp.headers.setdefault("Content-Type", GRAPH_JSON)
    resp.headers.setdefault("OData-Version", "4.0")
    resp.headers.setdefault("Cache-Control", "no-cache")
    return resp


def check_params(req, allowed):
    for name in req.params:
        if name not in allowed:
            graph_fail(req, 400, "Request_BadRequest",
                       f"Unrecognized query argument specified: '{name}'.")


def parse_user_select(req, text):
    """$select list -> canonical property names (id left out: it always
    comes).  Unknown names answer 400 like the service."""
    known = {p.lower(): p for p in USER_PROPERTIES}
    known.update({p.lower(): p for p in req.tenant.extra_props})
    out = []
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        canon = known.get(name.lower())
        if canon is None and name.lower() != "id":
            graph_fail(req, 400, "BadRequest",
                       f"Parsing OData Select and Expand failed: Could not "
                       f"find a property named '{name}' on type "
                       f"'microsoft.graph.user'.")
        if canon is not None and canon not in out:
            out.append(canon)
    return out


FILTER_ID = re.compile(r"^\s*\(?\s*id\s+eq\s+'([^']*)'\s*\)?\s*$", re.I)


def parse_id_filter(req, text):
    """users/delta accepts only id eq '...' terms joined by or, up to 50."""
    ids = []
    for term in re.split(r"\s+or\s+", text.strip(), flags=re.I):
        match = FILTER_ID.match(term)
        if match is None:
            graph_fail(req, 400, "Request_UnsupportedQuery",
                       "Unsupported query.")
        ids.append(match.group(1).lower())
    if not ids or len(ids) > 50:
        graph_fail(req, 400, "Request_UnsupportedQuery",
                   "Unsupported query.")
    return frozenset(ids)


def select_suffix(select):
    """The "(a,b)" of an @odata.context; id alone when nothing else."""
    return "(" + (",".join(select) or "id") + ")"


def prefers_minimal(req):
    prefer = ",".join(req.headers.get_all("Prefer") or [])
    return any(p.strip().lower() == "return=minimal"
               for p in prefer.split(","))


def delta_url(cloud, select, filter_ids, token_name, token):
    """A users/delta URL.  The Location of a 410 carries an empty
    $deltatoken ("same as the initial query", delta-query-overview.md);
    its $select/$filter keep what the expired link tracked."""
    query = []
    if select is not None:
        query.append("$select=" + ",".join(select))
    if filter_ids:
        terms = " or ".join(f"id eq '{i}'" for i in sorted(filter_ids))
        query.append("$filter=" + urllib.parse.quote(terms, safe="'"))
    query.append(f"{token_name}={token}")
    return f"{cloud.graph_url}/v1.0/users/delta?" + "&".join(query)


def delta_token_expired(req, link):
    cloud = req.cloud
    mode = cloud.knobs["expire_delta_tokens"]
    if mode == "gone":
        data = link.data
        if isinstance(data, tuple):            # a skiptoken: (round, page)
            select, filter_ids = data[0].select, data[0].filter_ids
        else:
            select, filter_ids = data["select"], data["filter"]
        location = delta_url(cloud, select, filter_ids, "$deltatoken", "")
        graph_fail(req, 410, "resyncRequired",
                   "The delta token is no longer valid, and the app must "
                   "reset the sync state.", {"Location": location})
    if mode == "resyncRequired":
        graph_fail(req, 410, "resyncRequired",
                   "The delta token is no longer valid, and the app must "
                   "reset the sync state.")
    sync_state_not_found(req)


def sync_state_not_found(req):
    # Code and text from errors.md ("syncStateNotFound"); status 400 per
    # MICROSOFT.md for directory objects.
    graph_fail(req, 400, "syncStateNotFound",
               "The sync state generation is not found. The delta token is "
               "expired and data must be synchronized again.")


def delta_round_ids(tenant, select, filter_ids, since):
    """Ids in a round: everything (tombstones too) for an initial round;
    since a deltaLink, users created, deleted or restored after it or with
    a *selected* property changed after it."""
    out = []
    for user in tenant.users.values():
        if filter_ids is not None and user.id not in filter_ids:
            continue
        if since is None:
            out.append(user.id)
        elif (user.created_seq > since or user.restored_seq > since
              or (user.deleted and user.deleted_seq > since)
              or any(user.prop_seq.get(p, 0) > since for p in select)):
            out.append(user.id)
    return out


def delta_pages(cloud, ids):
    size = cloud.knobs["delta_page_size"]
    pages = [ids[i:i + size] for i in range(0, len(ids), size)] or [[]]
    dups = cloud.knobs["delta_duplicates"]
    if dups and ids:
        # Repeat items on a later page than their first appearance.
        earlier = [i for page in (pages[:-1] if len(pages) > 1 else pages)
                   for i in page]
        picks = cloud.rng.sample(earlier, min(dups, len(earlier)))
        if len(pages) == 1:
            pages.append(picks)
        else:
            pages[-1] = pages[-1] + picks
    return [[] for _ in range(cloud.knobs["delta_empty_pages"])] + pages


def delta_item(tenant, uid, rnd, minimal):
    user = tenant.users.get(uid)
    if user is None or user.deleted:
        reason = "changed" if user is not None and \
            user.deleted == "soft" else "deleted"
        return {"id": uid, "@removed": {"reason": reason}}
    since = rnd.since
    only_changed = (minimal and since is not None
                    and user.created_seq <= since
                    and user.restored_seq <= since)
    item = {}
    for name in rnd.select:
        if name not in user.props:
            continue                  # never set: absent
        if only_changed and user.prop_seq.get(name, 0) <= since:
            continue
        item[name] = user.props[name]
    item["id"] = user.id
    return item


def delta_page(req, rnd, index):
    cloud, tenant = req.cloud, req.tenant
    minimal = prefers_minimal(req)
    context = f"{cloud.graph_url}/v1.0/$metadata#users"
    if "select" in req.params:       # like the fixtures: only when the URL
        context += select_suffix(rnd.select)             # carries $select
    body = {"@odata.context": context}
    if index + 1 < len(rnd.pages):
        token = rnd.next_tokens.get(index + 1)
        if token is None:
            token = cloud.new_link("users-skip", tenant.id, (rnd, index + 1))
            rnd.next_tokens[index + 1] = token
        body["@odata.nextLink"] = (f"{cloud.graph_url}/v1.0/users/delta?"
                                   f"$skiptoken={token}")
    else:
        if rnd.delta_token is None:
            rnd.delta_token = cloud.new_link(
                "users-delta", tenant.id,
                {"select": rnd.select, "filter": rnd.filter_ids,
                 "seq": rnd.seq})
        body["@odata.deltaLink"] = (f"{cloud.graph_url}/v1.0/users/delta?"
                                    f"$deltatoken={rnd.delta_token}")
    body["value"] = [delta_item(tenant, uid, rnd, minimal)
                     for uid in rnd.pages[index]]
    headers = {"Preference-Applied": "return=minimal"} if minimal else None
    return graph_ok(req, body, headers)


@route("graph", "GET", r"^/v1\.0/users/(?:microsoft\.graph\.)?delta/?$")
def users_delta(req):
    cloud, tenant, params = req.cloud, req.tenant, req.params
    check_params(req, {"select", "filter", "deltatoken", "skiptoken", "top",
                       "orderby", "expand"})
    for name in ("top", "orderby", "expand"):
        if name in params:
            # delta-query-overview.md: not supported for users.
            graph_fail(req, 400, "Request_UnsupportedQuery",
                       f"The query parameter '${name}' is not supported "
                       f"with delta queries on users.")

    if "skiptoken" in params:
        if "select" in params or "filter" in params:
            graph_fail(req, 400, "Request_UnsupportedQuery",
                       "Unsupported query.")
        endless = cloud.get_link(params["skiptoken"], "users-endless",
                                 tenant.id)
        if endless is not None:
            return endless_page(req, endless)
        link = cloud.get_link(params["skiptoken"], "users-skip", tenant.id)
        if link is None:
            sync_state_not_found(req)
        if cloud.link_expired(link):
            delta_token_expired(req, link)
        rnd, index = link.data
        return delta_page(req, rnd, index)

    select = (parse_user_select(req, params["select"])
              if "select" in params else None)
    filter_ids = (parse_id_filter(req, params["filter"])
                  if "filter" in params else None)
    since = None
    token = params.get("deltatoken")
    if token == "latest":
        link_token = cloud.new_link(
            "users-delta", tenant.id,
            {"select": DEFAULT_USER_SELECT if select is None else select,
             "filter": filter_ids, "seq": tenant.seq})
        context = f"{cloud.graph_url}/v1.0/$metadata#users"
        if select is not None:
            context += select_suffix(select)
        return graph_ok(req, {
            "@odata.context": context,
            "@odata.deltaLink": (f"{cloud.graph_url}/v1.0/users/delta?"
                                 f"$deltatoken={link_token}"),
            "value": []})
    if token:
        link = cloud.get_link(token, "users-delta", tenant.id)
        if link is None:
            sync_state_not_found(req)
        if cloud.link_expired(link):
            delta_token_expired(req, link)
        since = link.data["seq"]
        # A $select on a deltaLink changes what is tracked from now on.
        if select is None:
            select = link.data["select"]
        if filter_ids is None:
            filter_ids = link.data["filter"]
    if select is None:
        select = DEFAULT_USER_SELECT
    ids = delta_round_ids(tenant, select, filter_ids, since)
    rnd = DeltaRound(select, filter_ids, since, tenant.seq,
                     delta_pages(cloud, ids))
    return delta_page(req, rnd, 0)


def object_view(props, select, oid, odata_type=None):
    """A directory object as a plain GET returns it: @odata.type first when
    in a mixed collection, unset selected properties as null."""
    view = {}
    if odata_type:
        view["@odata.type"] = odata_type
        view["id"] = oid
    for name in select:
        view[name] = props.get(name)
    if not odata_type:
        view["id"] = oid
    return view


def member_view(tenant, kind, oid, select):
    if kind == "user":
        user = tenant.users[oid]
        return object_view(user.props, DEFAULT_USER_SELECT
                           if select is None else select, oid,
                           "#microsoft.graph.user")
    group = tenant.groups[oid]
    return object_view(group.props, DEFAULT_GROUP_SELECT
                       if select is None else select, oid,
                       "#microsoft.graph.group")


@route("graph", "GET", r"^/v1\.0/groups/([^/]+)/transitiveMembers/?$")
def group_transitive_members(req):
    cloud, tenant, params = req.cloud, req.tenant, req.params
    check_params(req, {"select", "top", "skiptoken"})
    gid = req.group(1).lower()
    if "skiptoken" in params:
        link = cloud.get_link(params["skiptoken"], "members", tenant.id)
        if link is None or link.data["group"] != gid:
            graph_fail(req, 400, "Request_BadRequest",
                       "Invalid paging token.")
        state = link.data
    else:
        if gid not in tenant.groups:
            graph_fail(req, 404, "Request_ResourceNotFound",
                       f"Resource '{req.group(1)}' does not exist or one of "
                       f"its queried reference-property objects are not "
                       f"present.")
        top = params.get("top", "100")
        if not top.isdigit() or not 1 <= int(top) <= 999:
            graph_fail(req, 400, "Request_BadRequest",
                       f"Invalid page size specified: '{top}'. Must be "
                       f"between 1 and 999 inclusive.")
        select = None
        if "select" in params:
            select = [s.strip() for s in params["select"].split(",")
                      if s.strip() and s.strip().lower() != "id"]
        state = {"group": gid, "select": select, "top": int(top),
                 "offset": 0, "members": tenant.transitive_members(gid)}
    members = state["members"][state["offset"]:
                               state["offset"] + state["top"]]
    body = {"@odata.context":
            f"{cloud.graph_url}/v1.0/$metadata#directoryObjects"}
    end = state["offset"] + state["top"]
    if end < len(state["members"]):
        token = cloud.new_link("members", tenant.id,
                               dict(state, offset=end))
        body["@odata.nextLink"] = (
            f"{cloud.graph_url}/v1.0/groups/{gid}/transitiveMembers?"
            f"$skiptoken={token}")
    body["value"] = [member_view(tenant, kind, oid, state["select"])
                     for kind, oid in members]
    return graph_ok(req, body)


# --------------------------------------------------------------------------
# graph: users (read, list, update, delete), deleted items, invitations
# --------------------------------------------------------------------------

USER_KEY = r"^/(v1\.0|beta)/users/([^/]+)$"
DELETED_ITEM = r"^/(v1\.0|beta)/directory/deletedItems/([^/]+)"

# PATCH /users/{id}: writable string properties and their maximum lengths
# (user.md, MICROSOFT.md; None = no limit enforced here).
USER_STRING_LIMITS = {
    "givenName": 64, "surname": 64, "displayName": 256, "jobTitle": 128,
    "department": 64, "companyName": 64, "officeLocation": 128,
    "mobilePhone": 64, "streetAddress": 1024, "city": 128, "state": 128,
    "country": 128, "postalCode": 40, "employeeId": 16,
    "employeeType": None, "faxNumber": None, "preferredLanguage": None,
    "usageLocation": None, "mail": None, "mailNickname": 64,
    "userPrincipalName": None,
}
# Read-only on update: the service answers "Property 'x' is read-only and
# cannot be set." (observed for proxyAddresses).
USER_READ_ONLY = {
    "id", "proxyAddresses", "creationType", "externalUserState",
    "externalUserStateChangeDateTime", "createdDateTime", "deletedDateTime",
    "onPremisesSyncEnabled", "onPremisesLastSyncDateTime",
    "onPremisesProvisioningErrors", "onPremisesDistinguishedName",
    "onPremisesDomainName", "onPremisesSamAccountName",
    "onPremisesUserPrincipalName", "securityIdentifier", "assignedPlans",
    "provisionedPlans", "licenseAssignmentStates", "imAddresses",
    "signInSessionsValidFromDateTime", "lastPasswordChangeDateTime",
    "isResourceAccount",
}
EXTENSION_NAMES = [f"extensionAttribute{n}" for n in range(1, 16)]
ADVANCED_HINT = (" is not supported because the required parameters might "
                 "be missing. Try adding $count=true query parameter and "
                 "ConsistencyLevel:eventual header. Refer to "
                 "https://aka.ms/graph-docs/advanced-queries for more "
                 "information")


def not_found_text(key):
    """The observed Request_ResourceNotFound message template."""
    return (f"Resource '{key}' does not exist or one of its queried "
            f"reference-property objects are not present.")


def graph_request_kind(method, path):
    """Which per-tenant counter (GET /admin/tenants/{tid}/stats) a Graph
    request feeds, answered or refused alike; None for none."""
    if method == "GET":
        return "reads"
    if method == "POST":
        if re.match(r"^/(v1\.0|beta)/invitations/?$", path):
            return "invitations"
        if re.match(DELETED_ITEM + r"/(microsoft\.graph\.)?restore$", path):
            return "restores"
    if method == "PATCH" and re.match(USER_KEY, path):
        return "patches"
    if method == "DELETE" and (re.match(USER_KEY, path)
                               or re.match(DELETED_ITEM + "$", path)):
        return "deletes"
    return None


def graph_user(req):
    """The live user named by the URL (id or UPN), after the replication
    and per-user fault checks; 404 like the service otherwise."""
    user = req.tenant.find_user(req.group(2))
    if user is None:
        graph_fail(req, 404, "Request_ResourceNotFound",
                   not_found_text(req.group(2)))
    fault = inject_fault(req, user)
    if fault is not None:
        raise Reply(fault)
    return user


def user_view(req, user, select, version, odata_type=None):
    """A user as GET returns it.  v1.0 documents showInAddressList as "Do
    not use in Microsoft Graph" and answers null for it (observed:
    microsoft-graph-docs#5380, msgraph-sdk-php#109); beta has the value."""
    props = user.props
    if version == "v1.0" and "showInAddressList" in select:
        props = dict(props, showInAddressList=None)
    if "deletedDateTime" in select and user.deleted_at is not None:
        props = dict(props, deletedDateTime=iso_ms(user.deleted_at)[:-5]
                     + "Z")
    return object_view(props, select, user.id, odata_type)


def user_select(req, user, version):
    """$select of the request, else the default set: v1.0 answers the
    documented default properties; beta answers every property the user
    has (beta returns far more by default)."""
    if "select" in req.params:
        return parse_user_select(req, req.params["select"])
    if version == "beta" and user is not None:
        return list(user.props)
    return DEFAULT_USER_SELECT


def graph_no_content():
    return Response(204)


@route("graph", "GET", USER_KEY)
def get_user(req):
    check_params(req, {"select"})
    version = req.group(1)
    user = graph_user(req)
    context = f"{req.cloud.graph_url}/{version}/$metadata#users"
    select = user_select(req, user, version)
    if "select" in req.params:
        context += select_suffix(select)
    body = {"@odata.context": context + "/$entity"}
    body.update(user_view(req, user, select, version))
    return graph_ok(req, body)


# -- PATCH ----------------------------------------------------------------

def invalid_value(req, name):
    graph_fail(req, 400, "Request_BadRequest",
               f"Invalid value specified for property '{name}' of resource "
               f"'User'.")


def conflict_fail(req, prop, owner):
    """400 Request_BadRequest with details ObjectConflict +
    ConflictingObjects (observed: microsoft-graph-docs-contrib#8421; the
    second detail's target "User_<id>" as ADSyncTools documents it)."""
    kind, oid = owner
    text = f"Another object with the same value for property {prop} " \
           f"already exists."
    resp = graph_error(req, 400, "Request_BadRequest", text)
    error = resp.body["error"]
    error["details"] = [
        {"code": "ObjectConflict", "message": text, "target": prop},
        {"code": "ConflictingObjects", "message": text,
         "target": f"{kind}_{oid}"},
    ]
    error["innerError"] = error.pop("innerError")   # keep it last
    raise Reply(resp)


def text_length(value):
    """Length as the directory counts it: UTF-16 code units, so an emoji
    counts 2 (a guess: .NET strings; see README.md)."""
    return len(value.encode("utf-16-le")) // 2


def is_address(value):
    return isinstance(value, str) and re.fullmatch(
        r"[^@\s]+@[^@\s]+\.[^@\s]+", value) is not None


def validate_user_patch(req, user, body, version):
    """Checks a PATCH body as the service does; returns the changes to
    apply (showInAddressList dropped on v1.0)."""
    tenant = req.tenant
    known = {p.lower(): p for p in USER_PROPERTIES + ["id"]}
    changes = {}
    for raw, value in body.items():
        name = known.get(raw.lower())
        if name is None:
            graph_fail(req, 400, "Request_BadRequest",
                       f"Invalid property '{raw}'.")
        if name in USER_READ_ONLY:
            graph_fail(req, 400, "Request_BadRequest",
                       f"Property '{name}' is read-only and cannot be set.")
        if name in USER_STRING_LIMITS:
            limit = USER_STRING_LIMITS[name]
            if value is None:
                if name in ("displayName", "userPrincipalName",
                            "mailNickname"):
                    invalid_value(req, name)        # cannot be cleared
            elif not isinstance(value, str) or \
                    (limit is not None and text_length(value) > limit) or \
                    (name == "displayName" and not value.strip()):
                invalid_value(req, name)
            elif name == "mail" and not is_address(value):
                invalid_value(req, name)
            elif name == "usageLocation" and \
                    not re.fullmatch(r"[A-Za-z]{2}", value):
                invalid_value(req, name)
        elif name in ("businessPhones", "otherMails"):
            if not isinstance(value, list) or \
                    not all(isinstance(v, str) for v in value):
                invalid_value(req, name)
            if name == "businessPhones" and len(value) > 1:
                # user.md: "Only one number can be set for this property."
                invalid_value(req, name)
        elif name == "accountEnabled":
            if not isinstance(value, bool):
                invalid_value(req, name)
        elif name == "userType":
            if value not in ("Member", "Guest"):
                invalid_value(req, name)
        elif name == "showInAddressList":
            if not isinstance(value, bool):
                invalid_value(req, name)
            if version == "v1.0":
                continue          # accepted, not applied (see README)
        elif name == "onPremisesExtensionAttributes":
            if not isinstance(value, dict):
                invalid_value(req, name)
            for key, item in value.items():
                if key not in EXTENSION_NAMES:
                    graph_fail(req, 400, "Request_BadRequest",
                               f"Invalid property '{key}'.")
                if item is not None and (not isinstance(item, str)
                                         or text_length(item) > 1024):
                    invalid_value(req, name)
        changes[name] = value

    if "userPrincipalName" in changes:
        upn = changes["userPrincipalName"]
        local, _, domain = upn.rpartition("@")
        if not local or domain.lower() != tenant.domain.lower():
            resp = graph_error(req, 400, "Request_BadRequest",
                               "Property userPrincipalName is invalid.")
            error = resp.body["error"]
            error["details"] = [{"target": "userPrincipalName",
                                 "code": "InvalidValue"}]
            error["innerError"] = error.pop("innerError")
            raise Reply(resp)
        for other in tenant.users.values():
            if other.id != user.id and other.deleted != "hard" and \
                    (other.props.get("userPrincipalName") or "").lower() \
                    == upn.lower():
                conflict_fail(req, "userPrincipalName", ("User", other.id))
    if changes.get("mail"):
        owner = tenant.address_owner(changes["mail"], exclude=user.id)
        if owner is not None:
            conflict_fail(req, "proxyAddresses", owner)
    if "mail" in changes:
        # The primary SMTP address follows mail (guess: the old primary is
        # dropped, secondary addresses kept).
        old = [p for p in user.props.get("proxyAddresses") or []
               if isinstance(p, str) and not p.startswith("SMTP:")]
        new = changes["mail"]
        if new:
            old = [p for p in old if p.lower() != "smtp:" + new.lower()]
            changes["proxyAddresses"] = [f"SMTP:{new}"] + old
        elif "proxyAddresses" in user.props:
            changes["proxyAddresses"] = old
    return changes


@route("graph", "PATCH", USER_KEY)
def patch_user(req):
    version = req.group(1)
    user = graph_user(req)
    body = req.json_body()
    if not isinstance(body, dict):
        raise Reply(bad_body(req))
    changes = validate_user_patch(req, user, body, version)
    req.tenant.patch_user(user, changes)
    return graph_no_content()


@route("graph", "DELETE", USER_KEY)
def delete_user(req):
    user = graph_user(req)
    req.tenant.delete_user(user, hard=False)
    return graph_no_content()


# -- GET /users: $filter, $select, $top, $count, $orderby, paging ------------

# $filter support on user properties (includes/filter-directory-objects.md):
# "default" works without advanced query parameters, "advanced" needs
# ConsistencyLevel: eventual and $count=true.
FILTER_EQ = {
    "default": ["accountEnabled", "ageGroup", "city", "country",
                "creationType", "department", "displayName", "employeeId",
                "externalUserState", "givenName", "id", "jobTitle", "mail",
                "mailNickname", "state", "surname", "usageLocation",
                "userPrincipalName", "userType"],
    "advanced": ["companyName", "employeeType", "mobilePhone",
                 "officeLocation", "postalCode", "preferredLanguage",
                 "streetAddress", "showInAddressList"],
}
FILTER_STARTSWITH = {
    "default": ["city", "country", "department", "displayName",
                "employeeId", "givenName", "mail", "mailNickname", "state",
                "surname", "usageLocation", "userPrincipalName"],
    "advanced": ["companyName", "employeeType", "mobilePhone",
                 "officeLocation", "postalCode", "preferredLanguage",
                 "streetAddress"],
}
FILTER_COLLECTIONS = ["otherMails", "proxyAddresses", "businessPhones",
                      "imAddresses"]
FILTER_ENDSWITH = ["mail", "otherMails", "userPrincipalName",
                   "proxyAddresses"]
FILTER_BOOLEANS = {"accountEnabled", "showInAddressList"}
OPERATOR_NAMES = {"eq": "Equal", "ne": "NotEqualsMatch",
                  "gt": "GreaterThan", "ge": "GreaterThanEquals",
                  "lt": "LessThan", "le": "LessThanEquals"}

FILTER_TOKEN = re.compile(r"""\s*(?:
    (?P<str>'(?:[^']|'')*')
  | (?P<punct>[(),:])
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<word>[A-Za-z_$][A-Za-z0-9_./$]*)
  )""", re.X)


class FilterError(Exception):
    """status, code, message of the answer to give."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def unsupported(message):
    return FilterError(400, "Request_UnsupportedQuery", message)


class FilterParser:
    """OData $filter on users, the subset galbridge and its tests need:
    eq/ne with string/bool/null literals ('' doubles a quote), startswith,
    endswith, contains (refused like the service), any() lambdas on string
    collections, and/or/not, parentheses.  parse() returns a tree and
    whether it needs advanced query parameters; the tree is checked as
    the service checks it (unknown property, operator not supported by
    default, incompatible types)."""

    def __init__(self, text):
        self.text = text
        self.tokens = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            match = FILTER_TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                raise FilterError(400, "BadRequest",
                                  f"Invalid filter clause: syntax error at "
                                  f"position {pos} in '{self.text}'.")
            kind = match.lastgroup
            value = match.group(kind)
            if kind == "str":
                value = value[1:-1].replace("''", "'")
            elif kind == "num":
                value = float(value) if "." in value else int(value)
            self.tokens.append((kind, value, match.start(kind)))
            pos = match.end()
        self.i = 0
        self.advanced = []        # operators/properties needing AQP

    def syntax(self):
        pos = self.tokens[self.i][2] if self.i < len(self.tokens) \
            else len(self.text)
        return FilterError(400, "BadRequest",
                           f"Invalid filter clause: syntax error at "
                           f"position {pos} in '{self.text}'.")

    def peek(self, kind=None, word=None):
        if self.i >= len(self.tokens):
            return None
        tok = self.tokens[self.i]
        if kind and tok[0] != kind:
            return None
        if word is not None and (tok[0] != "word"
                                 or str(tok[1]).lower() != word):
            return None
        return tok

    def take(self, kind=None, word=None):
        tok = self.peek(kind, word)
        if tok is None:
            raise self.syntax()
        self.i += 1
        return tok

    def parse(self):
        if not self.tokens:
            raise self.syntax()
        tree = self.or_expr()
        if self.i != len(self.tokens):
            raise self.syntax()
        return tree

    def or_expr(self):
        node = self.and_expr()
        while self.peek("word", "or"):
            self.i += 1
            node = ("or", node, self.and_expr())
        return node

    def and_expr(self):
        node = self.unary()
        while self.peek("word", "and"):
            self.i += 1
            node = ("and", node, self.unary())
        return node

    def unary(self):
        if self.peek("word", "not"):
            self.i += 1
            self.advanced.append(("operator", "not"))
            return ("not", self.unary())
        if self.peek("punct") and self.peek()[1] == "(":
            self.i += 1
            node = self.or_expr()
            if self.take("punct")[1] != ")":
                raise self.syntax()
            return node
        return self.primary(None)

    def literal(self):
        tok = self.take()
        if tok[0] == "str":
            return tok[1]
        if tok[0] == "num":
            return tok[1]
        if tok[0] == "word" and tok[1].lower() in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[
                tok[1].lower()]
        raise self.syntax()

    def primary(self, var):
        """A comparison or function call; var is the lambda variable when
        inside any(), whose operand is then that variable."""
        tok = self.take("word")
        name = tok[1]
        low = name.lower()
        if self.peek("punct") and self.peek()[1] == "(":
            if low in ("startswith", "endswith", "contains"):
                self.i += 1
                operand = self.take("word")[1]
                if self.take("punct")[1] != ",":
                    raise self.syntax()
                value = self.literal()
                if self.take("punct")[1] != ")":
                    raise self.syntax()
                prop = self.operand(operand, var)
                return self.function(low, prop, value, var)
            if low.endswith("/any"):
                prop = self.property(name[:-4])
                if prop not in FILTER_COLLECTIONS:
                    raise unsupported(
                        f"Unsupported or invalid query filter clause "
                        f"specified for property '{prop}' of resource "
                        f"'User'.")
                self.i += 1
                lvar = self.take("word")[1]
                if self.take("punct")[1] != ":":
                    raise self.syntax()
                inner = self.primary(lvar)
                if self.take("punct")[1] != ")":
                    raise self.syntax()
                return ("any", prop, inner)
            raise unsupported("Unsupported query.")
        op = self.take("word")[1].lower()
        if op not in OPERATOR_NAMES:
            raise self.syntax()
        value = self.literal()
        prop = self.operand(name, var)
        return self.comparison(prop, op, value, var)

    def operand(self, name, var):
        if var is not None:
            if name != var:
                raise self.syntax()
            return None                   # the lambda variable
        return self.property(name)

    @staticmethod
    def property(name):
        known = {p.lower(): p for p in
                 FILTER_EQ["default"] + FILTER_EQ["advanced"]
                 + FILTER_STARTSWITH["advanced"] + FILTER_COLLECTIONS}
        low = name.lower()
        if low.startswith("onpremisesextensionattributes/"):
            leaf = name.split("/", 1)[1]
            canon = {e.lower(): e for e in EXTENSION_NAMES}.get(leaf.lower())
            if canon is None:
                raise unsupported(f"Property '{leaf}' does not exist as a "
                                  f"declared property or extension "
                                  f"property.")
            return "onPremisesExtensionAttributes/" + canon
        if low in known:
            return known[low]
        if low in {p.lower() for p in USER_PROPERTIES}:
            raise unsupported(f"Unsupported or invalid query filter clause "
                              f"specified for property '{name}' of "
                              f"resource 'User'.")
        raise unsupported(f"Property '{name.split('/')[-1]}' does not exist "
                          f"as a declared property or extension property.")

    def comparison(self, prop, op, value, var):
        if op not in ("eq", "ne"):
            raise unsupported(f"Unsupported property filter clause "
                              f"operator '{OPERATOR_NAMES[op]}'.")
        if op == "ne":
            self.advanced.append(("ne", prop))
        if prop is not None:
            if prop in FILTER_COLLECTIONS:
                raise unsupported(f"Unsupported or invalid query filter "
                                  f"clause specified for property '{prop}' "
                                  f"of resource 'User'.")
            if prop.startswith("onPremisesExtensionAttributes/"):
                self.advanced.append(("extension", prop))
            elif prop in FILTER_EQ["advanced"]:
                self.advanced.append(("property", prop))
            elif value is None:
                self.advanced.append(("null", prop))
            self.check_type(prop, value, op)
        elif not isinstance(value, str):
            self.check_type("", value, op)
        return ("cmp", prop, op, value)

    def function(self, name, prop, value, var):
        label = {"startswith": "startsWith", "endswith": "endsWith",
                 "contains": "Contains"}[name]
        if name == "contains":
            raise unsupported("Unsupported property filter clause operator "
                              "'Contains'.")
        if not isinstance(value, str):
            raise FilterError(400, "BadRequest",
                              f"A binary operator with incompatible types "
                              f"was detected. Found operand types "
                              f"'Edm.String' and '{edm_type(value)}' for "
                              f"operator kind '{label}'.")
        target = prop
        if prop is None:
            target = None
        elif name == "startswith" and prop in FILTER_STARTSWITH["advanced"]:
            self.advanced.append(("property", prop))
        elif name == "startswith" and \
                prop not in FILTER_STARTSWITH["default"]:
            raise unsupported(f"Unsupported or invalid query filter clause "
                              f"specified for property '{prop}' of "
                              f"resource 'User'.")
        if name == "endswith":
            if prop is not None and prop not in FILTER_ENDSWITH:
                raise unsupported(f"Unsupported or invalid query filter "
                                  f"clause specified for property '{prop}' "
                                  f"of resource 'User'.")
            self.advanced.append(("operator", "endsWith"))
        return ("fn", name, target, value)

    @staticmethod
    def check_type(prop, value, op):
        want_bool = prop in FILTER_BOOLEANS
        if value is None:
            return
        if isinstance(value, bool) != want_bool or \
                (not want_bool and not isinstance(value, str)):
            found = edm_type(value)
            expected = "Edm.Boolean" if want_bool else "Edm.String"
            raise FilterError(400, "BadRequest",
                              f"A binary operator with incompatible types "
                              f"was detected. Found operand types "
                              f"'{expected}' and '{found}' for operator "
                              f"kind '{OPERATOR_NAMES[op]}'.")


def edm_type(value):
    if isinstance(value, bool):
        return "Edm.Boolean"
    if isinstance(value, int):
        return "Edm.Int32"
    if isinstance(value, float):
        return "Edm.Double"
    return "Edm.String"


def advanced_refusal(reason):
    """The answer when a filter needs ConsistencyLevel: eventual and
    $count=true but lacks them."""
    kind, what = reason
    if kind == "extension":
        # Observed (msgraph-sdk-php#329) for extensionAttributeN without
        # the advanced query parameters.
        leaf = what.split("/")[-1]
        return unsupported(f"Property '{leaf}' does not exist as a declared "
                           f"property or extension property.")
    if kind == "ne":
        # Observed (microsoft-graph-docs-contrib#3042, #1726).
        return unsupported("Unsupported property filter clause operator "
                           "'NotEqualsMatch'.")
    if kind == "operator":
        # aad-advanced-queries.md, "Error handling" (endsWith example).
        return unsupported(f"Operator '{what}'" + ADVANCED_HINT)
    return unsupported(f"Unsupported or invalid query filter clause "
                       f"specified for property '{what}' of resource "
                       f"'User'.")


def fold(value):
    return value.casefold() if isinstance(value, str) else value


def prop_value(user, prop):
    if prop == "id":
        return user.id
    if prop.startswith("onPremisesExtensionAttributes/"):
        ext = user.props.get("onPremisesExtensionAttributes") or {}
        return ext.get(prop.split("/", 1)[1])
    return user.props.get(prop)


def filter_match(node, user, current=None):
    kind = node[0]
    if kind == "or":
        return filter_match(node[1], user, current) or \
            filter_match(node[2], user, current)
    if kind == "and":
        return filter_match(node[1], user, current) and \
            filter_match(node[2], user, current)
    if kind == "not":
        return not filter_match(node[1], user, current)
    if kind == "any":
        values = user.props.get(node[1]) or []
        return any(filter_match(node[2], user, v) for v in values)
    if kind == "cmp":
        _, prop, op, value = node
        actual = current if prop is None else prop_value(user, prop)
        equal = fold(actual) == fold(value)
        return equal if op == "eq" else not equal
    _, name, prop, value = node
    actual = current if prop is None else prop_value(user, prop)
    if not isinstance(actual, str):
        return False
    actual, value = actual.casefold(), value.casefold()
    return actual.startswith(value) if name == "startswith" \
        else actual.endswith(value)


INDEXED_FILTER_PROPS = ("mail", "userPrincipalName")


def indexed_clause(tenant, node):
    """Users an indexed clause can match (a set of ids), or None when the
    clause is not one the index answers: `prop eq 'v'` on an indexed
    property, an address in otherMails/proxyAddresses any(x: x eq 'v'),
    an `or` of such clauses, an `and` with one."""
    if node is None:
        return None
    if node[0] == "or":
        left = indexed_clause(tenant, node[1])
        right = indexed_clause(tenant, node[2])
        return None if left is None or right is None else left | right
    if node[0] == "and":
        left = indexed_clause(tenant, node[1])
        return left if left is not None else indexed_clause(tenant, node[2])
    if node[0] == "cmp" and node[2] == "eq" and isinstance(node[3], str) \
            and node[1] is not None and \
            (node[1] in INDEXED_FILTER_PROPS or
             node[1].startswith("onPremisesExtensionAttributes/")):
        return {u.id for u in tenant.indexed(node[1], node[3])}
    if node[0] == "any" and node[1] in ("otherMails", "proxyAddresses") and \
            node[2][0] == "cmp" and node[2][2] == "eq" and \
            isinstance(node[2][3], str):
        value = node[2][3]
        if node[1] == "proxyAddresses":
            if value[:5].lower() != "smtp:":
                return None
            value = value[5:]
        return {u.id for u in tenant.indexed("@", value)}
    return None


def filter_candidates(tenant, tree):
    """The users a filter can match: those the index names when it can
    answer the filter (see indexed_clause), else every user.
    filter_match still decides."""
    ids = indexed_clause(tenant, tree)
    if ids is None:
        return list(tenant.users.values())
    return sorted((tenant.users[i] for i in ids if i in tenant.users),
                  key=lambda u: u.created_seq)


def advanced_params(req):
    level = (req.headers.get("ConsistencyLevel") or "").strip().lower()
    count = req.params.get("count", "").strip().lower() == "true"
    return level == "eventual", count


def parse_top(req):
    top = req.params.get("top", "100")
    if not top.isdigit() or not 1 <= int(top) <= 999:
        graph_fail(req, 400, "Request_BadRequest",
                   f"Invalid page size specified: '{top}'. Must be between "
                   f"1 and 999 inclusive.")
    return int(top)


def parse_orderby(req, advanced):
    """$orderby on displayName or userPrincipalName (default support);
    with $filter it needs the advanced query parameters."""
    text = req.params.get("orderby")
    if text is None:
        return None
    match = re.fullmatch(r"\s*(displayName|userPrincipalName)"
                         r"(?:\s+(asc|desc))?\s*", text, re.I)
    if match is None:
        graph_fail(req, 400, "Request_UnsupportedQuery",
                   "Sorting not supported for current query.")
    if "filter" in req.params and not advanced:
        graph_fail(req, 400, "Request_UnsupportedQuery",
                   "Sorting not supported for current query.")
    prop = {"displayname": "displayName",
            "userprincipalname": "userPrincipalName"}[match.group(1).lower()]
    return prop, (match.group(2) or "asc").lower() == "desc"


def list_page(req, kind, state, url_path):
    """One page of a listed collection (ids fixed at the first page):
    state = {"ids", "select", "top", "offset", "count", "version",
    "context", "odata_type"}."""
    cloud, tenant = req.cloud, req.tenant
    ids = state["ids"]
    end = state["offset"] + state["top"]
    body = {"@odata.context": state["context"]}
    if state["count"] is not None:
        body["@odata.count"] = state["count"]
    if end < len(ids):
        token = cloud.new_link(kind, tenant.id, dict(state, offset=end))
        body["@odata.nextLink"] = (f"{cloud.graph_url}/{state['version']}"
                                   f"{url_path}?$skiptoken={token}")
    value = []
    for uid in ids[state["offset"]:end]:
        user = tenant.users.get(uid)
        if user is None:
            continue
        value.append(user_view(req, user, state["select"]
                               or list(user.props), state["version"],
                               state["odata_type"]))
    body["value"] = value
    return graph_ok(req, body)


@route("graph", "GET", r"^/(v1\.0|beta)/users/?$")
def list_users(req):
    cloud, tenant, params = req.cloud, req.tenant, req.params
    version = req.group(1)
    check_params(req, {"select", "filter", "top", "count", "skiptoken",
                       "orderby"})
    if "skiptoken" in params:
        link = cloud.get_link(params["skiptoken"], "users-list", tenant.id)
        if link is None:
            graph_fail(req, 400, "Request_BadRequest",
                       "Invalid paging token.")
        return list_page(req, "users-list", link.data, "/users")
    eventual, count = advanced_params(req)
    advanced = eventual and count
    top = parse_top(req)
    select = None
    context = f"{cloud.graph_url}/{version}/$metadata#users"
    if "select" in params:
        select = parse_user_select(req, params["select"])
        context += select_suffix(select)
    elif version == "v1.0":
        select = DEFAULT_USER_SELECT
    tree = None
    if "filter" in params:
        try:
            parser = FilterParser(params["filter"])
            tree = parser.parse()
            if parser.advanced and not advanced:
                raise advanced_refusal(parser.advanced[0])
        except FilterError as exc:
            graph_fail(req, exc.status, exc.code, exc.message)
    order = parse_orderby(req, advanced)
    users = [u for u in filter_candidates(tenant, tree)
             if u.deleted is None and (tree is None or filter_match(tree, u))]
    if order is not None:
        prop, desc = order
        users.sort(key=lambda u: (fold(u.props.get(prop)) or ""),
                   reverse=desc)
    # $count=true without ConsistencyLevel is silently ignored
    # (aad-advanced-queries.md, "Error handling").
    state = {"ids": [u.id for u in users], "select": select, "top": top,
             "offset": 0, "count": len(users) if advanced else None,
             "version": version, "context": context, "odata_type": None}
    return list_page(req, "users-list", state, "/users")


# -- deleted items ----------------------------------------------------------

def deleted_user(req):
    user = req.tenant.users.get(req.group(2).lower())
    if user is None or user.deleted != "soft":
        graph_fail(req, 404, "Request_ResourceNotFound",
                   not_found_text(req.group(2)))
    return user


@route("graph", "GET", r"^/(v1\.0|beta)/directory/deletedItems/"
                       r"microsoft\.graph\.user/?$")
def list_deleted_users(req):
    cloud, tenant, params = req.cloud, req.tenant, req.params
    version = req.group(1)
    check_params(req, {"select", "top", "skiptoken", "count"})
    if "skiptoken" in params:
        link = cloud.get_link(params["skiptoken"], "deleted-list", tenant.id)
        if link is None:
            graph_fail(req, 400, "Request_BadRequest",
                       "Invalid paging token.")
        return list_page(req, "deleted-list", link.data,
                         "/directory/deletedItems/microsoft.graph.user")
    eventual, count = advanced_params(req)
    context = f"{cloud.graph_url}/{version}/$metadata#users"
    select = DEFAULT_USER_SELECT
    if "select" in params:
        select = parse_user_select(req, params["select"])
        context += select_suffix(select)
    ids = [u.id for u in tenant.users.values() if u.deleted == "soft"]
    state = {"ids": ids, "select": select, "top": parse_top(req),
             "offset": 0, "count": len(ids) if eventual and count else None,
             "version": version, "context": context, "odata_type": None}
    return list_page(req, "deleted-list", state,
                     "/directory/deletedItems/microsoft.graph.user")


@route("graph", "GET", DELETED_ITEM + "$")
def get_deleted_item(req):
    check_params(req, {"select"})
    version = req.group(1)
    user = deleted_user(req)
    select = DEFAULT_USER_SELECT
    context = f"{req.cloud.graph_url}/{version}/$metadata#directoryObjects"
    if "select" in req.params:
        select = parse_user_select(req, req.params["select"])
        context += select_suffix(select)
    body = {"@odata.context": context + "/$entity"}
    body.update(user_view(req, user, select, version,
                          "#microsoft.graph.user"))
    return graph_ok(req, body)


@route("graph", "POST", DELETED_ITEM + r"/(?:microsoft\.graph\.)?restore$")
def restore_deleted_item(req):
    """200 with the restored user (deleteditems-restore-response.json
    shape, @odata.type #microsoft.graph.user).  An address now held by a
    live object blocks the restore with ObjectConflict unless the body
    says {"autoReconcileProxyConflict": true}, which drops those
    addresses (Restore-MsolUser -AutoReconcileProxyConflicts)."""
    tenant, version = req.tenant, req.group(1)
    user = deleted_user(req)
    body = req.json_body() if req.body.strip() else None
    reconcile = isinstance(body, dict) and \
        body.get("autoReconcileProxyConflict") is True
    taken = {}
    for address in user_addresses(user.props):
        owner = tenant.address_owner(address, exclude=user.id)
        if owner is not None:
            taken[address] = owner
    if taken and not reconcile:
        conflict_fail(req, "proxyAddresses", next(iter(taken.values())))
    tenant.restore_user(user)
    if taken:
        changes = {"proxyAddresses": [
            p for p in user.props.get("proxyAddresses") or []
            if not (isinstance(p, str) and p[:5].lower() == "smtp:"
                    and p[5:].lower() in taken)]}
        if (user.props.get("mail") or "").lower() in taken:
            changes["mail"] = None
        tenant.patch_user(user, changes)
    body = {"@odata.context": f"{req.cloud.graph_url}/{version}/$metadata"
                              f"#directoryObjects/$entity"}
    body.update(user_view(req, user, DEFAULT_USER_SELECT, version,
                          "#microsoft.graph.user"))
    return graph_ok(req, body)


@route("graph", "DELETE", DELETED_ITEM + "$")
def purge_deleted_item(req):
    user = deleted_user(req)
    req.tenant.delete_user(user, hard=True)
    return graph_no_content()


# -- invitations ------------------------------------------------------------

def guest_upn(tenant, address):
    """local_domain#EXT#@tenant domain (user-properties.md); a number is
    appended when taken (guess)."""
    local, _, domain = address.partition("@")
    base = re.sub(r"[^A-Za-z0-9._'-]", "", f"{local}_{domain}") or "guest"
    def taken(upn):
        return any((u.props.get("userPrincipalName") or "").lower()
                   == upn.lower() and u.deleted != "hard"
                   for u in tenant.indexed("userPrincipalName", upn))
    candidate, n = f"{base}#EXT#@{tenant.domain}", 1
    while taken(candidate):
        candidate = f"{base}{n}#EXT#@{tenant.domain}"
        n += 1
    return candidate


def is_invited(user):
    return user.props.get("userType") == "Guest" or \
        user.props.get("creationType") == "Invitation"


@route("graph", "POST", r"^/(v1\.0|beta)/invitations/?$")
def create_invitation(req):
    cloud, tenant = req.cloud, req.tenant
    version = req.group(1)
    body = req.json_body()
    if not isinstance(body, dict):
        raise Reply(bad_body(req))
    address = body.get("invitedUserEmailAddress")
    redirect = body.get("inviteRedirectUrl")
    for name, value in (("invitedUserEmailAddress", address),
                        ("inviteRedirectUrl", redirect)):
        if value is None or value == "":
            graph_fail(req, 400, "BadRequest",
                       f"The request is missing the required property "
                       f"'{name}'.")
    if not is_address(address):
        graph_fail(req, 400, "BadRequest",
                   "The specified email address is not valid.")
    if not isinstance(redirect, str):
        graph_fail(req, 400, "BadRequest",
                   "The specified inviteRedirectUrl is not valid.")
    display = body.get("invitedUserDisplayName")
    user_type = body.get("invitedUserType") or "Guest"
    send = body.get("sendInvitationMessage", False)
    if not isinstance(user_type, str) or \
            user_type.lower() not in ("guest", "member") or \
            not isinstance(send, bool) or \
            (display is not None and not isinstance(display, str)) or \
            (display is not None and text_length(display) > 256):
        graph_fail(req, 400, "BadRequest",
                   "The invitation request has an invalid property value.")
    user_type = user_type.capitalize()

    key = address.lower()
    user = None
    # Only users the index names can hold the address (or have it as
    # their UPN); in creation order, as a scan of the tenant would meet
    # them.
    nominated = {u.id: u for u in tenant.indexed("@", key)}
    nominated.update((u.id, u) for u in tenant.indexed("userPrincipalName",
                                                          key))
    for candidate in sorted(nominated.values(), key=lambda u: u.created_seq):
        if candidate.deleted is not None:
            continue
        invited = is_invited(candidate)
        held = user_addresses(candidate.props, other_mails=invited)
        if not invited:
            held.add((candidate.props.get("userPrincipalName") or "").lower())
        if key not in held:
            continue
        if invited:
            user = candidate                    # re-invite: same user
            break
        # Observed text (public callers parse the id out of it); the
        # code is a guess.
        graph_fail(req, 400, "BadRequest",
                   f"The invited user already exists in the directory as "
                   f"object ID: {candidate.id}.")
    if user is None:
        owner = tenant.address_owner(address)
        # A contact or group holding the address: the guest is created
        # without that mail address (observed, MICROSOFT.md).
        free = owner is None
        upn = guest_upn(tenant, address)
        props = {
            "displayName": display or address,
            "mail": address if free else None,
            "otherMails": [address],
            "proxyAddresses": [f"SMTP:{address}"] if free else [],
            "userPrincipalName": upn,
            "mailNickname": upn.split("@")[0],
            "userType": user_type,
            "creationType": "Invitation",
            "externalUserState": "PendingAcceptance",
            "externalUserStateChangeDateTime": iso_ms(time.time()),
            "accountEnabled": True,
            "showInAddressList": False,       # hidden from the GAL
            "createdDateTime": iso_ms(time.time())[:-5] + "Z",
        }
        user = tenant.add_user(props)
        user.invited_at = time.monotonic()     # replication_lag_ms

    invitation_id = str(uuid.uuid4())
    ticket = urllib.parse.quote(b64url(secrets.token_bytes(24)), safe="")
    redeem = ("https://login.microsoftonline.com/redeem?rd=https%3a%2f%2f"
              "invitations.microsoft.com%2fredeem%2f%3ftenant%3d"
              f"{tenant.id}%26user%3d{invitation_id}%26ticket%3d{ticket}"
              "%26ver%3d2.0")
    state = user.props.get("externalUserState")
    info = body.get("invitedUserMessageInfo")
    if not isinstance(info, dict):
        info = {"messageLanguage": None, "customizedMessageBody": None,
                "ccRecipients": [{"emailAddress": {"name": None,
                                                   "address": None}}]}
    answer = {
        "@odata.context": f"{cloud.graph_url}/{version}/$metadata"
                          f"#invitations/$entity",
        "id": invitation_id,
        "inviteRedeemUrl": redeem,
        "invitedUserDisplayName": display,
        "invitedUserType": user_type,
        "invitedUserEmailAddress": address,
        "sendInvitationMessage": send,
        "resetRedemption": body.get("resetRedemption") is True,
        "inviteRedirectUrl": redirect,
        "status": "Completed" if state == "Accepted"
        else "PendingAcceptance",
        "invitedUserMessageInfo": info,
        "invitedUser": {"id": user.id},
    }
    resp = graph_ok(req, answer)
    resp.status = 201
    return resp


# --------------------------------------------------------------------------
# graph: write, invitation and resource-unit limits (throttling-limits.md,
# "Identity and access service limits" and "Invitation manager service
# limits")
# --------------------------------------------------------------------------
#
# Directory writes (POST, PATCH, PUT, DELETE; each inner request of a
# $batch on its own, never the $batch itself) fill sliding windows: per
# (tenant, app) limit_app_writes (3,000) per 150 s, per tenant
# limit_tenant_writes (18,000) per 300 s; POST /invitations also fills
# the tenant's limit_invitations (150) per 5 s.  Every request (reads and
# writes, inner ones one by one, never the $batch itself) costs resource
# units (limits_unit_cost) in a per (tenant, app) window of 10 s whose
# quota is limit_app_units, or by tenant size when that is null.
# time_factor divides every window.  The windows always record; the knobs
# decide whether going over answers 429 (enforce_limits: all four;
# enforce_invitation_limit: the invitation one only).  Answers to
# requests the limits let through carry x-ms-resource-unit, their cost.
# Guesses (README): a refused request is not counted; Retry-After is the
# whole seconds (rounded up, at least 1) until the window that refused
# has room; x-ms-throttle-limit-percentage is the fullest window's share
# with two decimals.

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


class TenantLimits:
    def __init__(self):
        self.writes = collections.deque()     # monotonic times, all apps
        self.app_writes = {}                  # client id -> deque
        self.app_units = {}                   # client id -> UnitWindow
        self.size = (None, 0)                 # (users key, live users)
        self.stats = {}                       # client id -> counters

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


def limits_admit(req):
    """Count a Graph request against the limits, or answer 429 when
    enforcing and a window is full.  Called by dispatch() once the token
    named the tenant and app, for every request, inner ones included;
    the $batch itself costs nothing."""
    if limits_is_batch(req):
        return None
    invitation = limits_is_invitation(req)
    write = limits_is_write(req)
    cloud, tenant = req.cloud, req.tenant
    knobs = cloud.knobs
    factor = float(knobs["time_factor"])
    now = time.monotonic()
    lim = tenant.limits
    app = lim.app_writes.setdefault(req.client_id, collections.deque())
    checks = [(tenant.invitations, knobs["limit_invitations"],
               INVITATION_WINDOW / factor, None, invitation,
               knobs["enforce_limits"] or knobs["enforce_invitation_limit"]),
              (app, knobs["limit_app_writes"], LIMIT_APP_WINDOW / factor,
               "Tenant_Application", write, knobs["enforce_limits"]),
              (lim.writes, knobs["limit_tenant_writes"],
               LIMIT_TENANT_WINDOW / factor, "Tenant", write,
               knobs["enforce_limits"])]
    stats = lim.client_stats(req.client_id)
    for window, limit, span, scope, applies, enforced in checks:
        if not applies:
            continue
        window_trim(window, span, now)
        wait = window_wait(window, limit, span, now)
        if enforced and wait > 0:
            if scope is None:
                stats["throttled"] += 1
                return graph_throttled(req, max(1, math.ceil(wait)))
            return limits_refuse(req, wait, f"{scope}/Write",
                                 "WriteLimitExceeded")
    cost = limits_unit_cost(req.method, req.path, req.query)
    units = lim.app_units.setdefault(req.client_id, UnitWindow())
    units.trim(UNIT_WINDOW / factor, now)
    if knobs["enforce_limits"]:
        wait = units.wait(cost, limits_unit_quota(cloud, tenant),
                          UNIT_WINDOW / factor, now)
        if wait > 0:
            stats["units_throttled"] += 1
            return limits_refuse(req, wait, "Tenant_Application/ReadWrite",
                                 "ResourceUnitLimitExceeded")
    units.add(now, cost)
    stats["units"] += cost
    req.units = cost
    if not write:
        return None
    if invitation:
        tenant.invitations.append(now)
    lim.writes.append(now)
    app.append(now)
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
    answer to an app whose fullest window (its writes, its tenant's
    writes, its resource units) is over 80 % (only while
    enforce_limits)."""
    limits_unit_header(req, resp)
    knobs = req.cloud.knobs
    if not knobs["enforce_limits"] or req.client_id is None:
        return
    factor = float(knobs["time_factor"])
    now = time.monotonic()
    lim = req.tenant.limits
    app = lim.app_writes.get(req.client_id, collections.deque())
    window_trim(app, LIMIT_APP_WINDOW / factor, now)
    window_trim(lim.writes, LIMIT_TENANT_WINDOW / factor, now)
    units = lim.app_units.get(req.client_id, UnitWindow())
    units.trim(UNIT_WINDOW / factor, now)
    used = max(len(app) / knobs["limit_app_writes"],
               len(lim.writes) / knobs["limit_tenant_writes"],
               units.total / limits_unit_quota(req.cloud, req.tenant))
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
# graph: JSON batching, POST /{v}/$batch (json-batching.md, batch.txt)
# --------------------------------------------------------------------------
#
# Each inner request goes through dispatch() like a top-level one: the
# batch's own token authenticates it, inject_fault() sees it (req.batch_id
# set), it is counted in the tenant's stats by its own kind and logged on
# its own (entry "batch" = its id), before the $batch itself.  Inner
# answers come back in a shuffled order, as the service may send them.

BATCH_MAX = 20
BATCH_METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE")
BATCH_WRITES = ("POST", "PATCH", "PUT")


def graph_throttled(req, seconds):
    """429 TooManyRequests in the documented shape
    (error-429-throttled.json) with Retry-After."""
    body = {"error": {
        "code": "TooManyRequests",
        "innerError": {"code": "429", "date": graph_date(),
                       "message": "Please retry after",
                       "request-id": req.request_id, "status": "429"},
        "message": "Please retry again later."}}
    return Response(429, body, {"Retry-After": str(seconds)})


def batch_bad(req, message):
    graph_fail(req, 400, "BadRequest", message)


def batch_header(headers, name):
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def batch_requests(req):
    """The batch body's requests, checked as a whole: any fault here fails
    the entire batch with 400 and nothing runs."""
    body = req.json_body()
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not requests:
        batch_bad(req, "Invalid batch payload format.")
    if len(requests) > BATCH_MAX:
        batch_bad(req, f"The number of requests in the batch exceeds the "
                       f"limit of {BATCH_MAX}.")
    seen = set()
    for item in requests:
        if not isinstance(item, dict) or \
                not isinstance(item.get("id"), str) or not item["id"] or \
                not isinstance(item.get("url"), str) or \
                item.get("method") not in BATCH_METHODS or \
                not isinstance(item.get("headers", {}), dict) or \
                not isinstance(item.get("dependsOn", []), list):
            batch_bad(req, "Invalid batch payload format.")
        key = item["id"].lower()          # ids are case-insensitive
        if key in seen:
            batch_bad(req, f"Request id '{item['id']}' is not unique "
                           f"within the batch.")
        seen.add(key)
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", item["url"]):
            batch_bad(req, f"Request id '{item['id']}': the url must be "
                           f"relative, such as /users.")
        headers = item.get("headers", {})
        has_type = batch_header(headers, "Content-Type") is not None
        if ("body" in item and not has_type) or \
                (item["method"] in BATCH_WRITES and "body" not in item):
            # Observed text (msgraph-sdk-dotnet#2628).
            batch_bad(req, f"Write request id : {item['id']} does not "
                           f"contain Content-Type header or body.")
    for item in requests:
        for dep in item.get("dependsOn", []):
            if not isinstance(dep, str) or dep.lower() not in seen or \
                    dep.lower() == item["id"].lower():
                batch_bad(req, f"Request id '{item['id']}' depends on "
                               f"'{dep}', which is not in the batch.")
    return requests


def batch_order(req, requests):
    """Requests in an order where each comes after those it depends on
    (batch order otherwise); a cycle fails the batch."""
    done, order = set(), []
    pending = list(requests)
    while pending:
        ready = [r for r in pending
                 if all(d.lower() in done for d in r.get("dependsOn", []))]
        if not ready:
            batch_bad(req, "The dependsOn of the batch's requests form a "
                           "cycle.")
        for item in ready:
            done.add(item["id"].lower())
            order.append(item)
            pending.remove(item)
    return order


def batch_inner_request(req, item):
    """A Request for one inner request: its path under the batch's
    version, its own headers, the batch's Authorization."""
    parts = urllib.parse.urlsplit(item["url"])
    path = "/" + req.group(1) + "/" + parts.path.lstrip("/")
    headers = http.client.HTTPMessage()
    for name, value in item.get("headers", {}).items():
        if name.lower() != "authorization":
            headers[name] = str(value)
    if req.headers.get("Authorization") is not None:
        headers["Authorization"] = req.headers.get("Authorization")
    body = b""
    if "body" in item:
        kind = (batch_header(item.get("headers", {}), "Content-Type")
                or "").lower()
        value = item["body"]
        if "json" not in kind and isinstance(value, str):
            try:           # other media types come base64url-encoded
                value = b64url_decode(value.rstrip("="))
            except ValueError:
                value = value.encode("utf-8")
            body = value
        else:
            body = json.dumps(value).encode("utf-8")
    inner = Request(req.cloud, "graph", item["method"], path, parts.query,
                    headers, body, req.host)
    inner.batch_id = item["id"]
    # It arrived with its batch, not when its turn came under the lock.
    inner.arrived = req.arrived
    inner.on_connection = getattr(req, "on_connection", 0)
    inner.new_windows = req.new_windows   # stamped when the batch's answer
    # has left
    # The batch's token names the tenant, even for an inner request that
    # a fault answers before authentication.
    inner.tenant, inner.client_id = req.tenant, req.client_id
    return inner


def batch_record(inner, resp):
    """Count and log an inner request as Cloud.answer does a top-level
    one."""
    cloud = inner.cloud
    if inner.tenant is not None:
        kind = graph_request_kind(inner.method, inner.path)
        if kind is not None:
            count_stat(cloud, inner.tenant, kind)
    cloud.log_seq += 1
    cloud.log.append({
        "seq": cloud.log_seq, "time": iso_ms(time.time()),
        "service": "graph", "method": inner.method, "path": inner.path,
        "query": inner.query, "status": resp.status,
        "tenant": inner.tenant.id if inner.tenant is not None else None,
        "client_id": inner.client_id, "batch": inner.batch_id})
    if cloud.verbose:
        query = "?" + inner.query if inner.query else ""
        print(f"fakecloud: graph {inner.method} {inner.path}{query} "
              f"(in $batch) -> {resp.status}", file=sys.stderr, flush=True)


def batch_run(inner):
    try:
        if re.match(r"^/(v1\.0|beta)/\$batch/?$", inner.path):
            graph_fail(inner, 400, "BadRequest",
                       "Nested batch requests are not supported.")
        resp = dispatch(inner)
    except Reply as reply:
        resp = reply.response
    except Exception:          # a bug here must not kill the listener
        traceback.print_exc(file=sys.stderr)
        resp = Response(500, {"error": {
            "code": "InternalServerError",
            "message": "fakecloud: unhandled exception"}})
    limits_unit_header(inner, resp)
    batch_record(inner, resp)
    return resp


def batch_answer(item_id, resp):
    headers = {"Cache-Control": "no-cache"}
    headers.update(resp.headers)
    answer = {"id": item_id, "status": resp.status, "headers": headers}
    if resp.body is not None:
        headers.setdefault("Content-Type", resp.content_type)
        body = resp.body
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        answer["body"] = body
    return answer


@route("graph", "POST", r"^/(v1\.0|beta)/\$batch/?$")
def json_batch(req):
    if req.batch_id is not None:
        graph_fail(req, 400, "BadRequest",
                   "Nested batch requests are not supported.")
    check_params(req, set())
    requests = batch_requests(req)
    failed = set()
    answers = []
    for item in batch_order(req, requests):
        deps = [d.lower() for d in item.get("dependsOn", [])]
        if any(d in failed for d in deps):
            # Not run: a request it depends on failed (guessed text).
            resp = graph_error(req, 424, "FailedDependency",
                               "The request was not run because a request "
                               "it depends on failed.")
        else:
            resp = batch_run(batch_inner_request(req, item))
        if resp.status >= 400:
            failed.add(item["id"].lower())
        answers.append(batch_answer(item["id"], resp))
    req.cloud.rng.shuffle(answers)
    resp = graph_ok(req, {"responses": answers})
    resp.headers["Content-Type"] = "application/json"
    return resp


# --------------------------------------------------------------------------
# exchange: POST /adminapi/beta/{tenant}/InvokeCommand
# --------------------------------------------------------------------------

CMDLETS = {}


def cmdlet(name):
    """Register fn(req, tenant, parameters) -> (list of result objects,
    list of warnings) for a cmdlet (names are case-insensitive)."""
    def register(fn):
        CMDLETS[name.lower()] = fn
        CMDLET_NAMES[name.lower()] = name
        return fn
    return register


def exo_page_size(req):
    prefer = ",".join((req.headers.get_all("Prefer") or [])
                      + (req.headers.get_all("X-Prefer") or []))
    match = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", prefer, re.I)
    return max(1, int(match.group(1))) if match else 1000


def exo_rate_headers(tenant):
    minute = int(time.time() // 60)
    window, used = tenant.exo_window
    used = used + 1 if window == minute else 1
    tenant.exo_window = (minute, used)
    return {"Rate-Limit-Limit": "30000",
            "Rate-Limit-Remaining": str(max(0, 30000 - used)),
            "Rate-Limit-Reset": iso_ms((minute + 1) * 60)}


INVOKE_PATH = r"^/adminapi/beta/([^/]+)/InvokeCommand$"
# Plain-text answer public EXO REST clients retry on (GreyCorbel ExoHelper
# matches "You have reached the maximum number of concurrent requests per
# tenant. Please wait and try again*"); the status code is a guess.
EXO_CONCURRENCY_TEXT = ("You have reached the maximum number of concurrent "
                        "requests per tenant. Please wait and try again.")


def exo_enter(cloud, req):
    """Before the latency knob, under the lock: count an Exchange request
    as in progress for its tenant (returns (None, tenant); the caller
    decrements when answered), or refuse it past exo_max_concurrent
    (returns (Response, None))."""
    match = re.match(INVOKE_PATH, req.path)
    if match is None:
        return None, None
    tenant = cloud.find_tenant(urllib.parse.unquote(match.group(1)))
    if tenant is None:
        return None, None
    limit = cloud.knobs["exo_max_concurrent"]
    if limit and tenant.exo_in_progress >= limit:
        req.tenant = tenant
        return Response(429, EXO_CONCURRENCY_TEXT.encode("utf-8"),
                        content_type="text/plain; charset=utf-8"), None
    tenant.exo_in_progress += 1
    return None, tenant


def exo_rate_limited(req, tenant):
    """exo_rate_limit knob: requests per second per tenant; past it 429
    with Retry-After (seconds) and no body (public clients handle an empty
    429 payload)."""
    limit = req.cloud.knobs["exo_rate_limit"]
    if not limit:
        return None
    now = time.monotonic()
    calls = tenant.exo_calls
    while calls and calls[0] <= now - 1.0:
        calls.popleft()
    if len(calls) >= limit:
        retry = max(1, int(calls[0] + 1.0 - now + 0.999))
        return Response(429, None, {"Retry-After": str(retry)})
    calls.append(now)
    return None


@route("exchange", "POST", INVOKE_PATH)
def invoke_command(req):
    cloud = req.cloud
    segment = req.group(1)
    tenant = cloud.find_tenant(segment)
    token, _ = cloud.check_token(bearer(req))
    if token is not None:
        req.client_id = token.client_id
    if tenant is None or token is None or token.kind != "exchange" or \
            token.tenant_id != tenant.id:
        raise Reply(Response(401, None, {"WWW-Authenticate": EXO_WWW_AUTH}))
    req.tenant = tenant
    rate = exo_rate_headers(tenant)
    try:
        resp = exo_rate_limited(req, tenant) or exo_invoke(req, tenant)
    except Reply as reply:
        resp = reply.response
    resp.headers.update(rate)
    return resp


def exo_invoke(req, tenant):
    cloud = req.cloud
    base = f"{cloud.exchange_url}/adminapi/beta/{req.match.group(1)}"
    if "skiptoken" in req.params:
        link = cloud.get_link(req.params["skiptoken"], "exo", tenant.id)
        if link is None:
            raise Reply(exo_error(400, "BadRequest", "Ex8F21A0",
                                  "System.ArgumentException",
                                  "The paging token is not valid."))
        results, warnings = link.data
    else:
        body = req.json_body()
        cmd = body.get("CmdletInput") if isinstance(body, dict) else None
        name = cmd.get("CmdletName") if isinstance(cmd, dict) else None
        params = cmd.get("Parameters", {}) if isinstance(cmd, dict) else {}
        if not isinstance(name, str) or not isinstance(params, dict):
            raise Reply(exo_error(400, "BadRequest", "Ex4A1B2C",
                                  "System.ArgumentException",
                                  "The request body must be {\"CmdletInput\":"
                                  " {\"CmdletName\", \"Parameters\"}}."))
        fn = CMDLETS.get(name.lower())
        if fn is None:
            raise Reply(exo_error(
                400, "BadRequest", "Ex9D6E3A",
                "System.Management.Automation.CommandNotFoundException",
                f"The term '{name}' is not recognized as a name of a cmdlet, "
                f"function, script file, or executable program."))
        count_stat(req.cloud, tenant, CMDLET_NAMES[name.lower()],
                   exchange=True)
        results, warnings = fn(req, tenant, params)

    size = exo_page_size(req)
    body = {"@odata.context":
            f"{base}/$metadata#Collection(Exchange.GenericHashTable)",
            "adminapi.warnings@odata.type": "#Collection(String)",
            "@adminapi.warnings": list(warnings)}
    if len(results) > size:
        token = cloud.new_link("exo", tenant.id, (results[size:], []))
        body["@odata.nextLink"] = f"{base}/InvokeCommand?$skiptoken={token}"
    body["value"] = results[:size]
    return Response(200, body, {"Content-Type": EXO_JSON})


def exo_check_params(params, allowed):
    for name in params:
        if name.lower() not in allowed:
            raise Reply(exo_error(
                400, "BadRequest", "ExB3C4D5",
                "System.Management.Automation.ParameterBindingException",
                f"A parameter cannot be found that matches parameter name "
                f"'{name}'."))


# -- recipients: one view for every kind ------------------------------------

EXO_DN = ("OU={domain},OU=Microsoft Exchange Hosted Organizations,"
          "DC=FAKEPR01A001,DC=PROD,DC=OUTLOOK,DC=COM")
EXC_NOT_FOUND = ("Microsoft.Exchange.Configuration.Tasks."
                 "ManagementObjectNotFoundException")
EXC_AMBIGUOUS = ("Microsoft.Exchange.Configuration.Tasks."
                 "ManagementObjectAmbiguousException")
EXC_PROXY_EXISTS = "Microsoft.Exchange.Data.Directory.ProxyAddressExistsException"
EXC_OBJECT_EXISTS = ("Microsoft.Exchange.Data.Directory."
                     "ADObjectAlreadyExistsException")
EXC_BINDING = "System.Management.Automation.ParameterBindingException"
EXC_VALIDATION = ("System.Management.Automation."
                  "ParameterBindingValidationException")
CUSTOM_ATTRIBUTES = [f"CustomAttribute{n}" for n in range(1, 16)]

# Set-Contact / Set-User address-book parameters -> (Graph property,
# maximum length).  Exchange and Graph are one directory object.
ADDRESS_BOOK = {
    "company": ("companyName", 64), "department": ("department", 64),
    "title": ("jobTitle", 128), "phone": ("businessPhones", 64),
    "mobilephone": ("mobilePhone", 64), "office": ("officeLocation", 128),
    "streetaddress": ("streetAddress", 1024), "city": ("city", 128),
    "stateorprovince": ("state", 128), "postalcode": ("postalCode", 40),
    "countryorregion": ("country", 128), "firstname": ("givenName", 64),
    "lastname": ("surname", 64), "displayname": ("displayName", 256),
    "fax": ("faxNumber", 64),
}


def exo_fail(status, code, err_id, exc_type, text):
    raise Reply(exo_error(status, code, err_id, exc_type, text))


def exo_not_found(identity):
    exo_fail(404, "NotFound", "Ex6F9304", EXC_NOT_FOUND,
             f"The operation couldn't be performed because object "
             f"'{identity}' couldn't be found on '{EXO_SERVER}'.")


def exo_guid(oid):
    """Exchange's own object Guid (not the directory object id)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "fakecloud-exo:" + oid))


def strip_smtp(value):
    value = str(value or "")
    return value[5:] if value[:5].lower() == "smtp:" else value


def primary_smtp(addresses):
    for value in addresses:
        if isinstance(value, str) and value.startswith("SMTP:"):
            return value[5:]
    return None


def recipient_view(tenant, oid, name, props, rtype, details, external,
                   hidden, created=None):
    mail = props.get("mail")
    addresses = list(props.get("proxyAddresses") or []) or \
        ([f"SMTP:{mail}"] if mail else [])
    ext = props.get("onPremisesExtensionAttributes") or {}
    phones = props.get("businessPhones") or [""]
    view = {
        "Identity": oid,
        "Name": name,
        "Alias": props.get("mailNickname")
        or (mail.split("@")[0] if mail else name),
        "DisplayName": props.get("displayName"),
        "FirstName": props.get("givenName") or "",
        "LastName": props.get("surname") or "",
        "Company": props.get("companyName") or "",
        "Department": props.get("department") or "",
        "Title": props.get("jobTitle") or "",
        "Office": props.get("officeLocation") or "",
        "StreetAddress": props.get("streetAddress") or "",
        "City": props.get("city") or "",
        "StateOrProvince": props.get("state") or "",
        "PostalCode": props.get("postalCode") or "",
        "CountryOrRegion": props.get("country") or "",
        "Phone": phones[0] if isinstance(phones, list) else phones,
        "MobilePhone": props.get("mobilePhone") or "",
        "Fax": props.get("faxNumber") or "",
        "PrimarySmtpAddress": mail or primary_smtp(addresses),
        "EmailAddresses@odata.type": "#Collection(String)",
        "EmailAddresses": addresses,
        "ExternalEmailAddress": external,
        "ExternalDirectoryObjectId": oid,
        "Guid": exo_guid(oid),
        "DistinguishedName": f"CN={name},{EXO_DN.format(domain=tenant.domain)}",
        "RecipientType": rtype,
        "RecipientTypeDetails": details,
        "HiddenFromAddressListsEnabled": hidden,
    }
    # When the object was made, as Exchange lists it (guessed: ISO 8601
    # UTC, the JSON output format's dates).
    created = created or props.get("createdDateTime")
    if created:
        view["WhenCreated"] = view["WhenCreatedUTC"] = created
    for n in range(1, 16):
        view[f"CustomAttribute{n}"] = ext.get(f"extensionAttribute{n}") or ""
    return view


def user_kind(user):
    """RecipientTypeDetails of a directory user as Exchange sees it."""
    props = user.props
    if user.exo and user.exo.get("kind") == "MailUser":
        return "MailUser"
    if not props.get("mail"):
        return "User"
    if props.get("userType") == "Guest":
        return "GuestMailUser"
    return "UserMailbox"


def user_recipient(user, tenant=None):
    """A directory user as Exchange shows it: UserMailbox (member with
    mail), MailUser (New-MailUser), GuestMailUser, or User (no mail)."""
    props = user.props
    kind = user_kind(user)
    exo = user.exo or {}
    mail = props.get("mail")
    hidden_flag = props.get("showInAddressList")
    if kind == "UserMailbox":
        rtype, external = "UserMailbox", None
        hidden = hidden_flag is False
    elif kind == "User":
        rtype, external, hidden = "User", None, hidden_flag is False
    else:
        rtype = "MailUser"
        external = exo.get("ExternalEmailAddress") or f"SMTP:{mail}"
        # Guests are hidden from the GAL by default (MICROSOFT.md).
        hidden = (hidden_flag is not True) if kind == "GuestMailUser" \
            else hidden_flag is False
    view = recipient_view(tenant or _NO_TENANT, user.id,
                          exo.get("Name") or user.id, props, rtype, kind,
                          external, hidden)
    view["UserPrincipalName"] = props.get("userPrincipalName")
    return view


def contact_recipient(contact, tenant=None):
    """An org contact as Exchange shows a MailContact."""
    props = contact.props
    mail = props.get("mail")
    return recipient_view(
        tenant or _NO_TENANT, contact.id,
        props.get("name") or props.get("displayName") or contact.id, props,
        "MailContact", "MailContact",
        props.get("externalEmailAddress") or f"SMTP:{mail}",
        props.get("hiddenFromAddressListsEnabled") is True,
        created=getattr(contact, "created", None))


def group_recipient(group, tenant):
    props = group.props
    unified = "Unified" in (props.get("groupTypes") or [])
    details = "GroupMailbox" if unified else (
        "MailUniversalSecurityGroup" if props.get("securityEnabled")
        else "MailUniversalDistributionGroup")
    rtype = "MailUniversalDistributionGroup" if unified else details
    return recipient_view(tenant, group.id,
                          props.get("displayName") or group.id, props, rtype,
                          details, None,
                          props.get("hiddenFromAddressListsEnabled") is True)


class _NoTenant:
    domain = "unknown"


_NO_TENANT = _NoTenant()


def guest_provisioned(req, user):
    """exo_guest_provisioning_ms: Exchange learns of an invited guest only
    this long after the invitation (current knob value)."""
    delay = req.cloud.knobs["exo_guest_provisioning_ms"] / 1000.0
    return not (delay and user.invited_at
                and time.monotonic() < user.invited_at + delay)


def exo_objects(req, tenant, kinds=None):
    """[(obj, view)] of what Exchange lists, optionally only the given
    RecipientTypeDetails (a set)."""
    out = []
    for user in tenant.users.values():
        if user.deleted or not guest_provisioned(req, user):
            continue
        kind = user_kind(user)
        if kinds is None and kind == "User":
            continue
        if kinds is not None and kind not in kinds:
            continue
        out.append((user, user_recipient(user, tenant)))
    if kinds is None or "MailContact" in kinds:
        out += [(c, contact_recipient(c, tenant))
                for c in tenant.contacts.values() if c.props.get("mail")]
    if kinds is None:
        out += [(g, group_recipient(g, tenant))
                for g in tenant.groups.values() if g.props.get("mail")]
    return out


def identity_matches(view, identity):
    """-Identity forms the cmdlet docs list: Name, Alias, distinguished
    name, GUID; plus email address and ExternalDirectoryObjectId (Exchange
    resolves both; UserPrincipalName for users)."""
    key = strip_smtp(str(identity)).strip().lower()
    names = [view["Identity"], view["Name"], view["Alias"],
             view["DistinguishedName"], view["Guid"],
             view["ExternalDirectoryObjectId"], view["PrimarySmtpAddress"],
             view.get("UserPrincipalName")]
    names += [strip_smtp(a) for a in view["EmailAddresses"]
              if str(a)[:5].lower() == "smtp:"]
    return any(isinstance(n, str) and n.lower() == key for n in names)


def exo_resolve(req, tenant, identity, kinds):
    if not isinstance(identity, str) or not identity:
        exo_fail(400, "BadRequest", "ExB3C4D6", EXC_BINDING,
                 "Cannot process command because of one or more missing "
                 "mandatory parameters: Identity.")
    found = [(o, v) for o, v in exo_objects(req, tenant, kinds)
             if identity_matches(v, identity)]
    if not found:
        exo_not_found(identity)
    if len(found) > 1:
        exo_fail(400, "BadRequest", "Ex2B7A41", EXC_AMBIGUOUS,
                 f"The operation couldn't be performed because "
                 f"'{identity}' matches multiple entries.")
    return found[0]


def lowered(params):
    return {k.lower(): v for k, v in params.items()}


def exo_required(params, *names):
    missing = [n for n in names if params.get(n.lower()) in (None, "")]
    if missing:
        exo_fail(400, "BadRequest", "ExB3C4D6", EXC_BINDING,
                 f"Cannot process command because of one or more missing "
                 f"mandatory parameters: {' '.join(missing)}.")


def exo_length(name, value, limit):
    if isinstance(value, str) and text_length(value) > limit:
        exo_fail(400, "BadRequest", "Ex5C1D22", EXC_VALIDATION,
                 f"Cannot validate argument on parameter '{name}'. The "
                 f"argument is longer than the maximum allowed length of "
                 f"\"{limit}\". Provide an argument that is less than or "
                 f"equal to \"{limit}\" and then try the command again.")


def exo_bool(name, value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower().lstrip("$")
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    exo_fail(400, "BadRequest", "ExB3C4D7", EXC_BINDING,
             f"Cannot process argument transformation on parameter "
             f"'{name}'. Cannot convert value \"{value}\" to type "
             f"\"System.Boolean\".")


def exo_address(name, value):
    address = strip_smtp(value).strip()
    if not is_address(address):
        exo_fail(400, "BadRequest", "ExB3C4D8", EXC_BINDING,
                 f"Cannot process argument transformation on parameter "
                 f"'{name}'. Cannot convert value \"{value}\" to type "
                 f"\"Microsoft.Exchange.Data.ProxyAddress\".")
    return address


def owner_name(tenant, owner):
    kind, oid = owner
    if kind == "User":
        user = tenant.users[oid]
        return (user.exo or {}).get("Name") or oid
    if kind == "Group":
        return tenant.groups[oid].props.get("displayName") or oid
    contact = tenant.contacts[oid]
    return contact.props.get("name") or contact.props.get("displayName") \
        or oid


def check_addresses_free(tenant, addresses, exclude=None):
    """Every SMTP address unique across the tenant's recipients (users,
    guests, mail users, contacts, groups)."""
    for value in addresses:
        if str(value)[:5].lower() != "smtp:":
            continue
        owner = tenant.address_owner(value[5:], exclude=exclude)
        if owner is not None:
            exo_fail(400, "BadRequest", "Ex5A2D4E", EXC_PROXY_EXISTS,
                     f"The proxy address \"{value}\" is already being used "
                     f"by the proxy addresses or LegacyExchangeDN of "
                     f"\"{owner_name(tenant, owner)}\". Please choose "
                     f"another proxy address.")


def recipient_names(req, tenant, exclude=None):
    return {v["Name"].lower() for o, v in exo_objects(req, tenant)
            if o.id != exclude and isinstance(v["Name"], str)}


def check_name_free(req, tenant, name, exclude=None):
    exo_length("Name", name, 64)
    if name.lower() in recipient_names(req, tenant, exclude):
        exo_fail(400, "BadRequest", "Ex6D1F0B", EXC_OBJECT_EXISTS,
                 f"The object 'CN={name},{EXO_DN.format(domain=tenant.domain)}"
                 f"' already exists.")


def derive_alias(req, tenant, name, exclude=None):
    """Alias from Name (characters an alias cannot hold dropped), made
    unique with a number, as Exchange does when -Alias is absent."""
    base = re.sub(r"[^A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]", "", name).strip(".")
    base = base[:64] or "recipient"
    taken = {str(v["Alias"]).lower() for o, v in exo_objects(req, tenant)
             if o.id != exclude}
    alias, n = base, 1
    while alias.lower() in taken:
        n += 1
        alias = f"{base[:60]}{n}"
    return alias


def apply_email_addresses(current, value):
    """EmailAddresses: a list replaces; the GenericHashTable form
    {"@odata.type": "#Exchange.GenericHashTable", "Add": [...],
    "Remove": [...]} edits.  "SMTP:" is the primary (one only), "smtp:"
    or no prefix a secondary."""
    def norm(item):
        item = str(item).strip()
        if ":" not in item:
            item = "smtp:" + item
        prefix, rest = item.split(":", 1)
        if prefix.lower() == "smtp":
            exo_address("EmailAddresses", rest)
        return item

    def as_list(item):
        if item is None:
            return []
        return list(item) if isinstance(item, list) else [item]

    if isinstance(value, dict):
        ops = lowered(value)
        out = list(current)
        for item in as_list(ops.get("remove")):
            key = norm(item).split(":", 1)[1].lower()
            out = [a for a in out if a.split(":", 1)[-1].lower() != key]
        for item in as_list(ops.get("add")):
            item = norm(item)
            key = item.split(":", 1)[1].lower()
            if item.startswith("SMTP:"):
                out = ["smtp:" + a[5:] if a.startswith("SMTP:") else a
                       for a in out]
            out = [a for a in out if a.split(":", 1)[-1].lower() != key]
            out.append(item)
    else:
        out = [norm(a) for a in as_list(value)]
        primaries = [a for a in out if a.startswith("SMTP:")]
        for extra in primaries[1:]:
            out[out.index(extra)] = "smtp:" + extra[5:]
    if not any(a.startswith("SMTP:") for a in out):
        for i, a in enumerate(out):
            if a[:5].lower() == "smtp:":
                out[i] = "SMTP:" + a[5:]
                break
    return out


def set_external_address(addresses, address):
    """ExternalEmailAddress becomes the primary SMTP address; the old
    primary stays as a secondary one."""
    out = [("smtp:" + a[5:]) if a.startswith("SMTP:") else a
           for a in addresses
           if a.split(":", 1)[-1].lower() != address.lower()]
    return [f"SMTP:{address}"] + out


def exo_result_size(params, items):
    size = params.get("resultsize", 1000)
    warnings = []
    if str(size).lower() != "unlimited":
        try:
            size = int(size)
        except (TypeError, ValueError):
            size = 1000
        if len(items) > size:
            items = items[:size]
            warnings.append("There are more results available than are "
                            "currently displayed. To view them, increase "
                            "the value for the ResultSize parameter.")
    return items, warnings


# -- OPATH -Filter: comparisons with -eq -ne -like -notlike, -and -or -not,
# parentheses, 'quoted' or "quoted" values, $null $true $false.

OPATH_TOKEN = re.compile(
    r"\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<op>-(?:and|or|not|eq|ne|like|notlike)"
    r"\b)|'(?P<sq>(?:[^']|'')*)'|\"(?P<dq>(?:[^\"]|\"\")*)\""
    r"|(?P<var>\$(?:null|true|false)\b)|(?P<word>[A-Za-z][A-Za-z0-9]*))",
    re.I)
ADDRESS_PROPS = {"emailaddresses", "externalemailaddress",
                 "primarysmtpaddress"}


def opath_error(text, pos):
    exo_fail(400, "BadRequest", "Ex9E3C11", EXC_BINDING,
             f"Cannot bind parameter 'Filter' to the target. Exception "
             f"setting \"Filter\": \"Invalid filter syntax. For a "
             f"description of the filter parameter syntax see the command "
             f"help.\n\"{text}\" at position {pos + 1}.\"")


def opath_parse(text):
    tokens, pos = [], 0
    text = str(text)
    while pos < len(text):
        if not text[pos:].strip():
            break
        match = OPATH_TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            opath_error(text, pos)
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "sq":
            kind, value = "str", value.replace("''", "'")
        elif kind == "dq":
            kind, value = "str", value.replace('""', '"')
        elif kind in ("op", "var"):
            value = value.lower()
        tokens.append((kind, value, match.start(kind if kind != "str"
                                                else 0)))
        pos = match.end()
    state = {"i": 0}

    def peek():
        return tokens[state["i"]] if state["i"] < len(tokens) else \
            ("end", None, len(text))

    def take():
        tok = peek()
        state["i"] += 1
        return tok

    def or_expr():
        left = and_expr()
        while peek()[:2] == ("op", "-or"):
            take()
            right = and_expr()
            left = (lambda a, b: lambda v: a(v) or b(v))(left, right)
        return left

    def and_expr():
        left = unary()
        while peek()[:2] == ("op", "-and"):
            take()
            right = unary()
            left = (lambda a, b: lambda v: a(v) and b(v))(left, right)
        return left

    def unary():
        tok = peek()
        if tok[:2] == ("op", "-not"):
            take()
            inner = unary()
            return lambda v: not inner(v)
        if tok[0] == "lp":
            take()
            inner = or_expr()
            if take()[0] != "rp":
                opath_error(text, peek()[2])
            return inner
        if tok[0] != "word":
            opath_error(text, tok[2])
        prop = take()[1]
        op = take()
        if op[0] != "op" or op[1] not in ("-eq", "-ne", "-like",
                                          "-notlike"):
            opath_error(text, op[2])
        val = take()
        if val[0] not in ("str", "var", "word"):
            opath_error(text, val[2])
        return comparison(prop, op[1], val)

    def comparison(prop, op, val):
        key = prop.lower()
        if val[0] == "var":
            want = {"$null": None, "$true": True, "$false": False}[val[1]]
        else:
            want = val[1]

        def test(view):
            name = next((k for k in view if k.lower() == key
                         and "@" not in k), None)
            if name is None:
                exo_fail(400, "BadRequest", "Ex9E3C12", EXC_BINDING,
                         f"Cannot bind parameter 'Filter' to the target. "
                         f"Exception setting \"Filter\": \"The property "
                         f"'{prop}' is not a recognized filterable "
                         f"property.\"")
            have = view[name]
            values = have if isinstance(have, list) else [have]
            if want is None:
                hit = all(h in (None, "") for h in values)
            elif isinstance(want, bool):
                hit = any(h is want or str(h).lower() == str(want).lower()
                          for h in values)
            else:
                target = want.lower()
                if key in ADDRESS_PROPS:
                    target = strip_smtp(target)
                    values = [strip_smtp(h) for h in values]
                values = [str(h).lower() for h in values if h is not None]
                if op in ("-like", "-notlike"):
                    pattern = re.compile("^" + ".*".join(
                        re.escape(p) for p in target.split("*")) + "$", re.S)
                    hit = any(pattern.match(h) for h in values)
                else:
                    hit = target in values
            return hit if op in ("-eq", "-like") else not hit
        return test

    if not tokens:
        opath_error(text, 0)
    tree = or_expr()
    if peek()[0] != "end":
        opath_error(text, peek()[2])
    return tree


# -- cmdlets ----------------------------------------------------------------

CMDLET_NAMES = {}

GET_PARAMS = {"identity", "filter", "resultsize"}
MAIL_CONTACT = {"MailContact"}
MAIL_USER = {"MailUser", "GuestMailUser"}
ANY_USER = {"UserMailbox", "MailUser", "GuestMailUser", "User"}


def recipient_matches(recipient, identity):
    key = identity.lower()
    if key.startswith("smtp:"):
        key = key[5:]
    names = [recipient["Identity"], recipient["Name"], recipient["Alias"],
             recipient["DisplayName"], recipient["PrimarySmtpAddress"]]
    names += [a.split(":", 1)[-1] for a in recipient["EmailAddresses"]]
    return any(isinstance(n, str) and n.lower() == key for n in names)


@cmdlet("Get-Recipient")
def cmd_get_recipient(req, tenant, params):
    exo_check_params(params, {"identity", "recipienttypedetails",
                              "resultsize", "filter"})
    lowered_params = lowered(params)
    recipients = [v for o, v in exo_objects(req, tenant)
                  if not isinstance(o, Group)]
    if lowered_params.get("filter") not in (None, ""):
        test = opath_parse(lowered_params["filter"])
        recipients = [r for r in recipients if test(r)]
    identity = lowered_params.get("identity")
    if identity is not None:
        recipients = [r for r in recipients
                      if recipient_matches(r, str(identity))]
        if not recipients:
            exo_not_found(identity)
    kinds = lowered_params.get("recipienttypedetails")
    if kinds is not None:
        if isinstance(kinds, str):
            kinds = kinds.split(",")
        wanted = {str(k).strip().lower() for k in kinds}
        recipients = [r for r in recipients
                      if r["RecipientTypeDetails"].lower() in wanted]
    return exo_result_size(lowered_params, recipients)


def exo_get(req, tenant, params, kinds):
    exo_check_params(params, GET_PARAMS)
    p = lowered(params)
    if p.get("identity") not in (None, ""):
        return [exo_resolve(req, tenant, p["identity"], kinds)[1]], []
    views = [v for o, v in exo_objects(req, tenant, kinds)]
    if p.get("filter") not in (None, ""):
        test = opath_parse(p["filter"])
        views = [v for v in views if test(v)]
    return exo_result_size(p, views)


@cmdlet("Get-MailContact")
def cmd_get_mail_contact(req, tenant, params):
    return exo_get(req, tenant, params, MAIL_CONTACT)


@cmdlet("Get-Contact")
def cmd_get_contact(req, tenant, params):
    return exo_get(req, tenant, params, MAIL_CONTACT)


@cmdlet("Get-MailUser")
def cmd_get_mail_user(req, tenant, params):
    return exo_get(req, tenant, params, MAIL_USER)


@cmdlet("Get-User")
def cmd_get_user(req, tenant, params):
    return exo_get(req, tenant, params, ANY_USER)


NEW_COMMON = {"name", "externalemailaddress", "displayname", "firstname",
              "lastname", "alias", "initials", "confirm"}


def new_common(req, tenant, params):
    exo_required(params, "Name", "ExternalEmailAddress")
    name = str(params["name"])
    check_name_free(req, tenant, name)
    address = exo_address("ExternalEmailAddress",
                          params["externalemailaddress"])
    check_addresses_free(tenant, [f"SMTP:{address}"])
    for key, limit in (("displayname", 256), ("firstname", 64),
                       ("lastname", 64), ("alias", 64)):
        exo_length(key, params.get(key), limit)
    alias = params.get("alias") or derive_alias(req, tenant, name)
    props = {"displayName": params.get("displayname") or name,
             "mail": address, "mailNickname": alias,
             "proxyAddresses": [f"SMTP:{address}"]}
    if params.get("firstname"):
        props["givenName"] = params["firstname"]
    if params.get("lastname"):
        props["surname"] = params["lastname"]
    return name, address, props


@cmdlet("New-MailContact")
def cmd_new_mail_contact(req, tenant, params):
    exo_check_params(params, NEW_COMMON)
    p = lowered(params)
    name, address, props = new_common(req, tenant, p)
    props.update({"name": name, "externalEmailAddress": f"SMTP:{address}",
                  "hiddenFromAddressListsEnabled": False})
    contact = tenant.add_contact(props)
    return [contact_recipient(contact, tenant)], []


@cmdlet("New-MailUser")
def cmd_new_mail_user(req, tenant, params):
    """Parameter sets (New-MailUser docs): DisabledUser = -Name
    -ExternalEmailAddress (no password, no sign-in); EnabledUser adds
    -Password and -MicrosoftOnlineServicesID (cloud) / -UserPrincipalName."""
    exo_check_params(params, NEW_COMMON | {
        "password", "microsoftonlineservicesid", "userprincipalname",
        "primarysmtpaddress"})
    p = lowered(params)
    upn = p.get("microsoftonlineservicesid") or p.get("userprincipalname")
    if bool(p.get("password")) != bool(upn):
        exo_fail(400, "BadRequest", "ExB3C4D9", EXC_BINDING,
                 "Parameter set cannot be resolved using the specified named "
                 "parameters. One or more parameters issued cannot be used "
                 "together or an insufficient number of parameters were "
                 "provided.")
    name, address, props = new_common(req, tenant, p)
    taken = {(u.props.get("userPrincipalName") or "").lower()
             for u in tenant.users.values() if not u.deleted}
    if upn:
        upn = str(upn)
        if not is_address(upn) or \
                not upn.lower().endswith("@" + tenant.domain.lower()):
            exo_fail(400, "BadRequest", "ExB3C4DA", EXC_BINDING,
                     f"Cannot process argument transformation on parameter "
                     f"'MicrosoftOnlineServicesID'. The domain of \"{upn}\" "
                     f"is not an accepted domain of the organization.")
        if upn.lower() in taken:
            exo_fail(400, "BadRequest", "Ex6D1F0C", EXC_OBJECT_EXISTS,
                     f"The object '{upn}' already exists.")
    else:
        upn = f"{props['mailNickname']}@{tenant.domain}"
        base, n = upn.split("@")[0], 1
        while upn.lower() in taken:
            n += 1
            upn = f"{base}{n}@{tenant.domain}"
    props.update({"userPrincipalName": upn, "userType": "Member",
                  "accountEnabled": bool(p.get("password")),
                  "creationType": None})
    user = tenant.add_user(props)
    user.exo = {"kind": "MailUser", "Name": name,
                "ExternalEmailAddress": f"SMTP:{address}"}
    return [user_recipient(user, tenant)], []


def set_common(req, tenant, obj, p, is_user):
    """Set-MailContact / Set-MailUser: HiddenFromAddressListsEnabled,
    CustomAttribute1..15, EmailAddresses, ExternalEmailAddress,
    DisplayName, Name, Alias."""
    props = obj.props
    changes = {}
    addresses = list(props.get("proxyAddresses") or []) or \
        ([f"SMTP:{props['mail']}"] if props.get("mail") else [])
    new_addresses = None
    external = None
    if "externalemailaddress" in p:
        external = exo_address("ExternalEmailAddress",
                               p["externalemailaddress"])
        new_addresses = set_external_address(addresses, external)
    if "emailaddresses" in p:
        new_addresses = apply_email_addresses(
            new_addresses if new_addresses is not None else addresses,
            p["emailaddresses"])
    if new_addresses is not None:
        check_addresses_free(tenant, new_addresses, exclude=obj.id)
        changes["proxyAddresses"] = new_addresses
        changes["mail"] = primary_smtp(new_addresses)
    if "name" in p:
        check_name_free(req, tenant, str(p["name"]), exclude=obj.id)
    for key, prop, limit in (("displayname", "displayName", 256),
                             ("alias", "mailNickname", 64)):
        if key in p:
            exo_length(key, p[key], limit)
            changes[prop] = p[key]
    custom = {}
    for n in range(1, 16):
        key = f"customattribute{n}"
        if key in p:
            value = p[key]
            exo_length(f"CustomAttribute{n}", value, 1024)
            custom[f"extensionAttribute{n}"] = value if value not in (
                None, "") else None
    if custom:
        merged = dict(props.get("onPremisesExtensionAttributes") or {})
        merged.update(custom)
        changes["onPremisesExtensionAttributes"] = merged
    hidden = None
    if "hiddenfromaddresslistsenabled" in p:
        hidden = exo_bool("HiddenFromAddressListsEnabled",
                          p["hiddenfromaddresslistsenabled"])
    # All checks passed: apply.
    if is_user:
        if hidden is not None:
            changes["showInAddressList"] = not hidden
        tenant.patch_user(obj, changes)
        if "name" in p or external is not None:
            obj.exo = dict(obj.exo or {})
            if "name" in p:
                obj.exo["Name"] = str(p["name"])
            if external is not None:
                obj.exo["ExternalEmailAddress"] = f"SMTP:{external}"
    else:
        props.update(changes)
        if hidden is not None:
            props["hiddenFromAddressListsEnabled"] = hidden
        if "name" in p:
            props["name"] = str(p["name"])
        if external is not None:
            props["externalEmailAddress"] = f"SMTP:{external}"


SET_MAIL = {"identity", "hiddenfromaddresslistsenabled", "emailaddresses",
            "externalemailaddress", "displayname", "name", "alias",
            "confirm"} | {a.lower() for a in CUSTOM_ATTRIBUTES}


@cmdlet("Set-MailContact")
def cmd_set_mail_contact(req, tenant, params):
    exo_check_params(params, SET_MAIL)
    p = lowered(params)
    contact, _ = exo_resolve(req, tenant, p.get("identity"), MAIL_CONTACT)
    set_common(req, tenant, contact, p, is_user=False)
    return [], []


@cmdlet("Set-MailUser")
def cmd_set_mail_user(req, tenant, params):
    exo_check_params(params, SET_MAIL)
    p = lowered(params)
    user, _ = exo_resolve(req, tenant, p.get("identity"), MAIL_USER)
    set_common(req, tenant, user, p, is_user=True)
    return [], []


SET_BOOK = {"identity", "name", "confirm"} | set(ADDRESS_BOOK)


def address_book_changes(p):
    changes = {}
    for key, (prop, limit) in ADDRESS_BOOK.items():
        if key not in p:
            continue
        value = p[key]
        if value is not None and not isinstance(value, str):
            value = str(value)
        exo_length(key, value, limit)
        if key == "displayname" and not (value or "").strip():
            exo_fail(400, "BadRequest", "Ex5C1D23", EXC_VALIDATION,
                     "Cannot validate argument on parameter 'DisplayName'. "
                     "The argument is null or empty. Provide an argument "
                     "that is not null or empty, and then try the command "
                     "again.")
        if prop == "businessPhones":
            value = [value] if value else []
        elif value == "":
            value = None
        changes[prop] = value
    return changes


@cmdlet("Set-Contact")
def cmd_set_contact(req, tenant, params):
    exo_check_params(params, SET_BOOK)
    p = lowered(params)
    contact, _ = exo_resolve(req, tenant, p.get("identity"), MAIL_CONTACT)
    changes = address_book_changes(p)
    if "name" in p:
        check_name_free(req, tenant, str(p["name"]), exclude=contact.id)
        changes["name"] = str(p["name"])
    contact.props.update(changes)
    return [], []


@cmdlet("Set-User")
def cmd_set_user(req, tenant, params):
    exo_check_params(params, SET_BOOK)
    p = lowered(params)
    user, _ = exo_resolve(req, tenant, p.get("identity"), ANY_USER)
    changes = address_book_changes(p)
    if "name" in p:
        check_name_free(req, tenant, str(p["name"]), exclude=user.id)
    tenant.patch_user(user, changes)
    if "name" in p:
        user.exo = dict(user.exo or {})
        user.exo["Name"] = str(p["name"])
    return [], []


@cmdlet("Remove-MailContact")
def cmd_remove_mail_contact(req, tenant, params):
    exo_check_params(params, {"identity", "confirm"})
    p = lowered(params)
    contact, _ = exo_resolve(req, tenant, p.get("identity"), MAIL_CONTACT)
    del tenant.contacts[contact.id]
    return [], []


@cmdlet("Remove-MailUser")
def cmd_remove_mail_user(req, tenant, params):
    """Removes the directory user too (soft-deleted, like a Graph
    DELETE)."""
    exo_check_params(params, {"identity", "confirm"})
    p = lowered(params)
    user, _ = exo_resolve(req, tenant, p.get("identity"), MAIL_USER)
    tenant.delete_user(user, hard=False)
    return [], []


# --------------------------------------------------------------------------
# graph: org contacts (read-only; Exchange's mail contacts)
# --------------------------------------------------------------------------

def org_contact_view(contact, version):
    props = contact.props
    phones = []
    for value in props.get("businessPhones") or []:
        phones.append({"type": "business", "number": value})
    if props.get("mobilePhone"):
        phones.append({"type": "mobile", "number": props["mobilePhone"]})
    if props.get("faxNumber"):
        phones.append({"type": "businessFax", "number": props["faxNumber"]})
    return {
        "id": contact.id,
        "deletedDateTime": None,
        "companyName": props.get("companyName"),
        "department": props.get("department"),
        "displayName": props.get("displayName"),
        "givenName": props.get("givenName"),
        "jobTitle": props.get("jobTitle"),
        "mail": props.get("mail"),
        "mailNickname": props.get("mailNickname"),
        "onPremisesLastSyncDateTime": None,
        "onPremisesSyncEnabled": None,
        "surname": props.get("surname"),
        "addresses": [{
            "city": props.get("city"),
            "countryOrRegion": props.get("country"),
            "officeLocation": props.get("officeLocation"),
            "postalCode": props.get("postalCode"),
            "state": props.get("state"),
            "street": props.get("streetAddress")}],
        "onPremisesProvisioningErrors": [],
        "phones": phones,
        "proxyAddresses": list(props.get("proxyAddresses") or []),
    }


class ObjectFilterParser(FilterParser):
    """$filter on org contacts and groups: eq and startswith on their
    string properties, any() on proxyAddresses, and/or/not. The address
    clauses galbridge sends are also accepted as advanced queries
    (orgcontact.md: "Specific usage of $filter ... is supported only when
    you use the ConsistencyLevel header set to eventual and $count")."""

    def __init__(self, text, resource, props):
        super().__init__(text)
        self.resource = resource
        self.props = {p.lower(): p for p in props}

    def property(self, name):
        prop = self.props.get(name.lower())
        if prop is None:
            raise unsupported(f"Property '{name.split('/')[-1]}' does not "
                              f"exist as a declared property or extension "
                              f"property.")
        return prop


ORG_CONTACT_FILTER = ["id", "displayName", "mail", "mailNickname",
                      "givenName", "surname", "companyName", "department",
                      "jobTitle", "proxyAddresses"]
GROUP_FILTER = ["id", "displayName", "mail", "mailNickname", "proxyAddresses"]


class _Filtered:
    """What a contact or group shows a filter: its addresses as the
    service derives them (an object with mail has it as its primary SMTP
    proxy address)."""

    def __init__(self, obj):
        self.id = obj.id
        self.props = dict(obj.props)
        mail = self.props.get("mail")
        if mail and not self.props.get("proxyAddresses"):
            self.props["proxyAddresses"] = [f"SMTP:{mail}"]


def filtered_objects(req, objects, resource, props):
    """The objects a $filter takes (all without one), as the users list
    reads it: a bad filter is the service's 400."""
    params = req.params
    if "filter" not in params:
        return list(objects)
    try:
        tree = ObjectFilterParser(params["filter"], resource, props).parse()
    except FilterError as exc:
        graph_fail(req, exc.status, exc.code, exc.message)
    return [o for o in objects if filter_match(tree, _Filtered(o))]


def object_list(req, kind, objects, view):
    """A contacts or groups list: $filter, $select, $top, $count (with
    ConsistencyLevel: eventual), one page."""
    version = req.group(1)
    check_params(req, {"select", "filter", "top", "count"})
    eventual, count = advanced_params(req)
    top = parse_top(req)
    found = filtered_objects(
        req, objects, "OrgContact" if kind == "contacts" else "Group",
        ORG_CONTACT_FILTER if kind == "contacts" else GROUP_FILTER)
    select = None
    if "select" in req.params:
        select = [p.strip() for p in req.params["select"].split(",")
                  if p.strip()]
    body = {"@odata.context": f"https://graph.microsoft.com/{version}/"
                              f"$metadata#{kind}"}
    if eventual and count:
        body["@odata.count"] = len(found)
    value = []
    for obj in found[:top]:
        full = view(obj, version)
        if select is not None:
            full = {k: v for k, v in full.items()
                    if k == "id" or k in select}
        value.append(full)
    body["value"] = value
    return graph_ok(req, body)


@route("graph", "GET", r"^/(v1\.0|beta)/contacts/?$")
def list_org_contacts(req):
    return object_list(req, "contacts", req.tenant.contacts.values(),
                       org_contact_view)


def group_view(group, version):
    props = group.props
    mail = props.get("mail")
    return {
        "id": group.id,
        "displayName": props.get("displayName"),
        "mail": mail,
        "mailEnabled": bool(props.get("mailEnabled", bool(mail))),
        "mailNickname": props.get("mailNickname"),
        "securityEnabled": bool(props.get("securityEnabled", False)),
        "groupTypes": list(props.get("groupTypes") or []),
        "proxyAddresses": list(props.get("proxyAddresses")
                               or ([f"SMTP:{mail}"] if mail else [])),
    }


@route("graph", "GET", r"^/(v1\.0|beta)/groups/?$")
def list_groups(req):
    return object_list(req, "groups", req.tenant.groups.values(), group_view)


@route("graph", "GET", r"^/(v1\.0|beta)/contacts/([^/]+)$")
def get_org_contact(req):
    version = req.group(1)
    contact = req.tenant.contacts.get(req.group(2).lower())
    if contact is None:
        graph_fail(req, 404, "Request_ResourceNotFound",
                   not_found_text(req.group(2)))
    body = {"@odata.context": f"https://graph.microsoft.com/{version}/"
                              f"$metadata#contacts/$entity"}
    body.update(org_contact_view(contact, version))
    return graph_ok(req, body)


# --------------------------------------------------------------------------
# admin: recipients (what Exchange lists)
# --------------------------------------------------------------------------

@route("admin", "GET", r"^/admin/tenants/([^/]+)/recipients$")
def admin_list_recipients(req):
    tenant = admin_tenant(req)
    return Response(200, {"value": [v for o, v in exo_objects(req, tenant)]})


# --------------------------------------------------------------------------
# admin (plain HTTP, JSON): used by tests to drive and inspect the cloud
# --------------------------------------------------------------------------

def admin_tenant(req):
    tenant = req.cloud.find_tenant(req.group(1))
    if tenant is None:
        admin_fail(404, f"no tenant {req.group(1)}")
    return tenant


def admin_user(req, tenant):
    user = tenant.users.get(req.group(2).lower())
    if user is None:
        admin_fail(404, f"no user {req.group(2)}")
    return user


def admin_object(req):
    body = req.json_body()
    if not isinstance(body, dict):
        admin_fail(400, "body must be a JSON object")
    return body


@route("admin", "GET", r"^/admin/health$")
def admin_health(req):
    return Response(200, {"status": "ok"})


@route("admin", "GET", r"^/admin/tls$")
def admin_tls(req):
    cloud = req.cloud
    names = ("login", "graph", "exchange")
    return Response(200, {
        "fault": cloud.tls_fault,
        "handshakes": {name: cloud.tls_handshakes[name] for name in names},
        "handshake_failures": {name: cloud.tls_failures[name]
                               for name in names}})


@route("admin", "POST", r"^/admin/reset$")
def admin_reset(req):
    req.cloud.reset()
    return Response(200, {"status": "ok"})


@route("admin", "POST", r"^/admin/seed$")
def admin_seed(req):
    try:
        ids = req.cloud.load_seed(req.json_body())
    except ValueError as exc:
        admin_fail(400, str(exc))
    return Response(200, {"tenants": ids})


@route("admin", "GET", r"^/admin/tenants$")
def admin_tenants(req):
    return Response(200, {"value": [
        {"id": t.id, "domain": t.domain, "apps": sorted(t.apps),
         "users": len(t.users), "groups": len(t.groups), "seq": t.seq}
        for t in req.cloud.tenants.values()]})


@route("admin", "GET", r"^/admin/tenants/([^/]+)/users$")
def admin_list_users(req):
    tenant = admin_tenant(req)
    return Response(200, {"value": [u.admin_view()
                                    for u in tenant.users.values()]})


@route("admin", "POST", r"^/admin/tenants/([^/]+)/users$")
def admin_create_user(req):
    tenant = admin_tenant(req)
    try:
        user = tenant.add_user(admin_object(req))
    except KeyError as exc:
        admin_fail(409, str(exc.args[0]))
    except ValueError as exc:
        admin_fail(400, str(exc))
    return Response(201, user.admin_view())


@route("admin", "GET", r"^/admin/tenants/([^/]+)/users/([^/]+)$")
def admin_get_user(req):
    return Response(200, admin_user(req, admin_tenant(req)).admin_view())


@route("admin", "PATCH", r"^/admin/tenants/([^/]+)/users/([^/]+)$")
def admin_patch_user(req):
    tenant = admin_tenant(req)
    user = admin_user(req, tenant)
    if user.deleted:
        admin_fail(404, f"user {user.id} is deleted")
    try:
        tenant.patch_user(user, admin_object(req))
    except ValueError as exc:
        admin_fail(400, str(exc))
    return Response(200, user.admin_view())


@route("admin", "DELETE", r"^/admin/tenants/([^/]+)/users/([^/]+)$")
def admin_delete_user(req):
    tenant = admin_tenant(req)
    user = admin_user(req, tenant)
    hard = req.params.get("hard", "").lower() in ("1", "true", "yes")
    if user.deleted == "hard" or (user.deleted == "soft" and not hard):
        admin_fail(404, f"user {user.id} is already deleted")
    tenant.delete_user(user, hard)
    return Response(204)


@route("admin", "POST", r"^/admin/tenants/([^/]+)/users/([^/]+)/restore$")
def admin_restore_user(req):
    tenant = admin_tenant(req)
    user = admin_user(req, tenant)
    if user.deleted != "soft":
        admin_fail(400, f"user {user.id} is not soft-deleted")
    tenant.restore_user(user)
    return Response(200, user.admin_view())


@route("admin", "GET", r"^/admin/tenants/([^/]+)/groups$")
def admin_list_groups(req):
    tenant = admin_tenant(req)
    return Response(200, {"value": [g.admin_view()
                                    for g in tenant.groups.values()]})


@route("admin", "POST", r"^/admin/tenants/([^/]+)/groups$")
def admin_create_group(req):
    tenant = admin_tenant(req)
    body = admin_object(req)
    try:
        tenant.check_members([str(m).lower()
                              for m in body.get("members", [])])
        group = req.cloud.add_group(tenant, body)
    except ValueError as exc:
        admin_fail(400, str(exc))
    return Response(201, group.admin_view())


@route("admin", "GET", r"^/admin/tenants/([^/]+)/groups/([^/]+)$")
def admin_get_group(req):
    tenant = admin_tenant(req)
    group = tenant.groups.get(req.group(2).lower())
    if group is None:
        admin_fail(404, f"no group {req.group(2)}")
    return Response(200, group.admin_view())


@route("admin", "PATCH", r"^/admin/tenants/([^/]+)/groups/([^/]+)$")
def admin_patch_group(req):
    tenant = admin_tenant(req)
    group = tenant.groups.get(req.group(2).lower())
    if group is None:
        admin_fail(404, f"no group {req.group(2)}")
    body = admin_object(req)
    lists = {}
    for name in ("members", "add", "remove"):
        if name in body:
            if not isinstance(body[name], list):
                admin_fail(400, f"'{name}' must be a list")
            lists[name] = [str(m).lower() for m in body[name]]
    try:
        tenant.check_members(lists.get("members", []) + lists.get("add", []))
    except ValueError as exc:
        admin_fail(400, str(exc))
    members = lists.get("members", group.members)
    members = members + [m for m in lists.get("add", [])
                         if m not in members]
    removed = set(lists.get("remove", []))
    group.members = [m for m in dict.fromkeys(members) if m not in removed]
    for name, value in body.items():
        if name not in ("id", "members", "add", "remove"):
            group.props[name] = value
    return Response(200, group.admin_view())


@route("admin", "GET", r"^/admin/tenants/([^/]+)/contacts$")
def admin_list_contacts(req):
    tenant = admin_tenant(req)
    return Response(200, {"value": [c.admin_view()
                                    for c in tenant.contacts.values()]})


@route("admin", "POST", r"^/admin/tenants/([^/]+)/contacts$")
def admin_create_contact(req):
    tenant = admin_tenant(req)
    try:
        contact = tenant.add_contact(admin_object(req))
    except KeyError as exc:
        admin_fail(409, str(exc.args[0]))
    except ValueError as exc:
        admin_fail(400, str(exc))
    return Response(201, contact.admin_view())


@route("admin", "DELETE", r"^/admin/tenants/([^/]+)/contacts/([^/]+)$")
def admin_delete_contact(req):
    tenant = admin_tenant(req)
    if tenant.contacts.pop(req.group(2).lower(), None) is None:
        admin_fail(404, f"no contact {req.group(2)}")
    return Response(204)


@route("admin", "GET", r"^/admin/tenants/([^/]+)/stats$")
def admin_stats(req):
    tenant = admin_tenant(req)
    stats = dict(tenant.stats)
    stats["exchange"] = dict(stats["exchange"])
    stats["exchange_in_progress"] = tenant.exo_in_progress
    stats["limits"] = limits_stats(tenant)
    return Response(200, stats)


@route("admin", "GET", r"^/admin/log$")
def admin_get_log(req):
    service = req.params.get("service")
    try:
        since = int(req.params.get("since", "0") or 0)
    except ValueError:
        admin_fail(400, "since must be an integer")
    return Response(200, {"value": [
        entry for entry in req.cloud.log
        if entry["seq"] > since and (not service
                                     or entry["service"] == service)]})


@route("admin", "DELETE", r"^/admin/log$")
def admin_clear_log(req):
    req.cloud.log.clear()
    return Response(204)


@route("admin", "GET", r"^/admin/knobs$")
def admin_get_knobs(req):
    return Response(200, dict(req.cloud.knobs))


@route("admin", "POST", r"^/admin/knobs$")
def admin_set_knobs(req):
    cloud = req.cloud
    body = admin_object(req)
    for name, value in body.items():
        knob = KNOBS.get(name)
        if knob is None:
            admin_fail(400, f"unknown knob '{name}'; known: "
                            f"{', '.join(sorted(KNOBS))}")
        if not knob.check(value):
            admin_fail(400, f"bad value for knob '{name}': {value!r} "
                            f"({knob.doc})")
    for name, value in body.items():
        cloud.knobs[name] = value
        if KNOBS[name].on_set is not None:
            KNOBS[name].on_set(cloud, value)
    return Response(200, dict(cloud.knobs))


# --------------------------------------------------------------------------
# Faults from the cloud (issue 6): Graph throttling storms, connection-level
# faults on Graph answers, the token endpoint going down, and a "foreign
# host" that records any bearer token sent to it.  Knobs here are added to
# KNOBS; inject_fault() calls request_fault() once per request, and
# Cloud.answer() calls response_fault() on the answer it built.  Handler
# sends a Response whose .fault is set with send_fault().
#
# State (Cloud.fault_state, reset with the cloud):
#   throttle windows per (tenant, service, client id): (sent, until) of each
#   429/503 with Retry-After; a request arriving after sent + GRACE and
#   before until is "early" (the grace covers requests already in flight
#   when the answer left);
#   per-tenant counters {"requests", "throttled", "early",
#   "connection_early"} (the last one: see "Throttling per connection");
#   the fault rules with what each has left;
#   requests that reached the foreign host.
# --------------------------------------------------------------------------

THROTTLE_GRACE_MS = 100         # default of the throttle_grace_ms knob
STALL_DEFAULT_MS = 70000        # longer than galbridge's 60 s timeout
OVERSIZE_DEFAULT = 64 * 1024 * 1024 + 64 * 1024   # over galbridge's cap
LOGIN_DOWN_RETRY_AFTER = 1      # seconds (guess: Entra documents none)

# Kinds decided before routing (no answer is built) and after it (the
# 2xx answer is altered or cut).
FAULT_KINDS_BEFORE = ("reset_before_response", "stall")
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
        self.early_examples = {}  # tenant id -> descriptions (see below)
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
    inner = {"date": graph_date(), "request-id": req.request_id,
             "client-request-id": req.client_request_id}
    if status == 429:
        # error-429-throttled.json: code, innerError, message, in order.
        body = {"error": {
            "code": "TooManyRequests",
            "innerError": {"code": "429", "date": inner["date"],
                           "message": "Please retry after",
                           "request-id": req.request_id, "status": "429"},
            "message": "Please retry again later."}}
    else:
        # errors.md: serviceNotAvailable, "may repeat the request after a
        # delay, the length of which may be specified in a Retry-After
        # header".
        body = {"error": {
            "code": "serviceNotAvailable",
            "message": "The service is temporarily unavailable. Please "
                       "retry after the time given in Retry-After.",
            "innerError": inner}}
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


@route("admin", "GET", r"^/admin/faults$")
def admin_faults(req):
    state = req.cloud.fault_state
    return Response(200, {
        "rules": [{k: v for k, v in rule.items()} for rule in state.rules],
        "foreign_requests": list(state.foreign),
        "foreign_url": "https://" + getattr(req.cloud, "foreign_netloc",
                                           "localhost:1"),
        "login_down_ms": max(0, int(1000 * (state.login_down_until
                                            - time.monotonic())))})


@route("admin", "POST", r"^/admin/graph/move$")
def admin_move_graph(req):
    """Graph moves to a new port, as a service does when its base URL
    changes: a new listener opens, the old one closes, and every link
    issued from now on names the new URL (links issued before keep their
    old URL, and still work on the new one: tokens and paging state are
    the cloud's).  Answers {"graph_url"}."""
    move = getattr(req.cloud, "move_graph", None)
    if move is None:
        admin_fail(409, "no listeners to move (not started by main())")
    return Response(200, {"graph_url": move()})


@route("admin", "GET", r"^/admin/tenants/([^/]+)/faults$")
def admin_tenant_faults(req):
    """Throttling counters of a tenant (all its clients and services):
    requests (Graph requests with a live token, $batch inner requests
    counted one by one), throttled (429/503 sent), early (sent before a
    Retry-After given to that client had elapsed, past the grace),
    connection_early (requests of that client that came on a connection
    after a throttled answer to it had been written there, before its
    Retry-After had passed: no grace, see "Throttling per connection")."""
    tenant = admin_tenant(req)
    state = req.cloud.fault_state
    counts = dict(state.tenant_counts(tenant.id))
    counts["grace_ms"] = req.cloud.knobs["throttle_grace_ms"]
    counts["early_examples"] = list(state.early_examples.get(tenant.id, []))
    counts["connection_early_examples"] = list(
        state.connection_examples.get(tenant.id, []))
    return Response(200, counts)


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


# --------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"       # keep-alive: every answer is sized
    server_version = "fakecloud"
    sys_version = ""
    timeout = 120
    # Without TCP_NODELAY, small answers on a kept-alive connection wait
    # for the client's delayed ACK (~40 ms each).
    disable_nagle_algorithm = True

    def do_GET(self):
        self.answer()

    do_POST = do_PATCH = do_DELETE = do_PUT = do_GET

    def body_max(self):
        # Seeds of large test tenants go through the admin API.
        return ADMIN_BODY_MAX if self.server.service == "admin" else BODY_MAX

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > self.body_max():
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.body_max():
            raise ValueError("body too large")
        return self.rfile.read(length) if length > 0 else b""

    def answer(self):
        server = self.server
        try:
            body = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self.send_error(400)
            return
        split = urllib.parse.urlsplit(self.path)
        host = self.headers.get("Host") or \
            f"127.0.0.1:{server.server_address[1]}"
        req = Request(server.cloud, server.service, self.command, split.path,
                      split.query, self.headers, body, host)
        # Which request of its connection this is (1: a new connection).
        self.served = getattr(self, "served", 0) + 1
        req.on_connection = self.served
        resp, payload = server.cloud.handle(req)
        connection_check(self, req)
        throttle_windows_sent(server.cloud, req)
        connection_throttled(self, req, resp)
        self.send_answer(resp, payload)

    def send_answer(self, resp, payload):
        if getattr(resp, "fault", None) is not None:
            send_fault(self, resp, payload)
            return
        if resp.drop:
            self.close_connection = True
            return
        self.send_response(resp.status)
        headers = dict(resp.headers)
        if payload and "Content-Type" not in headers:
            headers["Content-Type"] = resp.content_type
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):
        pass                              # Cloud.handle logs (--verbose)


class Listener(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, port, service, cloud, tls=None):
        self.service = service
        self.cloud = cloud
        self.tls = tls
        super().__init__(("127.0.0.1", port), Handler)

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, in the connection's own thread, so
        # a slow client cannot stall accept().
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(Handler.timeout)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (OSError, ValueError):
            with self.cloud.lock:
                self.cloud.tls_failures[self.service] += 1
            return
        with self.cloud.lock:
            self.cloud.tls_handshakes[self.service] += 1
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        if self.cloud.verbose:
            traceback.print_exc(file=sys.stderr)

    @property
    def url(self):
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}"


TLS_FAULTS = ("unknown-ca", "wrong-host", "expired")


def make_ca(now, common_name):
    """A self-signed CA: (key, certificate)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                            common_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(
            ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256()))
    return ca_key, ca_cert


def make_server_cert(ca_key, ca_cert, now, fault=None):
    """A server certificate signed by the CA: for 127.0.0.1 and localhost,
    valid now, unless fault says otherwise.  Returns (key, certificate)."""
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
             x509.DNSName("localhost")]
    common_name = "127.0.0.1"
    not_before = now - datetime.timedelta(hours=1)
    not_after = now + datetime.timedelta(days=30)
    if fault == "wrong-host":
        names = [x509.DNSName("wrong-host.invalid")]
        common_name = "wrong-host.invalid"
    elif fault == "expired":
        not_before = now - datetime.timedelta(days=30)
        not_after = now - datetime.timedelta(days=1)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                    common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(names), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                       True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256()))
    return key, cert


def server_context(directory, stem, key, cert):
    """Write DIR/STEM.pem and DIR/STEM.key; the server SSLContext."""
    pem = serialization.Encoding.PEM
    cert_file = os.path.join(directory, stem + ".pem")
    key_file = os.path.join(directory, stem + ".key")
    with open(cert_file, "wb") as f:
        f.write(cert.public_bytes(pem))
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def make_tls(directory, fault=None):
    """A throw-away CA (DIR/ca.pem) and a server certificate for 127.0.0.1
    and localhost signed by it; returns the server's SSLContext.  With a
    fault (one of TLS_FAULTS) it returns (good context, bad context): the
    bad one serves a certificate that a client trusting only ca.pem must
    refuse."""
    now = utcnow()
    ca_key, ca_cert = make_ca(now, "fakecloud test CA")
    with open(os.path.join(directory, "ca.pem"), "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    good = server_context(directory, "server",
                          *make_server_cert(ca_key, ca_cert, now))
    if fault is None:
        return good
    if fault not in TLS_FAULTS:
        raise ValueError(f"unknown TLS fault {fault!r}")
    if fault == "unknown-ca":
        ca_key, ca_cert = make_ca(now, "fakecloud rogue CA")
    bad = server_context(directory, "server-" + fault,
                         *make_server_cert(ca_key, ca_cert, now, fault))
    return good, bad


def write_json_atomic(path, data):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True,
                        help="directory for ca.pem and ready.json")
    parser.add_argument("--seed", help="seed JSON file loaded at start")
    parser.add_argument("--admin-port", type=int, default=0)
    parser.add_argument("--verbose", action="store_true",
                        help="one line per request on stderr")
    parser.add_argument("--record-raw", action="store_true",
                        default=os.environ.get("FAKECLOUD_RECORD_RAW") == "1",
                        help="keep raw request headers and bodies in the "
                             "request log")
    parser.add_argument("--tls-fault", choices=TLS_FAULTS,
                        default=os.environ.get("FAKECLOUD_TLS_FAULT") or None,
                        help="serve a certificate a client must refuse")
    parser.add_argument("--tls-fault-on",
                        default=os.environ.get("FAKECLOUD_TLS_FAULT_ON")
                        or "login,graph,exchange",
                        help="listeners with the bad certificate")
    args = parser.parse_args(argv)
    fault_on = [n.strip() for n in args.tls_fault_on.split(",") if n.strip()]
    if any(n not in ("login", "graph", "exchange") for n in fault_on):
        parser.error("--tls-fault-on takes login, graph and/or exchange")

    directory = os.path.abspath(args.dir)
    os.makedirs(directory, exist_ok=True)
    ready = os.path.join(directory, "ready.json")
    if os.path.exists(ready):
        os.unlink(ready)
    cloud = Cloud(verbose=args.verbose)
    cloud.record_raw = args.record_raw
    cloud.tls_fault = args.tls_fault
    if args.seed:
        with open(args.seed, encoding="utf-8") as f:
            cloud.load_seed(json.load(f))
    tls = {}
    if args.tls_fault is None:
        good = make_tls(directory)
    else:
        good, bad = make_tls(directory, args.tls_fault)
        tls = {name: bad for name in fault_on}

    listeners = {
        "login": Listener(0, "login", cloud, tls.get("login", good)),
        "graph": Listener(0, "graph", cloud, tls.get("graph", good)),
        "exchange": Listener(0, "exchange", cloud,
                             tls.get("exchange", good)),
        "admin": Listener(args.admin_port, "admin", cloud),
        "foreign": Listener(0, "foreign", cloud, good),  # fault tests
    }
    cloud.login_url = listeners["login"].url
    cloud.graph_url = listeners["graph"].url
    cloud.exchange_url = listeners["exchange"].url
    cloud.admin_url = listeners["admin"].url
    cloud.foreign_netloc = \
        f"localhost:{listeners['foreign'].server_address[1]}"
    def serve(name, server):
        thread = threading.Thread(target=server.serve_forever,
                                  kwargs={"poll_interval": 0.1},
                                  name=f"fakecloud-{name}", daemon=True)
        thread.start()

    def move_graph():
        # Called with cloud.lock held (an admin request).
        old = listeners["graph"]
        new = Listener(0, "graph", cloud, old.tls)
        listeners["graph"] = new
        cloud.graph_url = new.url
        serve("graph", new)

        def close_old():
            old.shutdown()
            old.server_close()
        threading.Thread(target=close_old, daemon=True).start()
        return cloud.graph_url

    cloud.move_graph = move_graph
    for name, server in listeners.items():
        serve(name, server)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    write_json_atomic(ready, {
        "pid": os.getpid(),
        "ca_file": os.path.join(directory, "ca.pem"),
        "login_url": cloud.login_url,
        "graph_url": cloud.graph_url,
        "exchange_url": cloud.exchange_url,
        "admin_url": cloud.admin_url,
    })
    while not stop.wait(0.5):
        pass
    for server in listeners.values():
        server.shutdown()
        server.server_close()
    try:
        os.unlink(ready)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
