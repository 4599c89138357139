"""Integration tests: the real galbridge binary against fakecloud.

Each test gets its own fakecloud (its own CA, ports and tenants) and its own
state directory. Nothing sleeps for a fixed time: tests wait for a condition
with a timeout (client.wait_for).
"""
import contextlib
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "fakecloud"))

import client as fc  # noqa: E402
import seed_demo  # noqa: E402

GALBRIDGE = os.environ.get("GALBRIDGE") or os.path.join(ROOT, "galbridge")
# How long after a throttled answer left fakecloud a request may still
# arrive without counting as early (in flight before the client could read
# the answer). `make valgrind` raises it: galbridge is many times slower
# there at reading an answer and closing its gate.
THROTTLE_GRACE_MS = int(os.environ.get("GALBRIDGE_THROTTLE_GRACE_MS") or 0)


def _graph_user_select():
    """GRAPH_USER_SELECT from include/graph.h: what galbridge asks of
    users/delta, read from the one place it is defined."""
    text = open(os.path.join(ROOT, "include", "graph.h")).read()
    start = text.index("#define GRAPH_USER_SELECT")
    end = text.index("\n\n", start)
    return "".join(re.findall(r'"([^"]*)"', text[start:end])).split(",")


SELECT = _graph_user_select()


def certs_of(cert_pem, name):
    """The certificates registered for tenant `name`'s application:
    `cert_pem` for every tenant, or a {name: pem} of each one's."""
    if isinstance(cert_pem, dict):
        cert_pem = cert_pem.get(name)
    return [cert_pem] if cert_pem else []


