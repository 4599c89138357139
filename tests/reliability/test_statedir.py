"""The state directory: lost, full, read-only, shared by two processes,
and its permissions.

A full or read-only directory is made with fsfault.so (an LD_PRELOAD shim,
see fsfault.c), so that these tests run where mount is not allowed; where
it is (root, outside a locked-down container), a read-only remount of a
real tmpfs is tried too.
"""
import os
import shutil
import signal
import stat
import subprocess

import client as fc
import pytest

import audit
from helpers import configure, run_faulty
from record import crashes, record

LINK = "contoso-to-fabrikam"


def target_writes(env):
    """Every write fabrikam has answered so far: Graph writes and Exchange
    cmdlets other than Get-*."""
    st = env.cloud.stats(env.tenants["fabrikam"]["id"])
    out = {k: st.get(k, 0) for k in ("invitations", "patches", "deletes",
                                      "restores")}
    for cmdlet, n in st.get("exchange", {}).items():
        if not cmdlet.startswith("Get-"):
            out[cmdlet] = n
    return out


def converged(env, kind, before, fault=None, **figures):
    """The link holds what it should; with `fault`, the round that had to
    converge despite it is recorded under that fault class."""
    counts = audit.audit(env, kind, before)
    if fault:
        record(fault, rounds=1,
               converged=not audit.bad(counts)
               and counts["objects"] == counts["in_scope"],
               duplicates=counts["dup_anchor"] + counts["dup_mail"],
               losses=counts["missing"], strays=counts["strays"], **figures)
    assert audit.bad(counts) == {}, counts
    assert counts["objects"] == counts["in_scope"]


def change_source(env, n=4):
    """Creates, updates and deletes in contoso."""
    tid = env.source["id"]
    ids = sorted(env.in_scope())
    for i in range(n):
        env.cloud.create_user(tid, {
            "displayName": "Later Person %d" % i, "givenName": "Later",
            "surname": "Person %d" % i, "mail": "later%d@contoso.com" % i,
            "userType": "Member", "accountEnabled": True})
        env.cloud.patch_user(tid, ids[i], {"jobTitle": "Changed %d" % i})
        env.cloud.delete_user(tid, ids[-1 - i])


def synced(make_env, kind, users):
    env = make_env(users=users)
    configure(env, kind)
    before = audit.baseline(env, kind)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    converged(env, kind, before)
    return env, before


# --- 2: the state directory lost --------------------------------------------

@pytest.mark.parametrize("kind", ["guest", "mailcontact"])
def test_lost_state_adopts_everything(make_env, kind):
    env, before = synced(make_env, kind, 150)
    made = target_writes(env)
    shutil.rmtree(env.state_dir)
    r = env.run("sync")
    lost_rc = r.returncode
    assert r.returncode == 0, r.stderr
    after = target_writes(env)
    # Nothing made anew: every copy found by its anchor and adopted.
    assert after.get("invitations", 0) == made.get("invitations", 0)
    assert after.get("New-MailContact", 0) == made.get("New-MailContact", 0)
    assert after.get("deletes", 0) == made.get("deletes", 0)
    # Every copy is found with its proven anchor (guests in the target's
    # users read, mail contacts in the listing of the link's contacts on
    # Exchange's side), none of them gone.
    assert "proven=%d gone=0 unproven=0" % len(env.in_scope()) in r.stderr
    converged(env, kind, before, "state dir lost", injected=1,
              crashes=crashes(lost_rc))
    # And the rebuilt store goes on as before.
    change_source(env)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    converged(env, kind, before, "state dir lost")


# --- 3: the state directory full or read-only -------------------------------

UNWRITABLE = {"ENOSPC": "state dir full", "EROFS": "state dir read-only"}


@pytest.mark.parametrize("kind,errno,text", [
    ("guest", "ENOSPC", "No space left on device"),
    ("mailcontact", "ENOSPC", "No space left on device"),
    ("guest", "EROFS", "Read-only file system"),
])
def test_unwritable_state_sends_nothing(make_env, fsfault, tmp_path, kind,
                                        errno, text):
    env, before = synced(make_env, kind, 40)
    change_source(env)
    trigger = str(tmp_path / "fault-on")
    open(trigger, "w").close()
    sent = target_writes(env)
    r = run_faulty(env, fsfault, ["sync"], trigger, errno)
    faulty_rc = r.returncode
    assert r.returncode == 1, r.stderr
    assert text in r.stderr, r.stderr
    # Nothing was written to the tenant that the store could not record.
    assert target_writes(env) == sent
    # Space (or write access) is back: everything catches up.
    os.unlink(trigger)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    converged(env, kind, before, UNWRITABLE[errno], injected=1,
              crashes=crashes(faulty_rc, r.returncode))


# The disk fills as fakecloud makes the FAULT_AT-th object. At that moment
# galbridge has finished (and recorded) fewer than FAULT_AT operations and
# has at most its in-flight window more under way: 8 operations
# (src/scheduler.c EXECUTOR_IN_FLIGHT), each guest one sharing Graph
# $batch requests of 20 (include/graph.h GRAPH_BATCH_MAX), so 160 for
# guests. None starts after the fault, so no more than FAULT_AT - 1 +
# WINDOW objects are ever made, and the population is well over that.
FAULT_AT = 30
WINDOW = {"guest": 8 * 20, "mailcontact": 8}
FULL_USERS = 260


