#!/usr/bin/python3
"""fakecloud: a fake Microsoft cloud for galbridge's tests and demo.

Run:  /usr/bin/python3 tests/fakecloud/fakecloud.py --dir DIR
          [--seed FILE.json] [--admin-port N] [--verbose]

At start it makes a throw-away CA and a server certificate for 127.0.0.1 /
localhost, writes DIR/ca.pem, listens with TLS on three ephemeral ports
(login = Microsoft identity platform token endpoint, graph = Microsoft Graph,
exchange = the Exchange Online admin API) and on one plain-HTTP admin port,
then writes DIR/ready.json atomically:

  {"pid", "ca_file", "login_url", "graph_url", "exchange_url", "admin_url"}

SIGTERM / SIGINT stop it cleanly (exit 0, ready.json removed).

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
import http.server
import ipaddress
import json
import os
import random
import re
import secrets
import signal
import ssl
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
}


def inject_fault(req):
    """The one place where injected faults (429/503 with Retry-After,
    dropped connections, delays) will be decided from req.cloud.knobs.
    Returns a Response to send instead of the real answer, or None."""
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
        return json.dumps(self.body, ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8")


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
        self.match = None
        self.tenant = None          # Tenant the request acts on, if known
        self.client_id = None
        self.token = None
        self.request_id = str(uuid.uuid4())
        self.client_request_id = (headers.get("client-request-id")
                                  or self.request_id)
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
                 "deleted_seq", "restored_seq")

    def __init__(self, uid, props, seq):
        self.id = uid
        self.props = dict(props)
        self.prop_seq = {name: seq for name in props}
        self.created_seq = seq
        self.deleted = None          # None | "soft" | "hard"
        self.deleted_seq = 0
        self.restored_seq = 0

    def admin_view(self):
        view = {"id": self.id}
        view.update(self.props)
        view["deleted"] = self.deleted
        return view


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
        self.extra_props = set()
        self.exo_window = (0, 0)     # (minute, requests) for Rate-Limit-*

    def bump(self):
        self.seq += 1
        return self.seq

    def user_defaults(self, data):
        props = {k: v for k, v in data.items() if k != "id"}
        props.setdefault("userType", "Member")
        props.setdefault("accountEnabled", True)
        props.setdefault("creationType", None)
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
        return user

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

    def delete_user(self, user, hard):
        user.deleted = "hard" if hard else "soft"
        user.deleted_seq = self.bump()
        if hard:
            for group in self.groups.values():
                if user.id in group.members:
                    group.members.remove(user.id)

    def restore_user(self, user):
        user.deleted = None
        user.restored_seq = self.bump()

    def find_user(self, key):
        """Live user by id or userPrincipalName, else None."""
        key = key.lower()
        user = self.users.get(key)
        if user is None:
            for candidate in self.users.values():
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
        self.reset()

    def reset(self):
        self.tenants = {}
        self.knobs = {name: knob.default for name, knob in KNOBS.items()}
        self.tokens = {}
        self.token_serial = 0
        self.revoke_cut = 0
        self.links = collections.OrderedDict()
        self.link_gen = 0
        self.expire_cut = -1
        self.log = collections.deque(maxlen=LOG_MAX)

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
        if req.service != "admin":
            with self.lock:
                latency = self.knobs["latency_ms"]
            if latency:
                time.sleep(latency / 1000.0)
        with self.lock:
            try:
                resp = dispatch(req)
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
            payload = resp.encode()
            self.log_seq += 1
            now = time.time()
            tenant = req.tenant.id if req.tenant is not None else None
            self.log.append({
                "seq": self.log_seq, "time": iso_ms(now),
                "service": req.service, "method": req.method,
                "path": req.path, "query": req.query, "status": resp.status,
                "tenant": tenant, "client_id": req.client_id})
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


@route("graph", "GET", r"^/v1\.0/users/([^/]+)$")
def get_user(req):
    check_params(req, {"select"})
    user = req.tenant.find_user(req.group(1))
    if user is None:
        graph_fail(req, 404, "Request_ResourceNotFound",
                   f"Resource '{req.group(1)}' does not exist or one of its "
                   f"queried reference-property objects are not present.")
    context = f"{req.cloud.graph_url}/v1.0/$metadata#users"
    if "select" in req.params:
        select = parse_user_select(req, req.params["select"])
        context += select_suffix(select)
    else:
        select = DEFAULT_USER_SELECT
    body = {"@odata.context": context + "/$entity"}
    body.update(object_view(user.props, select, user.id))
    return graph_ok(req, body)


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
# exchange: POST /adminapi/beta/{tenant}/InvokeCommand
# --------------------------------------------------------------------------

CMDLETS = {}


def cmdlet(name):
    """Register fn(req, tenant, parameters) -> (list of result objects,
    list of warnings) for a cmdlet (names are case-insensitive)."""
    def register(fn):
        CMDLETS[name.lower()] = fn
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


@route("exchange", "POST", r"^/adminapi/beta/([^/]+)/InvokeCommand$")
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
    headers = {"Content-Type": EXO_JSON}
    headers.update(exo_rate_headers(tenant))
    return Response(200, body, headers)


def exo_check_params(params, allowed):
    for name in params:
        if name.lower() not in allowed:
            raise Reply(exo_error(
                400, "BadRequest", "ExB3C4D5",
                "System.Management.Automation.ParameterBindingException",
                f"A parameter cannot be found that matches parameter name "
                f"'{name}'."))


def user_recipient(user):
    """A mail-enabled directory user as Get-Recipient shows it."""
    props = user.props
    mail = props.get("mail")
    guest = props.get("userType") == "Guest"
    ext = props.get("onPremisesExtensionAttributes") or {}
    addresses = list(props.get("proxyAddresses") or []) or [f"SMTP:{mail}"]
    hidden = props.get("showInAddressList")
    recipient = {
        "Identity": user.id,
        "Name": user.id,
        "Alias": props.get("mailNickname") or mail.split("@")[0],
        "DisplayName": props.get("displayName"),
        "FirstName": props.get("givenName") or "",
        "LastName": props.get("surname") or "",
        "Company": props.get("companyName") or "",
        "Department": props.get("department") or "",
        "Title": props.get("jobTitle") or "",
        "Office": props.get("officeLocation") or "",
        "City": props.get("city") or "",
        "StateOrProvince": props.get("state") or "",
        "PostalCode": props.get("postalCode") or "",
        "CountryOrRegion": props.get("country") or "",
        "Phone": (props.get("businessPhones") or [""])[0],
        "PrimarySmtpAddress": mail,
        "EmailAddresses@odata.type": "#Collection(String)",
        "EmailAddresses": addresses,
        "ExternalEmailAddress": f"SMTP:{mail}" if guest else None,
        "ExternalDirectoryObjectId": user.id,
        "RecipientType": "MailUser" if guest else "UserMailbox",
        "RecipientTypeDetails": "GuestMailUser" if guest else "UserMailbox",
        # Guests are hidden from the GAL by default (MICROSOFT.md).
        "HiddenFromAddressListsEnabled": (hidden is False) if not guest
        else hidden is not True,
    }
    for n in range(1, 16):
        recipient[f"CustomAttribute{n}"] = ext.get(f"extensionAttribute{n}") \
            or ""
    return recipient


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
                              "resultsize"})
    lowered = {k.lower(): v for k, v in params.items()}
    recipients = [user_recipient(u) for u in tenant.users.values()
                  if not u.deleted and u.props.get("mail")]
    identity = lowered.get("identity")
    if identity is not None:
        recipients = [r for r in recipients
                      if recipient_matches(r, str(identity))]
        if not recipients:
            raise Reply(exo_error(
                404, "NotFound", "Ex6F9304",
                "Microsoft.Exchange.Configuration.Tasks."
                "ManagementObjectNotFoundException",
                f"The operation couldn't be performed because object "
                f"'{identity}' couldn't be found on '{EXO_SERVER}'."))
    kinds = lowered.get("recipienttypedetails")
    if kinds is not None:
        if isinstance(kinds, str):
            kinds = kinds.split(",")
        wanted = {str(k).strip().lower() for k in kinds}
        recipients = [r for r in recipients
                      if r["RecipientTypeDetails"].lower() in wanted]
    size = lowered.get("resultsize", 1000)
    warnings = []
    if str(size).lower() != "unlimited":
        try:
            size = int(size)
        except (TypeError, ValueError):
            size = 1000
        if len(recipients) > size:
            recipients = recipients[:size]
            warnings.append("There are more results available than are "
                            "currently displayed. To view them, increase "
                            "the value for the ResultSize parameter.")
    return recipients, warnings


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
        resp, payload = server.cloud.handle(req)
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
            return
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


def make_tls(directory):
    """A throw-away CA (DIR/ca.pem) and a server certificate for 127.0.0.1
    and localhost signed by it; returns the server's SSLContext."""
    now = utcnow()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                            "fakecloud test CA")])
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
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                    "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName("localhost")]), False)
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

    pem = serialization.Encoding.PEM
    with open(os.path.join(directory, "ca.pem"), "wb") as f:
        f.write(ca_cert.public_bytes(pem))
    cert_file = os.path.join(directory, "server.pem")
    key_file = os.path.join(directory, "server.key")
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
    args = parser.parse_args(argv)

    directory = os.path.abspath(args.dir)
    os.makedirs(directory, exist_ok=True)
    ready = os.path.join(directory, "ready.json")
    if os.path.exists(ready):
        os.unlink(ready)
    cloud = Cloud(verbose=args.verbose)
    if args.seed:
        with open(args.seed, encoding="utf-8") as f:
            cloud.load_seed(json.load(f))
    tls = make_tls(directory)

    listeners = {
        "login": Listener(0, "login", cloud, tls),
        "graph": Listener(0, "graph", cloud, tls),
        "exchange": Listener(0, "exchange", cloud, tls),
        "admin": Listener(args.admin_port, "admin", cloud),
    }
    cloud.login_url = listeners["login"].url
    cloud.graph_url = listeners["graph"].url
    cloud.exchange_url = listeners["exchange"].url
    cloud.admin_url = listeners["admin"].url
    threads = [threading.Thread(target=server.serve_forever,
                                kwargs={"poll_interval": 0.1},
                                name=f"fakecloud-{name}", daemon=True)
               for name, server in listeners.items()]
    for thread in threads:
        thread.start()

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
