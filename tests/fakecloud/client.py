"""Drive fakecloud from Python tests: start and stop it, call its admin API
(plain HTTP, urllib), and talk TLS to its login/graph/exchange listeners
with the CA it generated.

    from client import FakeCloud, make_certificate, make_client_assertion
    with FakeCloud().start(tmpdir, seed={"tenants": [...]}) as fc:
        fc.create_user(tenant_id, {"displayName": "Ada"})
        reply = fc.get_token(tenant_id, client_id, secret="s3cret")
        fc.request("GET", fc.graph_url + "/v1.0/users/delta",
                   headers={"Authorization": "Bearer " + reply.json()[
                       "access_token"]})

Only the standard library and python3-cryptography (Debian) are used.
"""

import base64
import datetime
import hashlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

FAKECLOUD = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         "fakecloud.py")
PYTHON = "/usr/bin/python3"
POLL_INTERVAL = 0.02
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
EXCHANGE_SCOPE = "https://outlook.office365.com/.default"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class FakeCloudError(Exception):
    """An admin call answered with a status other than 2xx."""

    def __init__(self, status, body):
        super().__init__(f"fakecloud admin answered {status}: {body!r}")
        self.status = status
        self.body = body


class HttpReply:
    """status, headers (case-insensitive get), body bytes, json()."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def header(self, name):
        return self.headers.get(name)


def wait_for(predicate, timeout=10.0, interval=POLL_INTERVAL,
             what="condition"):
    """Poll predicate() until it returns something truthy; return that.
    Raises TimeoutError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for "
                               f"{what}")
        time.sleep(interval)