class Env:
    """A fakecloud with a source (contoso) and a target (fabrikam) tenant,
    a config file for galbridge, and helpers to run it and read its store.
    """

    def __init__(self, tmp, users=50, rng_seed=7, cert_pem=None,
                 anchor_key=True):
        self.tmp = str(tmp)
        self.cloud = fc.FakeCloud().start(os.path.join(self.tmp, "cloud"))
        if THROTTLE_GRACE_MS:
            self.cloud.set_knobs(throttle_grace_ms=THROTTLE_GRACE_MS)
        rng = random.Random(rng_seed)
        self.tenants = {}
        seed = {"tenants": []}
        for name, n in (("contoso", users), ("fabrikam", 5)):
            tid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            cid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            secret = "s3cret-%s-%x" % (name, rng.getrandbits(64))
            domain = "%s.onmicrosoft.com" % name
            self.tenants[name] = {"id": tid, "client_id": cid,
                                  "secret": secret, "domain": domain}
            seed["tenants"].append({
                "id": tid, "domain": domain,
                "apps": [{"client_id": cid, "secrets": [secret],
                          "certificates": certs_of(cert_pem, name)}],
                "users": seed_demo.make_users(domain, n, rng),
                "groups": []})
        self.cloud.seed(seed)
        self.state_dir = os.path.join(self.tmp, "state")
        self.conf = os.path.join(self.tmp, "galbridge.conf")
        self.limits = {}
        for name, t in self.tenants.items():
            self.write_secret(name, t["secret"])
        # A key for the proof in anchors, as an admin sets one up
        # (galbridge.conf(5)); Env(anchor_key=False) runs without.
        self.anchor_key = None
        # GALBRIDGE_TEST_NO_ANCHOR_KEY=1 runs every test without one (to
        # run the suite against a galbridge that has no such key).
        if anchor_key and not os.environ.get("GALBRIDGE_TEST_NO_ANCHOR_KEY"):
            self.anchor_key = self.write_secret(
                "anchor-key", "%064x" % rng.getrandbits(256))
        self.write_config()

    @property
    def source(self):
        return self.tenants["contoso"]

    def write_private(self, name, text):
        """Writes `text` to `name` in the test's directory, a file only
        its owner may read (0600 from the start); returns its path."""
        path = os.path.join(self.tmp, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def write_secret(self, name, value):
        return self.write_private(name + ".secret", value + "\n")

    def tenant_section(self, name, credential=None):
        t = self.tenants[name]
        cred = credential or "client_secret_file = %s" % os.path.join(
            self.tmp, name + ".secret")
        # fakecloud enforces no limit unless a test asks it to: pacing at
        # Microsoft's (the default) would only slow tests down.
        # self.limits[name] = (graph_write_limit, invitation_limit[,
        # graph_resource_unit_limit]) sets them.
        lim = tuple(self.limits.get(name, ())) + ("off", "off", "off")
        writes, invitations, units = lim[:3]
        return ("[tenant %s]\ntenant_id = %s\nclient_id = %s\n%s\n"
                "login_url = %s\ngraph_url = %s\nexchange_url = %s\n"
                "ca_file = %s\ngraph_write_limit = %s\n"
                "invitation_limit = %s\ngraph_resource_unit_limit = %s\n\n"
                % (name, t["id"], t["client_id"], cred,
                   self.cloud.login_url, self.cloud.graph_url,
                   self.cloud.exchange_url, self.cloud.ca_file, writes,
                   invitations, units))

    def write_config(self, contoso_credential=None, extra="", link_extra="",
                     reverse=False):
        """contoso-to-fabrikam (guest) with `link_extra` lines; `reverse`
        adds fabrikam-to-contoso; `extra` is appended as is."""
        text = ("[galbridge]\nstate_dir = %s\nlog_level = info\n"
                "interval = 1\n" % self.state_dir)
        if self.anchor_key:
            text += "anchor_key_file = %s\n" % self.anchor_key
        text += "\n"
        text += self.tenant_section("contoso", contoso_credential)
        text += self.tenant_section("fabrikam")
        text += ("[link contoso-to-fabrikam]\nsource = contoso\n"
                 "target = fabrikam\nobject = guest\n%s\n" % link_extra)
        if reverse:
            text += ("[link fabrikam-to-contoso]\nsource = fabrikam\n"
                     "target = contoso\nobject = guest\n\n")
        text += extra
        with open(self.conf, "w") as f:
            f.write(text)

    def write_migration_config(self, migration=True, external=None,
                               mapping=None, reverse=None):
        """write_config() with contoso-to-fabrikam making mail users, with
        migration = yes (contoso with exchange = yes: its mailboxes are
        read) unless `migration` is false; `external` sets
        migration_external, `mapping` (lines) a [mapping m] for it;
        `reverse` (an object kind) adds fabrikam-to-contoso making it."""
        self.write_config(extra="[link fabrikam-to-contoso]\n"
                                "source = fabrikam\ntarget = contoso\n"
                                "object = %s\n\n" % reverse
                          if reverse else "")
        text = open(self.conf).read()
        text = text.replace("[tenant contoso]\n",
                            "[tenant contoso]\nexchange = yes\n", 1)
        extra = "migration = yes\n" if migration else ""
        if external:
            extra += "migration_external = %s\n" % external
        if mapping:
            extra += "mapping = m\n"
        text = text.replace("object = guest\n", "object = mailuser\n" + extra,
                            1)
        if mapping:
            text += "[mapping m]\n%s\n" % mapping
        with open(self.conf, "w") as f:
            f.write(text)

    def run(self, *args, timeout=120, state_dir=None):
        return subprocess.run([GALBRIDGE, "-c", self.conf] + list(args),
                              capture_output=True, text=True,
                              timeout=timeout)

    def start(self, *args):
        return subprocess.Popen([GALBRIDGE, "-c", self.conf] + list(args),
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    @contextlib.contextmanager
    def started(self, *args):
        """start(*args) for the length of a with block: if galbridge still
        runs when the block ends (a wait timed out, an assert failed), it
        is killed and reaped."""
        proc = self.start(*args)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    def store_rows(self, state_dir=None):
        """{id: (attrs dict, removed)} of the source tenant."""
        path = os.path.join(state_dir or self.state_dir, "state.db")
        db = sqlite3.connect(path)
        try:
            rows = db.execute(
                "SELECT id, attrs, removed FROM source_object"
                " WHERE tenant = ?", (self.source["id"],)).fetchall()
        finally:
            db.close()
        return {r[0]: (json.loads(r[1]), r[2]) for r in rows}

    def delta_state(self):
        """(delta_link, full, gen), or None before the first round."""
        path = os.path.join(self.state_dir, "state.db")
        if not os.path.exists(path):
            return None
        db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
        try:
            return db.execute("SELECT delta_link, full, gen FROM delta_state"
                              " WHERE tenant = ?",
                              (self.source["id"],)).fetchone()
        except sqlite3.OperationalError:
            return None
        finally:
            db.close()

    def expected(self):
        """What the store should hold for every live source user: the
        selected properties that have a value."""
        want = {}
        for u in self.cloud.users(self.source["id"]):
            if u.get("deleted"):
                continue
            want[u["id"]] = {k: v for k, v in u.items()
                             if k in SELECT and k != "id" and v is not None}
        return want

    def in_scope(self, tenant="contoso"):
        """Live source users the default scope takes, by id."""
        out = {}
        for u in self.cloud.users(self.tenants[tenant]["id"]):
            ext = u.get("onPremisesExtensionAttributes") or {}
            if (u.get("deleted") or u.get("userType") != "Member"
                    or u.get("accountEnabled") is not True
                    or not u.get("mail")
                    or (u.get("creationType") or "") == "Invitation"
                    or any(str(v or "").lower().startswith("galbridge:")
                           for v in ext.values())):
                continue
            out[u["id"]] = u
        return out

    def copies(self, target="fabrikam", source="contoso",
               include_deleted=False):
        """Users in `target` anchored to `source`: {source id: [users]}."""
        prefix = "galbridge:%s:" % self.tenants[source]["id"]
        out = {}
        for u in self.cloud.users(self.tenants[target]["id"]):
            if u.get("deleted") and not include_deleted:
                continue
            ext = u.get("onPremisesExtensionAttributes") or {}
            anchor = ext.get("extensionAttribute15") or ""
            if anchor.startswith(prefix):
                # galbridge:<tenant>:<id>, then its proof when signed.
                out.setdefault(anchor[len(prefix):].split(":")[0],
                               []).append(u)
        return out

    def one_guest_each(self, target="fabrikam", source="contoso"):
        """Checks that each in-scope `source` user has exactly one copy in
        `target`, a visible invited guest, and no other user has one;
        returns [(source id, guest, source user)]."""
        want = self.in_scope(source)
        got = self.copies(target, source)
        assert set(got) == set(want)
        out = []
        for sid, copies in got.items():
            assert len(copies) == 1, "duplicates for %s" % sid
            guest = copies[0]
            assert guest["creationType"] == "Invitation"
            assert guest["showInAddressList"] is True, "guest left hidden"
            out.append((sid, guest, want[sid]))
        return out

    def guests(self, tenant="fabrikam"):
        """The live invited guests in `tenant`, anchored or not."""
        return [u for u in self.cloud.users(self.tenants[tenant]["id"])
                if u.get("creationType") == "Invitation"
                and not u.get("deleted")]

    def writes(self, tenant="fabrikam"):
        st = self.cloud.stats(self.tenants[tenant]["id"])
        return {k: st.get(k, 0) for k in ("invitations", "patches",
                                          "deletes", "restores")}

    def status(self):
        r = self.run("status", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def delta_requests(self, since=None):
        """users/delta requests made to the source tenant (contoso)."""
        return [e for e in self.cloud.log(service="graph", since=since)
                if e["path"].startswith("/v1.0/users/delta")
                and e["tenant"] in (None, self.source["id"])]

    def close(self):
        self.cloud.stop()


def example_config(directory, source=None):
    """etc/galbridge.conf.example (or the copy at `source`, e.g. one a
    package installed) copied into directory with placeholder files for
    the secrets it names: a config that checks. Its path."""
    conf = os.path.join(str(directory), "galbridge.conf")
    with open(source or os.path.join(ROOT, "etc",
                                     "galbridge.conf.example")) as f:
        text = f.read()
    with open(conf, "w") as f:
        f.write(text)
    for name in ("contoso.secret", "fabrikam.crt", "fabrikam.key",
                 "anchor.key"):
        path = os.path.join(str(directory), name)
        with open(path, "w") as f:
            f.write("placeholder\n")
        os.chmod(path, 0o600)
    return conf


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.close()


@pytest.fixture
def make_env(tmp_path):
    made = []

    def make(**kw):
        e = Env(tmp_path / ("env%d" % len(made)), **kw)
        made.append(e)
        return e
    yield make
    for e in made:
        e.close()
