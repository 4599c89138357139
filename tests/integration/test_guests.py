"""Guest sync end to end: galbridge sync against fakecloud's target."""
import datetime
import json
import os
import random
import signal
import sqlite3
import sys
import time

import client as fc

# The reliability report's recorder (a no-op outside `make reliability`).
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "reliability"))
from record import crashes, record, tally  # noqa: E402

MAPPED = ("displayName", "givenName", "surname", "mail", "jobTitle",
          "department", "companyName", "officeLocation", "businessPhones",
          "mobilePhone", "city", "country")


def check_converged(env, target="fabrikam", source="contoso"):
    """Exactly one visible, anchored guest per in-scope source user, with
    every mapped attribute equal to the source's."""
    for sid, g, u in env.one_guest_each(target, source):
        for attr in MAPPED:
            if u.get(attr) in (None, "", []):
                assert g.get(attr) in (None, "", []) or attr == "mail", attr
            else:
                assert g.get(attr) == u[attr], (sid, attr)


def test_first_round_then_changes_then_idle(make_env):
    env = make_env(users=2000)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    check_converged(env)
    first = env.writes()
    n = len(env.in_scope())
    assert first["invitations"] == n
    assert first["patches"] == n          # one PATCH per new guest
    assert first["deletes"] == 0

    ids = sorted(env.in_scope())
    rng = random.Random(3)
    changed = rng.sample(ids, 20)
    for sid in changed[:10]:
        env.cloud.patch_user(env.source["id"], sid,
                             {"jobTitle": "Changed " + sid[:4]})
    for sid in changed[10:15]:
        env.cloud.delete_user(env.source["id"], sid)
    for i in range(5):
        env.cloud.create_user(env.source["id"], {
            "displayName": "New Person %d" % i, "givenName": "New",
            "surname": "Person %d" % i, "mail": "new%d@contoso.com" % i,
            "userType": "Member", "accountEnabled": True})
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    check_converged(env)
    second = env.writes()
    assert second["invitations"] - first["invitations"] == 5
    assert second["patches"] - first["patches"] == 10 + 5
    assert second["deletes"] - first["deletes"] == 5

    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert env.writes() == second        # an idle round writes nothing
    st = env.status()["links"][0]
    assert st["objects"] == len(env.in_scope())
    assert st["pending"] == 0 and st["failed"] == 0
    assert st["last_success"] is not None


def test_kill_five_times_then_clean_round(make_env):
    env = make_env(users=400)
    env.cloud.set_knobs(latency_ms=15)
    rng = random.Random(11)
    for _ in range(5):
        before = sum(env.writes().values())
        proc = env.start("sync")
        target = before + rng.randint(1, 60)
        try:
            fc.wait_for(lambda: sum(env.writes().values()) >= target or
                        proc.poll() is not None, timeout=60)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    env.cloud.set_knobs(latency_ms=0)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    check_converged(env)
    # Every guest in the target is accounted for: no stray copies either.
    guests = env.guests()
    assert len(guests) == len(env.in_scope())
    mails = [g["mail"].lower() for g in guests]
    assert len(mails) == len(set(mails))


def test_deletion_guard_holds_and_releases(make_env):
    env = make_env(users=60)
    env.write_config(link_extra="max_deletes = 3\n")
    assert env.run("sync").returncode == 0
    ids = sorted(env.in_scope())[:5]
    for sid in ids:
        env.cloud.delete_user(env.source["id"], sid)
    before = env.writes()
    r = env.run("sync")
    assert r.returncode == 3, r.stderr
    assert "deletes held" in r.stderr
    assert env.writes()["deletes"] == before["deletes"]
    st = env.status()["links"][0]
    assert st["deletes_held"] == 5
    r = env.run("status")
    assert "approve-deletes contoso-to-fabrikam" in r.stdout
    r = env.run("approve-deletes", "contoso-to-fabrikam")
    assert r.returncode == 0, r.stderr
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert env.writes()["deletes"] == before["deletes"] + 5
    assert env.status()["links"][0]["deletes_held"] == 0
    check_converged(env)