class FakeCloud:
    """One fakecloud process.  After start(): dir, pid, ca_file, login_url,
    graph_url, exchange_url, admin_url (the keys of ready.json)."""

    def __init__(self):
        self.proc = None
        self.dir = None
        self.pid = None
        self.ca_file = None
        self.login_url = self.graph_url = None
        self.exchange_url = self.admin_url = None
        self._ssl = None
        self._conns = {}

    # -- process ------------------------------------------------------------

    def start(self, directory, seed=None, admin_port=None, timeout=30.0,
              verbose=False, log=None):
        """Start fakecloud in directory and wait (up to timeout seconds)
        for its ready.json.  seed: a dict (written to DIR/seed.json) or a
        path to a seed file.  log: a file for fakecloud's stdout and
        stderr (else it shares ours), for a fakecloud meant to outlive
        this process.  Returns self."""
        self.dir = os.path.abspath(directory)
        os.makedirs(self.dir, exist_ok=True)
        ready = os.path.join(self.dir, "ready.json")
        if os.path.exists(ready):
            os.unlink(ready)
        cmd = [PYTHON, FAKECLOUD, "--dir", self.dir]
        if isinstance(seed, dict):
            seed_file = os.path.join(self.dir, "seed.json")
            with open(seed_file, "w", encoding="utf-8") as f:
                json.dump(seed, f)
            cmd += ["--seed", seed_file]
        elif seed is not None:
            cmd += ["--seed", os.fspath(seed)]
        if admin_port:
            cmd += ["--admin-port", str(admin_port)]
        if verbose:
            cmd.append("--verbose")
        if log is None:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        else:
            with open(log, "ab") as out:
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                             stdout=out,
                                             stderr=subprocess.STDOUT)

        def is_ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"fakecloud exited with status "
                                   f"{self.proc.returncode} before ready")
            if not os.path.exists(ready):
                return None
            with open(ready, encoding="utf-8") as f:
                info = json.load(f)
            return info if info.get("pid") == self.proc.pid else None

        try:
            info = wait_for(is_ready, timeout, what="fakecloud ready.json")
        except BaseException:
            self.stop()
            raise
        self.pid = info["pid"]
        self.ca_file = info["ca_file"]
        self.login_url = info["login_url"]
        self.graph_url = info["graph_url"]
        self.exchange_url = info["exchange_url"]
        self.admin_url = info["admin_url"]
        return self

    def stop(self, timeout=10.0):
        """SIGTERM, wait, SIGKILL if needed.  Returns the exit status."""
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- admin API ----------------------------------------------------------

    def _admin(self, method, path, body=None, query=None):
        url = self.admin_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                detail = json.loads(raw)
            except ValueError:
                detail = raw
            raise FakeCloudError(err.code, detail) from None
        return json.loads(raw) if raw else None

    @staticmethod
    def _q(value):
        return urllib.parse.quote(str(value), safe="")

    def health(self):
        return self._admin("GET", "/admin/health")

    def reset(self):
        """Drop all tenants, the request log, knobs and tokens."""
        return self._admin("POST", "/admin/reset")

    def seed(self, seed):
        """Add or replace the tenants of a seed dict; returns their ids."""
        return self._admin("POST", "/admin/seed", seed)["tenants"]

    def tenants(self):
        return self._admin("GET", "/admin/tenants")["value"]

    def users(self, tenant):
        """Every user, deleted ones too ("deleted": "soft"|"hard"|None)."""
        return self._admin("GET", f"/admin/tenants/{self._q(tenant)}/users"
                           )["value"]

    def user(self, tenant, user_id):
        return self._admin("GET", f"/admin/tenants/{self._q(tenant)}/users/"
                                  f"{self._q(user_id)}")

    def create_user(self, tenant, user):
        return self._admin("POST", f"/admin/tenants/{self._q(tenant)}/users",
                           user)

    def patch_user(self, tenant, user_id, props):
        """Set properties; None clears one."""
        return self._admin("PATCH", f"/admin/tenants/{self._q(tenant)}/users/"
                                    f"{self._q(user_id)}", props)

    def manager(self, tenant, object_id, kind="users"):
        """The manager id of a user (kind "users") or org contact
        ("contacts"), or None."""
        return self._admin("GET", f"/admin/tenants/{self._q(tenant)}/{kind}/"
                                  f"{self._q(object_id)}/manager")["manager"]

    def set_manager(self, tenant, object_id, manager_id, kind="users"):
        """Set a user's (or contact's) manager to any id, None clears it;
        a user's change shows in users/delta as manager@delta."""
        return self._admin("PUT", f"/admin/tenants/{self._q(tenant)}/{kind}/"
                                  f"{self._q(object_id)}/manager",
                           {"manager": manager_id})["manager"]

    def delete_user(self, tenant, user_id, hard=False):
        return self._admin("DELETE", f"/admin/tenants/{self._q(tenant)}/"
                                     f"users/{self._q(user_id)}",
                           query={"hard": "1"} if hard else None)

    def restore_user(self, tenant, user_id):
        return self._admin("POST", f"/admin/tenants/{self._q(tenant)}/users/"
                                   f"{self._q(user_id)}/restore")

    def set_photo(self, tenant, user_id, data, content_type="image/jpeg"):
        """Give a user a profile photo (bytes); returns its admin view
        (contentType, etag, size, data as base64)."""
        return self._admin(
            "PUT", f"/admin/tenants/{self._q(tenant)}/users/"
            f"{self._q(user_id)}/photo",
            {"data": base64.b64encode(data).decode("ascii"),
             "contentType": content_type})

    def photo(self, tenant, user_id):
        """A user's photo as {"contentType", "etag", "size", "bytes"}, or
        None when it has none."""
        try:
            view = self._admin("GET", f"/admin/tenants/{self._q(tenant)}/"
                               f"users/{self._q(user_id)}/photo")
        except FakeCloudError as err:
            if err.status == 404:
                return None
            raise
        view["bytes"] = base64.b64decode(view.pop("data"))
        return view

    def delete_photo(self, tenant, user_id):
        self._admin("DELETE", f"/admin/tenants/{self._q(tenant)}/users/"
                    f"{self._q(user_id)}/photo")

    def groups(self, tenant):
        return self._admin("GET", f"/admin/tenants/{self._q(tenant)}/groups"
                           )["value"]

    def group(self, tenant, group_id):
        return self._admin("GET", f"/admin/tenants/{self._q(tenant)}/groups/"
                                  f"{self._q(group_id)}")

    def create_group(self, tenant, group):
        return self._admin("POST", f"/admin/tenants/{self._q(tenant)}/groups",
                           group)

    def patch_group(self, tenant, group_id, members=None, add=None,
                    remove=None, **props):
        """members replaces the list; add/remove edit it."""
        body = dict(props)
        for name, value in (("members", members), ("add", add),
                            ("remove", remove)):
            if value is not None:
                body[name] = list(value)
        return self._admin("PATCH", f"/admin/tenants/{self._q(tenant)}/"
                                    f"groups/{self._q(group_id)}", body)

    def delete_group(self, tenant, group_id):
        """Gone at once; groups/delta reports it removed ("changed" for a
        Microsoft 365 group, "deleted" for the others)."""
        return self._admin("DELETE", f"/admin/tenants/{self._q(tenant)}/"
                                     f"groups/{self._q(group_id)}")

    def contacts(self, tenant):
        """Org contacts (addresses held outside users and groups)."""
        return self._admin("GET", f"/admin/tenants/{self._q(tenant)}/"
                                  f"contacts")["value"]

    def create_contact(self, tenant, contact):
        """contact: {"id"?, "displayName"?, "mail", "proxyAddresses"?};
        proxyAddresses defaults to ["SMTP:<mail>"].  Returns it."""
        return self._admin("POST", f"/admin/tenants/{self._q(tenant)}/"
                                   f"contacts", contact)

    def delete_contact(self, tenant, contact_id):
        return self._admin("DELETE", f"/admin/tenants/{self._q(tenant)}/"
                                     f"contacts/{self._q(contact_id)}")

    def recipients(self, tenant):
        """Every recipient Exchange lists for the tenant (mailboxes, mail
        users, guests once provisioned, mail contacts, mail-enabled
        groups), in the Get-Recipient shape."""
        return self._admin("GET", f"/admin/tenants/{self._q(tenant)}/"
                                  f"recipients")["value"]

    def stats(self, tenant):
        """Graph requests of the tenant by kind, answered or refused:
        {"invitations", "patches", "deletes", "restores", "reads"}, plus
        "exchange": {cmdlet name: InvokeCommand calls} and
        "exchange_in_progress" (Exchange requests being answered now)."""
        return self._admin("GET", f"/admin/tenants/{self._q(tenant)}/stats")

    def log(self, service=None, since=None):
        query = {}
        if service:
            query["service"] = service
        if since is not None:
            query["since"] = since
        return self._admin("GET", "/admin/log", query=query)["value"]

    def clear_log(self):
        return self._admin("DELETE", "/admin/log")

    def knobs(self):
        return self._admin("GET", "/admin/knobs")

    def set_knobs(self, **knobs):
        return self._admin("POST", "/admin/knobs", knobs)

    def move_graph(self):
        """Graph moves to a new port (its base URL changes; the old port
        closes).  Updates and returns graph_url."""
        self.graph_url = self._admin("POST", "/admin/graph/move")[
            "graph_url"]
        return self.graph_url

    # -- mailbox migration (issue 16) -----------------------------------------

    def mailbox(self, tenant, user):
        """A user's Exchange-only data (user id or UPN): ExchangeGuid,
        ArchiveGuid, ArchiveStatus, LegacyExchangeDN, x500, the hold
        flags, InPlaceHolds, PersistedCapabilities, IsDirSynced,
        PreviousRecipientTypeDetails, SKUAssigned, RecipientTypeDetails,
        WhenChanged(UTC)."""
        return self._admin("GET", f"/admin/tenants/{self._q(tenant)}/"
                                  f"mailboxes/{self._q(user)}")

    def patch_mailbox(self, tenant, user, **fields):
        """Set any of archive (bool), x500 (list, replaces),
        LitigationHoldEnabled, DelayHoldApplied, DelayReleaseHoldApplied,
        ComplianceTagHoldApplied, IsDirSynced, SKUAssigned (bools; true
        SKUAssigned licenses the user), InPlaceHolds,
        PersistedCapabilities (lists), PreviousRecipientTypeDetails,
        WhenChangedUTC (ISO 8601).  Returns the data."""
        return self._admin("PATCH", f"/admin/tenants/{self._q(tenant)}/"
                                    f"mailboxes/{self._q(user)}", fields)

    def move_mailbox(self, source_tenant, source_user, target_tenant,
                     target_user):
        """A cross-tenant move, MRS's checks first.  Returns {"source",
        "target"} (their data after the move); a refusal raises
        FakeCloudError 409 whose body has "exception" and "message"."""
        return self._admin("POST", "/admin/move-mailbox", {
            "source_tenant": source_tenant, "source_user": source_user,
            "target_tenant": target_tenant, "target_user": target_user})

    def accepted_domains(self, tenant):
        """The tenant's accepted domains (Get-AcceptedDomain's shape)."""
        return self._admin("GET", f"/admin/tenants/{self._q(tenant)}/"
                                  f"accepted-domains")["value"]

    def add_accepted_domain(self, tenant, domain, default=False):
        """One more accepted domain (Authoritative); default=True makes
        it the default one."""
        return self._admin("POST", f"/admin/tenants/{self._q(tenant)}/"
                                   f"accepted-domains",
                           {"DomainName": domain, "Default": default})

    def organization_relationships(self, tenant):
        return self._admin("GET", f"/admin/tenants/{self._q(tenant)}/"
                                  f"organization-relationships")["value"]

    def add_organization_relationship(self, tenant, relationship):
        """relationship: {"Name", "DomainNames" (tenant ids), "Enabled"?,
        "MailboxMoveEnabled"?, "MailboxMoveCapability"? ("Inbound",
        "RemoteOutbound", "Inbound, RemoteOutbound"…),
        "OAuthApplicationId"?, "MailboxMovePublishedScopes"? (group
        names)}."""
        return self._admin("POST", f"/admin/tenants/{self._q(tenant)}/"
                                   f"organization-relationships",
                           relationship)

    def migration_endpoints(self, tenant):
        return self._admin("GET", f"/admin/tenants/{self._q(tenant)}/"
                                  f"migration-endpoints")["value"]

    def add_migration_endpoint(self, tenant, endpoint):
        """endpoint: {"Name", "RemoteTenant" (the source's domain),
        "ApplicationId", "RemoteServer"? (outlook.office.com),
        "EndpointType"? (ExchangeRemoteMove)}."""
        return self._admin("POST", f"/admin/tenants/{self._q(tenant)}/"
                                   f"migration-endpoints", endpoint)

    def set_organization_config(self, tenant, is_dehydrated):
        """Get-OrganizationConfig's IsDehydrated."""
        return self._admin("PATCH", f"/admin/tenants/{self._q(tenant)}/"
                                    f"organization-config",
                           {"IsDehydrated": is_dehydrated})

    def add_group_members(self, tenant, group_id, members):
        """Members (user or group ids) added to a group, e.g. the
        mail-enabled security group a relationship publishes."""
        return self.patch_group(tenant, group_id, add=members)

    def prepare_cross_tenant(self, source, target, app_id, scope,
                             endpoint="t2t"):
        """The documented one-time set-up of both tenants (ids or
        domains): the source's RemoteOutbound relationship publishing the
        group named `scope`, the target's Inbound relationship and its
        migration endpoint `endpoint` for app_id.  Returns the tenants'
        {"id", "domain"}."""
        known = {t[k].lower(): t for t in self.tenants()
                 for k in ("id", "domain")}
        src, dst = known[source.lower()], known[target.lower()]
        self.add_organization_relationship(src["id"], {
            "Name": f"to_{dst['domain']}", "DomainNames": [dst["id"]],
            "MailboxMoveEnabled": True,
            "MailboxMoveCapability": "RemoteOutbound",
            "OAuthApplicationId": app_id,
            "MailboxMovePublishedScopes": [scope]})
        self.add_organization_relationship(dst["id"], {
            "Name": f"from_{src['domain']}", "DomainNames": [src["id"]],
            "MailboxMoveEnabled": True, "MailboxMoveCapability": "Inbound"})
        self.add_migration_endpoint(dst["id"], {
            "Name": endpoint, "RemoteTenant": src["domain"],
            "ApplicationId": app_id})
        return src, dst

    # -- cross-tenant access settings (issue 17) ------------------------------

    def cross_tenant_access(self, tenant):
        """The tenant's cross-tenant access settings: {"default",
        "partners": [partner + "identitySynchronization" (or None)]}."""
        return self._admin("GET", f"/admin/tenants/{self._q(tenant)}/"
                                  f"cross-tenant-access")

    def set_cross_tenant_access(self, tenant, default=None, partners=()):
        """Replace them: the service defaults, then `default` (properties
        of the default configuration to change) and `partners` (partner
        properties, each with "tenantId" and optionally
        "identitySynchronization")."""
        spec = {"partners": list(partners)}
        if default is not None:
            spec["default"] = default
        return self._admin("PUT", f"/admin/tenants/{self._q(tenant)}/"
                                  f"cross-tenant-access", spec)

    def partner_policy(self, tenant, partner_id):
        """One partner of the tenant (with its identitySynchronization),
        or None."""
        for p in self.cross_tenant_access(tenant)["partners"]:
            if p["tenantId"] == partner_id.lower():
                return p
        return None

    def trust(self, source, target, sync=False):
        """What setup-trust makes: in `target` a partner for `source` with
        automatic redemption inbound, in `source` a partner for `target`
        with it outbound; sync=True also lets CTS sync users in."""
        target_partner = {"tenantId": source, "automaticUserConsentSettings":
                          {"inboundAllowed": True}}
        if sync:
            target_partner["identitySynchronization"] = {
                "displayName": "sync", "userSyncInbound":
                {"isSyncAllowed": True}}
        self.set_cross_tenant_access(target, partners=[target_partner])
        self.set_cross_tenant_access(source, partners=[{
            "tenantId": target, "automaticUserConsentSettings":
            {"outboundAllowed": True}}])

    # -- fault injection (issue 6) --------------------------------------------

    def set_faults(self, *rules):
        """Replace the fault rules (knob "faults"); each rule a dict
        {"kind", "path"?, "method"?, "service"?, "count"?, "ms"?,
        "bytes"?, "tenant"?, "items"?, "text"?}.  No rule: clear them."""
        return self.set_knobs(faults=list(rules))

    def faults(self):
        """{"rules": [rule + "left", "fired"], "foreign_requests": [...],
        "foreign_url", "login_down_ms"}."""
        return self._admin("GET", "/admin/faults")

    @property
    def foreign_url(self):
        """https://localhost:PORT of the "foreign host" listener."""
        return self.faults()["foreign_url"]

    def foreign_requests(self):
        """Requests that reached the foreign host: {"time", "method",
        "path", "host", "authorization" (bool), "tenant" and "client_id"
        of the bearer token if it was a live one, else null}."""
        return self.faults()["foreign_requests"]

    def throttle_stats(self, tenant):
        """{"requests", "throttled", "early", "connection_early",
        "grace_ms", "early_examples", "connection_early_examples"} of a
        tenant."""
        return self._admin("GET", f"/admin/tenants/{self._q(tenant)}/"
                                  f"faults")

    # -- TLS side -------------------------------------------------------------

    def ssl_context(self):
        """A client context that trusts only fakecloud's CA."""
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=self.ca_file)
        return self._ssl

    def request(self, method, url, headers=None, body=None, form=None,
                json_body=None):
        """One HTTPS request on a kept-alive connection; returns HttpReply.
        form (dict) is sent x-www-form-urlencoded, json_body as JSON."""
        headers = dict(headers or {})
        if form is not None:
            body = urllib.parse.urlencode(form).encode("ascii")
            headers.setdefault("Content-Type",
                               "application/x-www-form-urlencoded")
        elif json_body is not None:
            body = json.dumps(json_body).encode("utf-8")
            headers.setdefault("Content-Type", "application/json")
        parts = urllib.parse.urlsplit(url)
        target = parts.path + ("?" + parts.query if parts.query else "")
        for attempt in (1, 2):
            conn = self._conns.get(parts.netloc)
            if conn is None:
                conn = http.client.HTTPSConnection(
                    parts.hostname, parts.port, timeout=30,
                    context=self.ssl_context())
                self._conns[parts.netloc] = conn
            try:
                conn.request(method, target, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError):
                conn.close()
                del self._conns[parts.netloc]
                if attempt == 2:
                    raise
                continue
            if resp.will_close:
                conn.close()
                del self._conns[parts.netloc]
            return HttpReply(resp.status, resp.headers, data)
        raise AssertionError("unreachable")

    def token_url(self, tenant):
        return f"{self.login_url}/{tenant}/oauth2/v2.0/token"

    def get_token(self, tenant, client_id, secret=None, assertion=None,
                  scope=GRAPH_SCOPE, extra=None):
        """POST the client-credentials form; returns the HttpReply."""
        form = {"client_id": client_id, "scope": scope,
                "grant_type": "client_credentials"}
        if secret is not None:
            form["client_secret"] = secret
        if assertion is not None:
            form["client_assertion_type"] = JWT_BEARER
            form["client_assertion"] = assertion
        form.update(extra or {})
        return self.request("POST", self.token_url(tenant), form=form)

    def access_token(self, tenant, client_id, secret, scope=GRAPH_SCOPE):
        """A bearer token or AssertionError."""
        reply = self.get_token(tenant, client_id, secret=secret, scope=scope)
        if reply.status != 200:
            raise AssertionError(f"token request failed: {reply.status} "
                                 f"{reply.body!r}")
        return reply.json()["access_token"]


