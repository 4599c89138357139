"""Managers (issue 19 point 1): a copy's manager is the link's copy of its
source manager, or none; never another object.

The source's manager comes from users/delta (manager@delta); a copy
being made gets its manager in the round after (the create never sends
it: the manager's copy may not exist yet), once both copies exist.
"""
import json
import os
import sqlite3
import uuid

import pytest


def targets(env, link="contoso-to-fabrikam"):
    """{source id: (target id, state)} of the link's target rows."""
    db = sqlite3.connect(os.path.join(env.state_dir, "state.db"))
    try:
        rows = db.execute("SELECT source_id, target_id, state FROM"
                          " target_object WHERE link = ?", (link,))
        return {r[0]: (r[1], r[2]) for r in rows}
    finally:
        db.close()


def op_error(env, sid, link="contoso-to-fabrikam"):
    db = sqlite3.connect(os.path.join(env.state_dir, "state.db"))
    try:
        row = db.execute("SELECT kind, last_error FROM op WHERE link = ?"
                         " AND source_id = ?", (link, sid)).fetchone()
        return row
    finally:
        db.close()


def sync(env):
    r = env.run("sync")
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def fab(env):
    return env.tenants["fabrikam"]["id"]


def con(env):
    return env.source["id"]


def copy_of(env, sid):
    return targets(env)[sid][0]


def manager_of_copy(env, sid, kind="users"):
    return env.cloud.manager(fab(env), copy_of(env, sid), kind=kind)


def manager_writes(env, since=0):
    """PUT/DELETE .../manager/$ref requests to the target (batched or
    not) and Set-Contact/Set-User calls, from fakecloud's log."""
    out = []
    for e in env.cloud.log(since=since):
        if e["tenant"] != fab(env):
            continue
        if e["service"] == "graph" and "/manager" in e["path"] and \
                e["method"] in ("PUT", "DELETE"):
            out.append((e["method"], e["path"]))
    return out


def log_seq(env):
    log = env.cloud.log()
    return log[-1]["seq"] if log else 0


@pytest.fixture
def guests(make_env):
    env = make_env(users=8)
    ids = sorted(env.in_scope())
    return env, ids


