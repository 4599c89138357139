"""kill -9 at random moments of creates, updates and deletes, each kill
followed by a clean `galbridge sync`: afterwards the target holds exactly
one object per in-scope source user, with the right values, and nothing
else (DESIGN.md invariants 2 and 3).

Sizes come from the environment:

  GALBRIDGE_CRASH_KILLS  kills per link kind (default 5; `make
                         reliability` uses 50)
  GALBRIDGE_CRASH_USERS  source users (default 300; `make reliability`
                         uses 2000)
  GALBRIDGE_CRASH_SEED   random seed (default 1)

Kill i aims at one kind of operation (create, update, delete in turn; the
first kill lands in the first round, which only creates): before it, the
source gets a batch of that kind (new users or re-enabled ones; changed
attributes; deleted or disabled users) plus a few of the other kinds, and
galbridge is killed once the target has answered a random number of that
kind's writes. fakecloud's latency_ms keeps several requests in flight, so
kills fall between a write and the commit of its result as well as
elsewhere. Figures are printed; they are not pass/fail.
"""
import os
import random
import signal
import sqlite3
import time

import client as fc

import audit
from helpers import configure
from record import crashes, record

KILLS = int(os.environ.get("GALBRIDGE_CRASH_KILLS", "5"))
USERS = int(os.environ.get("GALBRIDGE_CRASH_USERS", "300"))
SEED = int(os.environ.get("GALBRIDGE_CRASH_SEED", "1"))
KINDS = ("create", "update", "delete")

# Writes counted to decide when to kill, per link kind and op kind:
# Graph request kinds (stats) or Exchange cmdlets.
COUNTERS = {
    "guest": {"create": ("invitations",), "update": ("patches",),
              "delete": ("deletes",)},
    "mailcontact": {"create": ("New-MailContact",),
                    "update": ("Set-Contact", "Set-MailContact"),
                    "delete": ("Remove-MailContact",)},
}


def writes(env, kind, op):
    st = env.cloud.stats(env.tenants["fabrikam"]["id"])
    if kind == "guest":
        return sum(st.get(k, 0) for k in COUNTERS[kind][op])
    ex = st.get("exchange", {})
    return sum(ex.get(k, 0) for k in COUNTERS[kind][op])


def outbox(env):
    """Pending operations by kind, read straight from the store."""
    path = os.path.join(env.state_dir, "state.db")
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return dict(db.execute("SELECT kind, count(*) FROM op"
                               " GROUP BY kind").fetchall())
    finally:
        db.close()


class Source:
    """Changes to contoso between kills."""

    def __init__(self, env, rng):
        self.env = env
        self.rng = rng
        self.tid = env.source["id"]
        self.disabled = []
        self.serial = 0

    def in_scope(self):
        return sorted(self.env.in_scope())

    def create(self, n):
        # Mostly new people; now and then one disabled earlier comes back.
        for _ in range(n):
            if self.disabled and self.rng.random() < 0.2:
                uid = self.disabled.pop(self.rng.randrange(
                    len(self.disabled)))
                self.env.cloud.patch_user(self.tid, uid,
                                          {"accountEnabled": True})
                continue
            self.serial += 1
            k = self.serial
            self.env.cloud.create_user(self.tid, {
                "displayName": "Crash Person %d" % k, "givenName": "Crash",
                "surname": "Person %d" % k,
                "mail": "crash.person%d@contoso.com" % k,
                "jobTitle": "Tester", "department": "Reliability",
                "city": "Oslo", "country": "Norway",
                "businessPhones": ["+47 5555 %04d" % k],
                "userType": "Member", "accountEnabled": True})

    def update(self, n):
        for uid in self.rng.sample(self.in_scope(), n):
            self.serial += 1
            change = self.rng.choice((
                {"jobTitle": "Title %d" % self.serial},
                {"department": "Dept %d" % self.serial,
                 "officeLocation": "Room %d" % self.serial},
                {"displayName": "Renamed %d" % self.serial},
                {"mobilePhone": "+1 555 %04d" % (self.serial % 10000)}))
            self.env.cloud.patch_user(self.tid, uid, change)

    def delete(self, n):
        for uid in self.rng.sample(self.in_scope(), n):
            if self.rng.random() < 0.3:
                self.env.cloud.patch_user(self.tid, uid,
                                          {"accountEnabled": False})
                self.disabled.append(uid)
            else:
                self.env.cloud.delete_user(self.tid, uid)