def test_address_conflict_fails_one_user_only(make_env):
    env = make_env(users=40)
    victim = sorted(env.in_scope().values(), key=lambda u: u["id"])[0]
    env.cloud.create_user(env.tenants["fabrikam"]["id"], {
        "displayName": "Local Holder", "mail": victim["mail"],
        "userType": "Member", "accountEnabled": True})
    r = env.run("sync")
    assert r.returncode == 1
    assert victim["mail"] in r.stderr
    st = env.status()["links"][0]
    assert st["failed"] == 1
    assert st["failures"][0]["source_id"] == victim["id"]
    assert "Local Holder" in st["failures"][0]["error"]
    copies = env.copies()
    assert victim["id"] not in copies
    assert len(copies) == len(env.in_scope()) - 1
    # Nothing changed: the failed op is not retried.
    before = env.writes()
    assert env.run("sync").returncode == 1
    assert env.writes() == before


def test_opposite_links_converge_without_loop(make_env):
    env = make_env(users=80)
    env.write_config(reverse=True)
    assert env.run("sync").returncode == 0
    assert env.run("sync").returncode == 0
    check_converged(env, "fabrikam", "contoso")
    check_converged(env, "contoso", "fabrikam")
    before = (env.writes("fabrikam"), env.writes("contoso"))
    assert env.run("sync").returncode == 0
    assert (env.writes("fabrikam"), env.writes("contoso")) == before
    # No copy of a copy anywhere.
    assert not env.copies("contoso", "contoso")
    assert not env.copies("fabrikam", "fabrikam")


def test_plan_matches_next_sync(make_env):
    env = make_env(users=50)
    r = env.run("plan", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)["links"][0]
    assert plan["totals"]["create"] == len(env.in_scope())
    assert env.writes()["invitations"] == 0       # plan wrote nothing
    assert env.run("sync").returncode == 0
    ids = sorted(env.in_scope())
    env.cloud.patch_user(env.source["id"], ids[0], {"city": "Bergen"})
    env.cloud.delete_user(env.source["id"], ids[1])
    r = env.run("plan")
    assert r.returncode == 0, r.stderr
    assert "city: " in r.stdout and '-> "Bergen"' in r.stdout
    assert "1 to update, 1 to delete" in r.stdout
    before = env.writes()
    assert env.run("sync").returncode == 0
    after = env.writes()
    assert after["patches"] - before["patches"] == 1
    assert after["deletes"] - before["deletes"] == 1


def test_scope_group_and_filter(make_env):
    env = make_env(users=100)
    people = sorted(env.in_scope().values(), key=lambda u: u["id"])
    inner = [u["id"] for u in people[:10]]
    outer = [u["id"] for u in people[10:20]]
    g_inner = env.cloud.create_group(env.source["id"], {
        "displayName": "Inner", "members": inner})
    g_outer = env.cloud.create_group(env.source["id"], {
        "displayName": "Outer", "members": outer + [g_inner["id"]]})
    dept = people[0]["department"]
    env.write_config(link_extra="scope_group = %s\nscope_filter = "
                     "department ne '%s'\n" % (g_outer["id"], dept))
    assert env.run("sync").returncode == 0
    want = {u["id"] for u in people[:20] if u["department"] != dept}
    assert set(env.copies()) == want
    # Membership changes take effect in the next round.
    env.cloud.patch_group(env.source["id"], g_outer["id"],
                          remove=outer[:2])
    assert env.run("sync").returncode == 0
    assert set(env.copies()) == want - set(outer[:2])


def test_on_delete_disable_and_restore(make_env):
    env = make_env(users=20)
    env.write_config(link_extra="on_delete = disable\n")
    assert env.run("sync").returncode == 0
    sid = sorted(env.in_scope())[0]
    env.cloud.patch_user(env.source["id"], sid, {"accountEnabled": False})
    assert env.run("sync").returncode == 0
    g = env.copies()[sid][0]
    assert g["accountEnabled"] is False and g["showInAddressList"] is False
    env.cloud.patch_user(env.source["id"], sid, {"accountEnabled": True})
    assert env.run("sync").returncode == 0
    g = env.copies()[sid][0]
    assert g["accountEnabled"] is True and g["showInAddressList"] is True


def test_restored_source_comes_back_to_same_guest(make_env):
    env = make_env(users=20)
    assert env.run("sync").returncode == 0
    sid = sorted(env.in_scope())[0]
    guest_id = env.copies()[sid][0]["id"]
    env.cloud.delete_user(env.source["id"], sid)
    assert env.run("sync").returncode == 0
    assert sid not in env.copies()
    env.cloud.restore_user(env.source["id"], sid)
    before = env.writes()
    assert env.run("sync").returncode == 0
    assert env.copies()[sid][0]["id"] == guest_id
    assert env.writes()["restores"] == before["restores"] + 1
    assert env.writes()["invitations"] == before["invitations"]