def test_guest_manager_set_next_round_and_not_rewritten(guests):
    env, ids = guests
    report, boss = ids[0], ids[1]
    env.cloud.set_manager(con(env), report, boss)
    sync(env)
    # Both copies made in the first round; the create never sends a
    # manager: it is set in the next round.
    assert set(ids) <= set(targets(env))
    assert manager_of_copy(env, report) is None
    sync(env)
    assert manager_of_copy(env, report) == copy_of(env, boss)
    assert manager_of_copy(env, boss) is None
    writes = manager_writes(env)
    assert writes == [("PUT", "/v1.0/users/%s/manager/$ref"
                       % copy_of(env, report))]
    # explain names the manager's copy, or why there is none.
    r = env.run("explain", "contoso-to-fabrikam", report, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["manager"] == {
        "source_id": boss, "target_id": copy_of(env, boss), "why": None}
    r = env.run("explain", "contoso-to-fabrikam", report)
    assert "manager:   %s, the copy of %s" % (copy_of(env, boss), boss) \
        in r.stdout
    r = env.run("explain", "contoso-to-fabrikam", boss)
    assert "manager:   none (no manager" in r.stdout

    # Idle rounds write no manager again.
    seq = log_seq(env)
    sync(env)
    sync(env)
    assert manager_writes(env, since=seq) == []
    assert manager_of_copy(env, report) == copy_of(env, boss)


def test_manager_changed_and_cleared(guests):
    env, ids = guests
    report, boss, other = ids[0], ids[1], ids[2]
    env.cloud.set_manager(con(env), report, boss)
    sync(env)
    sync(env)
    assert manager_of_copy(env, report) == copy_of(env, boss)

    env.cloud.set_manager(con(env), report, other)
    sync(env)
    assert manager_of_copy(env, report) == copy_of(env, other)

    env.cloud.set_manager(con(env), report, None)
    seq = log_seq(env)
    sync(env)
    assert manager_of_copy(env, report) is None
    assert manager_writes(env, since=seq) == [
        ("DELETE", "/v1.0/users/%s/manager/$ref" % copy_of(env, report))]


def test_manager_out_of_scope_then_in_then_out(guests):
    env, ids = guests
    report, boss = ids[0], ids[1]
    # The manager is out of scope (disabled): the report's copy has none.
    env.cloud.patch_user(con(env), boss, {"accountEnabled": False})
    env.cloud.set_manager(con(env), report, boss)
    sync(env)
    sync(env)
    assert boss not in targets(env)
    assert manager_of_copy(env, report) is None
    assert manager_writes(env) == []

    # It comes into scope: its copy is made, then the report is linked
    # (the report was synced long before its manager).
    env.cloud.patch_user(con(env), boss, {"accountEnabled": True})
    sync(env)
    assert targets(env)[boss][1] == "active"
    sync(env)
    assert manager_of_copy(env, report) == copy_of(env, boss)

    # Out of scope again: its copy goes (on_delete = delete) and the
    # report's manager is cleared, never left pointing at it.
    env.cloud.patch_user(con(env), boss, {"accountEnabled": False})
    sync(env)
    sync(env)
    assert manager_of_copy(env, report) is None


def test_manager_leaves_scope_copy_kept(make_env):
    """on_delete = keep: the manager's copy stays in the target when the
    manager leaves the scope (or the source), but it is no longer the
    link's person: the report's manager is cleared all the same."""
    env = make_env(users=8)
    env.write_config(link_extra="on_delete = keep\n")
    ids = sorted(env.in_scope())
    report, boss, other = ids[0], ids[1], ids[2]
    env.cloud.set_manager(con(env), report, boss)
    env.cloud.set_manager(con(env), other, boss)
    sync(env)
    sync(env)
    assert manager_of_copy(env, report) == copy_of(env, boss)
    env.cloud.patch_user(con(env), boss, {"accountEnabled": False})
    sync(env)
    assert targets(env)[boss][1] == "active"      # kept
    assert manager_of_copy(env, report) is None
    # Back in scope: linked again.
    env.cloud.patch_user(con(env), boss, {"accountEnabled": True})
    sync(env)
    assert manager_of_copy(env, report) == copy_of(env, boss)
    # Deleted in the source: its kept copy is no manager either.
    env.cloud.delete_user(con(env), boss)
    sync(env)
    assert manager_of_copy(env, other) is None


def test_manager_switch_off(make_env):
    env = make_env(users=6)
    ids = sorted(env.in_scope())
    env.write_config(link_extra="manager = no\n")
    env.cloud.set_manager(con(env), ids[0], ids[1])
    sync(env)
    sync(env)
    assert manager_of_copy(env, ids[0]) is None
    assert manager_writes(env) == []
    r = env.run("check-config")
    assert r.returncode == 0, r.stderr
    assert "manager = no" in r.stdout


def test_hostile_manager_ids(guests):
    """A source manager that is no user of the source (an id from the
    target, a made-up one): the copy has no manager, nothing foreign is
    referenced or touched, and the person is synced all the same."""
    env, ids = guests
    foreign = [u for u in env.cloud.users(fab(env))
               if u.get("creationType") != "Invitation"][0]
    env.cloud.set_manager(con(env), ids[0], foreign["id"])
    env.cloud.set_manager(con(env), ids[1], str(uuid.uuid4()))
    env.cloud.set_manager(con(env), ids[2], ids[2])     # its own manager
    sync(env)
    env.cloud.patch_user(con(env), ids[0], {"jobTitle": "Still synced"})
    sync(env)
    for sid in ids[:3]:
        assert manager_of_copy(env, sid) is None
    assert manager_writes(env) == []
    assert env.cloud.user(fab(env), copy_of(env, ids[0]))["jobTitle"] == \
        "Still synced"
    after = env.cloud.user(fab(env), foreign["id"])
    assert {k: after.get(k) for k in foreign} == foreign
    assert env.cloud.manager(fab(env), foreign["id"]) is None


def test_unusable_manager_reference_fails_that_person_alone(guests):
    """A manager@delta galbridge cannot follow (an id far too long to be
    one): that person fails with the reason and keeps its copy as it was;
    everyone else, the manager's other reports too, goes on."""
    env, ids = guests
    report, boss, other = ids[0], ids[1], ids[2]
    env.cloud.set_manager(con(env), other, boss)
    sync(env)
    env.cloud.set_manager(con(env), report, "f" * 5000)
    env.cloud.patch_user(con(env), report, {"jobTitle": "Not taken"})
    # A refused object is a failed one: the round exits 1, and says why.
    r = env.run("sync")
    assert r.returncode == 1, r.stderr
    assert "attribute=manager" in r.stderr and "refused=1" in r.stderr
    assert "f" * 200 not in r.stderr + r.stdout
    assert env.run("sync").returncode == 1
    assert env.cloud.user(fab(env), copy_of(env, report))["jobTitle"] != \
        "Not taken"
    kind, error = op_error(env, report)
    assert kind == "fail" and "manager" in error
    assert manager_of_copy(env, other) == copy_of(env, boss)
    # Fixed in the source: the person is synced again.
    env.cloud.set_manager(con(env), report, boss)
    sync(env)
    sync(env)
    assert env.cloud.user(fab(env), copy_of(env, report))["jobTitle"] == \
        "Not taken"
    assert manager_of_copy(env, report) == copy_of(env, boss)


def test_sync_user_keeps_the_manager(guests):
    """sync --user reads one user without its manager: the manager the
    delta gave stays, and the copy's manager is not cleared."""
    env, ids = guests
    report, boss = ids[0], ids[1]
    env.cloud.set_manager(con(env), report, boss)
    sync(env)
    sync(env)
    seq = log_seq(env)
    env.cloud.patch_user(con(env), report, {"jobTitle": "One by one"})
    r = env.run("sync", "--link", "contoso-to-fabrikam", "--user", report)
    assert r.returncode == 0, r.stderr
    assert env.cloud.user(fab(env), copy_of(env, report))["jobTitle"] == \
        "One by one"
    assert manager_of_copy(env, report) == copy_of(env, boss)
    assert manager_writes(env, since=seq) == []


def test_manager_copy_deleted_by_hand(guests):
    env, ids = guests
    report, boss = ids[0], ids[1]
    env.cloud.set_manager(con(env), report, boss)
    sync(env)
    sync(env)
    old = copy_of(env, boss)
    assert manager_of_copy(env, report) == old
    # Someone deletes the manager's copy in the target: it is made again
    # and the report points at the new copy, not the deleted one.
    env.cloud.delete_user(fab(env), old, hard=True)
    for _ in range(3):
        sync(env)
    new = copy_of(env, boss)
    assert new != old
    assert manager_of_copy(env, report) == new


def test_manager_set_by_hand_is_put_back(guests):
    env, ids = guests
    report, boss = ids[0], ids[1]
    env.cloud.set_manager(con(env), report, boss)
    sync(env)
    sync(env)
    foreign = [u for u in env.cloud.users(fab(env))
               if u.get("creationType") != "Invitation"][0]
    env.cloud.set_manager(fab(env), copy_of(env, report), foreign["id"])
    sync(env)
    assert manager_of_copy(env, report) == copy_of(env, boss)
    # A manager set by hand on a copy whose source has none is cleared.
    env.cloud.set_manager(fab(env), copy_of(env, boss), foreign["id"])
    sync(env)
    assert manager_of_copy(env, boss) is None


def test_contact_link_managers(make_env):
    env = make_env(users=8)
    text = open(env.conf).read().replace("object = guest",
                                         "object = mailcontact")
    with open(env.conf, "w") as f:
        f.write(text)
    ids = sorted(env.in_scope())
    report, boss = ids[0], ids[1]
    env.cloud.set_manager(con(env), report, boss)
    sync(env)
    assert env.cloud.manager(fab(env), copy_of(env, report),
                             kind="contacts") is None
    sync(env)
    assert env.cloud.manager(fab(env), copy_of(env, report),
                             kind="contacts") == copy_of(env, boss)
    # Out of scope: cleared with Set-Contact -Manager $null.
    env.cloud.patch_user(con(env), boss, {"accountEnabled": False})
    sync(env)
    sync(env)
    assert env.cloud.manager(fab(env), copy_of(env, report),
                             kind="contacts") is None


def test_mail_user_link_managers(make_env):
    env = make_env(users=8)
    text = open(env.conf).read().replace("object = guest",
                                         "object = mailuser")
    with open(env.conf, "w") as f:
        f.write(text)
    ids = sorted(env.in_scope())
    report, boss = ids[0], ids[1]
    env.cloud.set_manager(con(env), report, boss)
    sync(env)
    assert manager_of_copy(env, report) is None
    sync(env)
    assert manager_of_copy(env, report) == copy_of(env, boss)
    env.cloud.set_manager(con(env), report, None)
    sync(env)
    assert manager_of_copy(env, report) is None