@pytest.mark.parametrize("kind", ["guest", "mailcontact"])
def test_disk_full_mid_round(make_env, fsfault, tmp_path, kind):
    """The disk fills while results are being recorded: galbridge stops
    sending, exits 1, and a later round finishes without duplicates.

    fakecloud itself makes fsfault's trigger file as it answers the
    FAULT_AT-th invitation or New-MailContact, before galbridge can read
    the answer, so the fault falls at the same point of every run. (The
    test used to make it when its polling saw that count, any time later:
    by then galbridge could have finished enough operations to have
    started every other one, and all of them went out.)"""
    env = make_env(users=FULL_USERS)
    configure(env, kind)
    before = audit.baseline(env, kind)
    trigger = str(tmp_path / "fault-on")
    stat = "invitations" if kind == "guest" else "New-MailContact"
    count = (lambda: target_writes(env).get(stat, 0))
    env.cloud.set_knobs(touch_after={"stat": stat, "count": FAULT_AT,
                                     "path": trigger})
    r = run_faulty(env, fsfault, ["sync"], trigger, timeout=120)
    faulty_rc = r.returncode
    assert os.path.exists(trigger), r.stderr
    assert r.returncode == 1, r.stderr
    assert "disk is full" in r.stderr
    assert "cannot record results, starting no more operations" in r.stderr
    assert "state database could not be written" in r.stderr
    # What went out after the fault is bounded by the operations in flight
    # then: not the rest of the population. The outbox is not run again
    # in the same sync (it used to be, sending again what could not be
    # recorded).
    assert r.stderr.count("cannot record results") == 1, r.stderr
    assert count() < FAULT_AT + WINDOW[kind], count()
    assert count() < len(env.in_scope())
    os.unlink(trigger)
    env.cloud.set_knobs(touch_after=None)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    converged(env, kind, before, "state dir full", injected=1,
              crashes=crashes(faulty_rc, r.returncode))


def _can_mount():
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    probe = "/tmp/galbridge-mount-probe-%d" % os.getpid()
    os.makedirs(probe, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs",
                         probe], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", probe])
    os.rmdir(probe)
    return ok


def test_read_only_remount(make_env):
    """The same with a real read-only file system, where mount works (the
    shim tests above cover the rest)."""
    if not _can_mount():
        pytest.skip("mount not allowed here; the fsfault tests cover this")
    env = make_env(users=40)
    os.makedirs(env.state_dir)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700",
                    "tmpfs", env.state_dir], check=True)
    try:
        before = audit.baseline(env, "guest")
        assert env.run("sync").returncode == 0
        change_source(env)
        subprocess.run(["mount", "-o", "remount,ro", env.state_dir],
                       check=True)
        sent = target_writes(env)
        r = env.run("sync")
        assert r.returncode == 1, r.stderr
        assert "Read-only file system" in r.stderr
        assert target_writes(env) == sent
        subprocess.run(["mount", "-o", "remount,rw", env.state_dir],
                       check=True)
        r = env.run("sync")
        assert r.returncode == 0, r.stderr
        converged(env, "guest", before, "state dir read-only", injected=1)
    finally:
        subprocess.run(["umount", env.state_dir])


# --- 4: one process at a time -----------------------------------------------

def wait_ready(env, proc):
    fc.wait_for(lambda: proc.poll() is not None or
                (env.status()["links"][0]["last_success"] is not None),
                timeout=120, what="the daemon's first round")
    assert proc.poll() is None


def test_second_galbridge_refused(make_env):
    env = make_env(users=30)
    daemon = env.start("run")
    try:
        wait_ready(env, daemon)
        sent = target_writes(env)
        for args in (["sync"], ["run"]):
            r = env.run(*args, timeout=30)
            record("state dir in use", injected=1,
                   crashes=crashes(r.returncode))
            assert r.returncode == 1, (args, r.stderr)
            assert "in use by another galbridge (pid %d)" % daemon.pid \
                in r.stderr, r.stderr
        # Read-only and admin commands work alongside the daemon: plan on
        # a private copy of the state.
        r = env.run("plan", timeout=30)
        assert r.returncode == 0, r.stderr
        assert env.status()["links"][0]["objects"] == len(env.in_scope())
        r = env.run("approve-deletes", LINK)
        assert r.returncode == 0, r.stderr
        assert target_writes(env) == sent
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=30)
    assert daemon.returncode == 0
    r = env.run("sync")
    assert r.returncode == 0, r.stderr


def test_lock_dies_with_its_holder(make_env):
    """kill -9 frees the lock (the kernel drops a dead process's flock):
    no stale lock file to clean by hand."""
    env = make_env(users=20)
    daemon = env.start("run")
    try:
        wait_ready(env, daemon)
        assert env.run("sync").returncode == 1
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.communicate(timeout=30)
    r = env.run("sync")
    record("state dir in use", injected=1, crashes=crashes(r.returncode))
    assert r.returncode == 0, r.stderr


# --- 5: permissions ---------------------------------------------------------

def test_state_dir_and_database_private(make_env):
    env = make_env(users=10)
    old = os.umask(0o022)
    try:
        r = env.run("sync")
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(env.state_dir).st_mode) == 0o700
    for name in os.listdir(env.state_dir):
        mode = stat.S_IMODE(os.stat(os.path.join(env.state_dir,
                                                 name)).st_mode)
        assert mode == 0o600, (name, oct(mode))
    assert "state.db" in os.listdir(env.state_dir)
    # A database left readable by others is made private again.
    db = os.path.join(env.state_dir, "state.db")
    os.chmod(db, 0o644)
    assert env.run("status").returncode == 0
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