def test_guest_deleted_by_hand_is_made_again(make_env):
    env = make_env(users=20)
    assert env.run("sync").returncode == 0
    ids = sorted(env.copies())
    hard, soft = env.copies()[ids[0]][0], env.copies()[ids[1]][0]
    env.cloud.delete_user(env.tenants["fabrikam"]["id"], hard["id"],
                          hard=True)
    env.cloud.delete_user(env.tenants["fabrikam"]["id"], soft["id"])
    # Nothing changed in the source: the target's own delta tells.
    before = env.writes()
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    check_converged(env)
    assert env.writes()["invitations"] == before["invitations"] + 2
    assert env.copies()[ids[0]][0]["id"] != hard["id"]


def test_replication_lag_is_waited_out(make_env):
    env = make_env(users=10)
    env.cloud.set_knobs(replication_lag_ms=1500)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    check_converged(env)


def test_custom_mapping(make_env):
    env = make_env(users=15)
    env.write_config(
        link_extra="mapping = people\n",
        extra="[mapping people]\n"
              "displayName = Append(displayName, \" (Contoso)\")\n"
              "companyName = Coalesce(companyName, \"Contoso Ltd\")\n"
              "department = ToUpper(department)\n"
              "jobTitle = null\n")
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    for sid, copies in env.copies().items():
        g, u = copies[0], env.in_scope()[sid]
        assert g["displayName"] == u["displayName"] + " (Contoso)"
        assert g["companyName"] == (u.get("companyName") or "Contoso Ltd")
        assert g["department"] == u["department"].upper()
        assert g.get("jobTitle") is None


def config_error(env, link_extra="", extra=""):
    env.write_config(link_extra=link_extra, extra=extra)
    r = env.run("sync")
    assert r.returncode == 78, r.stderr
    assert env.cloud.log(service="login") == []
    return r.stderr.strip()


def test_mapping_and_scope_errors_are_config_errors(make_env):
    env = make_env(users=5)
    err = config_error(env, link_extra="mapping = m\n",
                       extra="[mapping m]\ndisplayName = Left(surname)\n")
    lines = open(env.conf).read().splitlines()
    mapping_line = lines.index("displayName = Left(surname)") + 1
    assert err.startswith("%s:%d: " % (env.conf, mapping_line)), err
    assert "Left() takes 2 arguments" in err
    err = config_error(env, link_extra="mapping = m\n",
                       extra="[mapping m]\nmail = null\n")
    assert "mail is required" in err
    err = config_error(env, link_extra="scope_filter = department eq\n")
    assert "scope_filter" in err and err.startswith(env.conf + ":")
    err = config_error(env, link_extra="mapping = m\n",
                       extra="[mapping m]\njobTitle = favouriteColour\n")
    assert "favouriteColour" in err
    r = env.run("check-config")
    assert r.returncode == 78 and "favouriteColour" in r.stderr


def test_example_config_passes_check_config(tmp_path):
    """etc/galbridge.conf.example stays valid, mappings and filters
    included, given the secret files it names."""
    import subprocess
    from conftest import GALBRIDGE, example_config
    conf = example_config(tmp_path)
    # Nothing from the environment but PATH (and the binary the valgrind
    # wrapper runs, when GALBRIDGE is that wrapper).
    r = subprocess.run([GALBRIDGE, "-c", str(conf), "check-config"],
                       capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items()
                            if k in ("PATH", "GALBRIDGE_REAL")})
    assert r.returncode == 0, r.stderr
    assert "[link contoso-to-fabrikam]" in r.stdout


def without_links(env):
    """Rewrite env's config with its tenants and no [link] section."""
    text = open(env.conf).read()
    with open(env.conf, "w") as f:
        f.write(text[:text.index("[link ")])