def crash_rounds(env, kind, capsys):
    rng = random.Random("%d-%s" % (SEED, kind))
    before = audit.baseline(env, kind)
    src = Source(env, rng)
    # Batches: big enough for a kill to land inside, small enough to keep
    # the run short (Exchange cmdlets are slower than Graph writes).
    # Guest writes go 20 to a $batch request: bigger batches there.
    batch = max(30, USERS // 15) if kind == "guest" else max(10, USERS // 80)
    mix = max(2, batch // 6)
    latency = 25 if kind == "guest" else 4
    figures = {"kills": 0, "ended_before_kill": 0, "rounds": 0,
               "crashes": 0,
               "by_kind": dict.fromkeys(KINDS, 0),
               "in_outbox": dict.fromkeys(KINDS, 0),
               "outbox_at_kill": {}, "bad_after": []}
    started = time.monotonic()
    asked = set()
    i = 0
    # A round that ends before its kill (the batch was smaller than
    # expected) does not count: go on until KILLS kills have landed.
    while figures["kills"] < KILLS and i < 2 * KILLS:
        op = "create" if i == 0 else KINDS[(i + rng.randrange(3)) % 3]
        asked.add(op)
        if i == 0:
            expect = len(env.in_scope())
        else:
            getattr(src, op)(batch)
            for other in KINDS:
                if other != op:
                    getattr(src, other)(rng.randint(0, mix))
            expect = batch
        env.cloud.set_knobs(latency_ms=latency)
        start = writes(env, kind, op)
        goal = start + rng.randint(1, max(1, expect * 9 // 10))
        proc = env.start("sync")
        try:
            fc.wait_for(lambda: writes(env, kind, op) >= goal or
                        proc.poll() is not None, timeout=600,
                        interval=0.005, what="%s writes" % op)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                figures["kills"] += 1
                figures["by_kind"][op] += 1
            else:
                figures["ended_before_kill"] += 1
            proc.communicate(timeout=30)
        left = outbox(env)
        for k, n in left.items():
            figures["outbox_at_kill"][k] = \
                figures["outbox_at_kill"].get(k, 0) + n
        if left.get(op) or (op == "create" and left.get("restore")):
            figures["in_outbox"][op] += 1
        env.cloud.set_knobs(latency_ms=0)
        r = env.run("sync", timeout=900)
        figures["rounds"] += 1
        figures["crashes"] += crashes(r.returncode)
        assert r.returncode == 0, "kill %d (%s): %s\n%s" % (
            i, op, r.stderr, env.run("status").stdout)
        counts = audit.audit(env, kind, before)
        if audit.bad(counts):
            figures["bad_after"].append((i, op, audit.bad(counts),
                                         counts["failures"]))
        i += 1
    final = audit.audit(env, kind, before)
    with capsys.disabled():
        print("\ncrash %s: users=%d kills=%d (create=%d update=%d "
              "delete=%d) ended_before_kill=%d clean_rounds=%d "
              "kills_with_their_kind_in_flight=%s "
              "outbox_at_kill=%s in_scope=%d objects=%d duplicates=%d "
              "(anchor %d, mail %d) missing=%d wrong=%d strays=%d "
              "store_mismatch=%d seconds=%.0f" % (
                  kind, USERS, figures["kills"], figures["by_kind"]["create"],
                  figures["by_kind"]["update"], figures["by_kind"]["delete"],
                  figures["ended_before_kill"], figures["rounds"],
                  figures["in_outbox"], figures["outbox_at_kill"],
                  final["in_scope"], final["objects"],
                  final["dup_anchor"] + final["dup_mail"],
                  final["dup_anchor"], final["dup_mail"], final["missing"],
                  final["wrong"], final["strays"], final["store"],
                  time.monotonic() - started))
        for entry in figures["bad_after"]:
            print("  after kill %d (%s): %s %s" % entry)
    record("SIGKILL, %s link" % kind, injected=figures["kills"],
           rounds=figures["rounds"],
           converged=figures["rounds"] - len(figures["bad_after"]),
           duplicates=final["dup_anchor"] + final["dup_mail"],
           losses=final["missing"], strays=final["strays"],
           crashes=figures["crashes"])
    assert figures["bad_after"] == [], figures["bad_after"]
    assert audit.bad(final) == {}, final
    assert final["objects"] == final["in_scope"]
    assert figures["kills"] == KILLS, figures
    # The kills did land in every kind of operation asked for.
    assert all(figures["by_kind"][op] > 0 for op in asked), figures
    return figures


def test_kill_guest_link(make_env, capsys):
    env = make_env(users=USERS, rng_seed=SEED)
    configure(env, "guest")
    crash_rounds(env, "guest", capsys)


def test_kill_mail_contact_link(make_env, capsys):
    env = make_env(users=USERS, rng_seed=SEED)
    configure(env, "mailcontact")
    crash_rounds(env, "mailcontact", capsys)
