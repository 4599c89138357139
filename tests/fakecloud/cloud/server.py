"""The server: routing, the cloud's state and the HTTP plumbing.

dispatch() answers one request: fault injection, then (Graph) the token
and the limits, then the first route of wire.ROUTES that matches.  Cloud
holds all state (tenants, tokens, paging links, knobs, the request log,
the fault state) under one lock: a handler runs with the lock held and
its answer is serialised before the lock is released, so handlers never
copy state.  Handler and Listener serve HTTP/1.1 with keep-alive, over
TLS (login, graph, exchange, the foreign host) or plain (admin).
"""

import collections
import http.server
import random
import secrets
import sys
import threading
import time
import traceback
import urllib.parse

from .directory import App, Group, Link, Tenant, Token, object_id
from .exchange import exo_enter
from .mailbox import admin_apply, admin_changes
from .orgconfig import seed_org
from .policy import seed_policy
from .faults import FaultState, inject_fault, response_fault, send_fault
from .graph import graph_authenticate
from .knobs import KNOBS, count_stat
from .limits import (connection_check, connection_throttled, limits_admit,
                     limits_headers, throttle_windows_sent)
from .users import graph_request_kind
from .wire import (ROUTES, Reply, Request, Response, aad_error_response,
                   admin_error, graph_error, internal_error, iso_ms)


LOG_MAX = 200000          # request log entries kept (oldest dropped)
LINKS_MAX = 50000         # paging links (skip/delta tokens) kept
BODY_MAX = 16 * 1024 * 1024
ADMIN_BODY_MAX = 512 * 1024 * 1024


# -- routing ---------------------------------------------------------------

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


# -- state -----------------------------------------------------------------

def seed_user(tenant, data):
    """A seed's user: Graph properties, and under "mailbox" its
    Exchange-only data (the admin API's mailbox fields).  ValueError."""
    box = None
    if isinstance(data, dict) and "mailbox" in data:
        data = dict(data)
        box = admin_changes(data.pop("mailbox"))
    try:
        user = tenant.add_user(data)
    except KeyError as exc:
        raise ValueError(str(exc)) from None
    if box is not None:
        admin_apply(user, box)
        if "WhenChangedUTC" in box:
            user.changed_at = box["WhenChangedUTC"]


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
                seed_user(tenant, user)
            seed_org(tenant, spec)
            seed_policy(tenant, spec.get("crossTenantAccess"))
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
        gid = object_id(data, "group")
        if gid in tenant.groups:
            raise ValueError(f"group {gid} already exists")
        props = {k: v for k, v in data.items() if k not in ("id", "members")}
        props.setdefault("displayName", gid)
        members = [str(m).lower() for m in data.get("members", [])]
        group = Group(gid, props, members, tenant.bump())
        tenant.deleted_groups.pop(gid, None)
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

    def log_request(self, req, resp):
        """Append req and its answer to the request log (under the lock).
        An inner request of a $batch names its batch id ("batch") and is
        never recorded raw."""
        self.log_seq += 1
        now = time.time()
        tenant = req.tenant.id if req.tenant is not None else None
        entry = {
            "seq": self.log_seq, "time": iso_ms(now),
            "service": req.service, "method": req.method,
            "path": req.path, "query": req.query, "status": resp.status,
            "tenant": tenant, "client_id": req.client_id}
        if req.batch_id is not None:
            entry["batch"] = req.batch_id
        elif self.record_raw and req.service != "admin":
            entry["headers"] = [[k, v] for k, v in req.headers.items()]
            entry["body"] = req.body.decode("utf-8", "replace")
        self.log.append(entry)

    def answer(self, req, early=None):
        with self.lock:
            try:
                resp = early if early is not None else dispatch(req)
                resp = response_fault(req, resp)
            except Reply as reply:
                resp = reply.response
            except Exception:      # a bug here must not kill the listener
                resp = internal_error()
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
            self.log_request(req, resp)
        if self.verbose:
            query = "?" + req.query if req.query else ""
            print(f"fakecloud: {req.service} {req.method} {req.path}{query}"
                  f" -> {resp.status}", file=sys.stderr, flush=True)
        return resp, payload


# -- HTTP plumbing ---------------------------------------------------------

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