def test_config_without_links_is_refused(make_env):
    """check-config, sync, plan and run refuse a config with no link, as
    any config error (exit 78, nothing sent); doctor still checks the
    tenants."""
    env = make_env(users=5)
    without_links(env)
    for args in (("check-config",), ("sync",), ("plan",), ("run",)):
        r = env.run(*args, timeout=60)
        assert r.returncode == 78, (args, r.stderr)
        assert r.stderr == "%s: no [link] sections: nothing to sync\n" \
            % env.conf, (args, r.stderr)
        assert r.stdout == "", args
    assert [e for e in env.cloud.log() if e["service"] != "admin"] == []
    assert not os.path.exists(os.path.join(env.state_dir, "state.db"))
    r = env.run("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok    tenant contoso: a Microsoft Graph token" in \
        r.stdout.splitlines()


def test_check_config_warns_about_links_that_overlap(make_env):
    """Two links from one source to one target making the same kind of
    object, or a guest and a mail user link, may both take one person:
    check-config names each such pair and its lines on stderr, and still
    passes."""
    env = make_env(users=5)
    env.write_config(reverse=True, extra=(
        "[link more-guests]\nsource = contoso\ntarget = fabrikam\n"
        "object = guest\nscope_filter = department eq 'Sales'\n"
        "anchor = extensionAttribute14\n\n"
        "[link users]\nsource = contoso\ntarget = fabrikam\n"
        "object = mailuser\nanchor = extensionAttribute13\n\n"
        "[link contacts]\nsource = contoso\ntarget = fabrikam\n"
        "object = mailcontact\nanchor = extensionAttribute12\n"))
    lines = open(env.conf).read().splitlines()

    def at(name):
        return lines.index("[link %s]" % name) + 1

    r = env.run("check-config")
    assert r.returncode == 0, r.stderr
    assert "[link more-guests]" in r.stdout
    warnings = r.stderr.splitlines()
    assert len(warnings) == 3, r.stderr
    first, more, users = (at("contoso-to-fabrikam"), at("more-guests"),
                          at("users"))
    for (a, la), (b, lb) in ((("contoso-to-fabrikam", first),
                              ("more-guests", more)),
                             (("contoso-to-fabrikam", first),
                              ("users", users)),
                             (("more-guests", more), ("users", users))):
        want = "%s:%d: warning: links '%s' (line %d) and '%s' (line %d) " \
            % (env.conf, lb, a, la, b, lb)
        found = [w for w in warnings if w.startswith(want)]
        assert len(found) == 1, (want, r.stderr)
        assert "a person in scope of both is a conflict for both links " \
            "and nothing is written for them" in found[0]
        if b == "users":
            assert "guests and mail users are both Graph users there" in \
                found[0]
        else:
            assert "both make guest objects in tenant 'fabrikam' for " \
                "people of tenant 'contoso'" in found[0]
    # The opposite link and the mail contacts overlap nothing.
    assert "fabrikam-to-contoso" not in r.stderr
    assert "'contacts'" not in r.stderr


def test_proxy_address_conflict_then_resync(make_env):
    """A contact in the target holds one person's address: galbridge asks
    who holds it before inviting, so that person fails with the contact
    named and nothing is written for them (no invitation, no hidden guest
    without mail left behind), while the others sync. Once the contact is
    gone, resync makes the guest."""
    env = make_env(users=30)
    victim = sorted(env.in_scope().values(), key=lambda u: u["id"])[0]
    fab = env.tenants["fabrikam"]["id"]
    contact = env.cloud.create_contact(fab, {"displayName": "Old Contact",
                                             "mail": victim["mail"]})
    r = env.run("sync")
    counts = tally(env)
    counts["losses"] -= 1                       # the victim, on purpose
    after = {c["id"]: c for c in env.cloud.contacts(fab)}
    record("hand-made objects", injected=1, rounds=1,
           converged=int(r.returncode == 1 and not any(counts.values())),
           touched=int(after.get(contact["id"]) != contact),
           crashes=crashes(r.returncode), **counts)
    assert r.returncode == 1
    st = env.status()["links"][0]
    assert st["failed"] == 1
    failure = st["failures"][0]
    assert failure["source_id"] == victim["id"]
    assert contact["id"] in failure["error"], failure
    assert "Old Contact" in failure["error"]
    assert set(env.copies()) == set(env.in_scope()) - {victim["id"]}
    invitations = env.writes()["invitations"]
    assert invitations == len(env.in_scope()) - 1
    held = [u for u in env.cloud.users(fab)
            if victim["mail"].lower() in
            [m.lower() for m in (u.get("otherMails") or [])]
            or (u.get("mail") or "").lower() == victim["mail"].lower()]
    assert held == [], "a guest was made for the address a contact holds"

    env.cloud.delete_contact(fab, contact["id"])
    r = env.run("resync", "contoso-to-fabrikam")
    assert r.returncode == 0, r.stderr
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    check_converged(env)
    assert env.writes()["invitations"] == invitations + 1


def test_forbidden_patch_fails_that_user_only(make_env):
    env = make_env(users=30)
    assert env.run("sync").returncode == 0
    sid = sorted(env.copies())[0]
    guest = env.copies()[sid][0]
    env.cloud.set_knobs(fail_patch_for=[guest["id"]])
    people = sorted(env.in_scope())
    for p in people[:3]:
        env.cloud.patch_user(env.source["id"], p, {"jobTitle": "New " + p})
    if sid not in people[:3]:
        env.cloud.patch_user(env.source["id"], sid, {"jobTitle": "X"})
    r = env.run("sync")
    assert r.returncode == 1
    assert "Authorization_RequestDenied" in r.stderr
    st = env.status()["links"][0]
    assert st["failed"] == 1 and st["failures"][0]["source_id"] == sid
    for p in people[:3]:
        if p != sid:
            assert env.copies()[p][0]["jobTitle"] == "New " + p


def iso_time(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def test_failed_op_is_tried_again_after_its_backoff(make_env):
    """An op failed for good waits an hour (status shows when), is left
    alone by the rounds before that, and runs again in the first round
    after: an error that was passing after all heals without the admin."""
    env = make_env(users=20)
    assert env.run("sync").returncode == 0
    sid = sorted(env.copies())[0]
    guest = env.copies()[sid][0]
    env.cloud.set_knobs(fail_patch_for=[guest["id"]])
    env.cloud.patch_user(env.source["id"], sid, {"jobTitle": "Refused"})
    before = time.time()
    r = env.run("sync")
    assert r.returncode == 1
    [failure] = env.status()["links"][0]["failures"]
    assert failure["source_id"] == sid
    assert "Authorization_RequestDenied" in failure["error"]
    next_try = iso_time(failure["next_try"])
    assert before + 3600 - 1 <= next_try <= time.time() + 3600 + 1
    text = env.run("status")
    assert text.returncode == 0
    assert "next try at %s" % failure["next_try"] in text.stdout
    # Not before its time: later rounds leave it failed, unsent.
    patches = env.writes()["patches"]
    assert env.run("sync").returncode == 1
    assert env.writes()["patches"] == patches
    assert env.status()["links"][0]["failed"] == 1
    # Its time has come (the clock moved on): the next round tries it
    # again, and since the refusal is over, it goes through.
    env.cloud.set_knobs(fail_patch_for=[])
    db = sqlite3.connect(os.path.join(env.state_dir, "state.db"))
    with db:
        db.execute("UPDATE op SET next_try = ? WHERE state = 'failed'",
                   (int(time.time()) - 1,))
    db.close()
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert "failed operations tried again after their backoff" in r.stderr
    assert env.writes()["patches"] == patches + 1
    assert env.copies()[sid][0]["jobTitle"] == "Refused"
    st = env.status()["links"][0]
    assert st["failed"] == 0 and st["pending"] == 0 and st["failures"] == []


def test_higher_max_deletes_releases_held_deletes(make_env):
    env = make_env(users=40)
    env.write_config(link_extra="max_deletes = 2\n")
    assert env.run("sync").returncode == 0
    for sid in sorted(env.in_scope())[:4]:
        env.cloud.delete_user(env.source["id"], sid)
    assert env.run("sync").returncode == 3
    assert env.status()["links"][0]["deletes_held"] == 4
    env.write_config(link_extra="max_deletes = 10\n")
    before = env.writes()["deletes"]
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert env.writes()["deletes"] == before + 4
    assert env.status()["links"][0]["deletes_held"] == 0


def test_debug_logs_hold_no_secret_or_token(make_env):
    env = make_env(users=10)
    with open(env.conf) as f:
        text = f.read().replace("log_level = info", "log_level = debug")
    with open(env.conf, "w") as f:
        f.write(text)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "level=debug" in out or "debug:" in out
    for t in env.tenants.values():
        assert t["secret"] not in out
    assert "Bearer" not in out and "eyJ" not in out
    # Nor in the state database (and its write-ahead log).
    db = b""
    for name in ("state.db", "state.db-wal"):
        path = os.path.join(env.state_dir, name)
        if os.path.exists(path):
            db += open(path, "rb").read()
    assert len(db) > 0
    for t in env.tenants.values():
        assert t["secret"].encode() not in db
    assert b"Bearer" not in db