# --------------------------------------------------------------------------
# Certificates and client assertions for certificate credentials tests
# --------------------------------------------------------------------------

def make_certificate(common_name="galbridge test app", days=30,
                     key_size=2048):
    """A self-signed RSA certificate; returns (cert_pem str, private key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii"), key


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_client_assertion(key, cert_pem, client_id, audience, alg="RS256",
                          lifetime=600, header=None, claims=None):
    """A signed client assertion JWT as the identity platform expects:
    RS256 + x5t (SHA-1 thumbprint) or PS256 + x5t#S256 (SHA-256).
    header/claims entries override or add to the defaults."""
    der = x509.load_pem_x509_certificate(cert_pem.encode("ascii")) \
        .public_bytes(serialization.Encoding.DER)
    head = {"alg": alg, "typ": "JWT"}
    if alg == "RS256":
        head["x5t"] = _b64url(hashlib.sha1(der).digest())
    else:
        head["x5t#S256"] = _b64url(hashlib.sha256(der).digest())
    head.update(header or {})
    now = int(time.time())
    body = {"aud": audience, "iss": client_id, "sub": client_id,
            "jti": str(uuid.uuid4()), "nbf": now, "iat": now,
            "exp": now + lifetime}
    body.update(claims or {})
    signing_input = (_b64url(json.dumps(head).encode()) + "."
                     + _b64url(json.dumps(body).encode())).encode("ascii")
    if alg == "PS256":
        sig = key.sign(signing_input,
                       padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                   salt_length=32),
                       hashes.SHA256())
    else:
        sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return signing_input.decode("ascii") + "." + _b64url(sig)
