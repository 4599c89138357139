"""The mass-change guard driven through the real galbridge against
fakecloud (issue 19, point 6): a share of the link's copies deleted in one
round (max_delete_share) is held as max_deletes holds, and approve-deletes
lets it through; a burst of creates (max_creates) is held, shown by status,
plan and explain, makes sync exit 3, survives a restart (it is in the
state) and approve-creates lets it through. A link's first round is not
held by max_creates.
"""
import json

LINK = "contoso-to-fabrikam"


def _new_people(env, n, tag):
    ids = []
    for i in range(n):
        u = env.cloud.create_user(env.source["id"], {
            "displayName": "Burst %s %d" % (tag, i),
            "mail": "burst-%s-%d@contoso.example" % (tag, i),
            "userType": "Member", "accountEnabled": True})
        ids.append(u["id"])
    return ids


def _delete_and_sync(env, ids):
    """Deletes `ids` in the source, runs a sync: (its result, the target's
    writes before it)."""
    for sid in ids:
        env.cloud.delete_user(env.source["id"], sid)
    before = env.writes()
    return env.run("sync"), before


def test_delete_share_held_then_approved(make_env):
    env = make_env(users=60)
    env.write_config(link_extra="max_deletes = 1000\n"
                                "max_delete_share = 10%\n")
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    copies = len(env.copies())
    assert 20 <= copies < 110          # 11 deletes are over 10% of them
    gone = sorted(env.in_scope())[:11]
    r, before = _delete_and_sync(env, gone)
    assert r.returncode == 3, r.stderr
    assert ("deletes held link=%s planned=11 max_deletes=1000 copies=%d "
            "max_delete_share=10%%" % (LINK, copies)) in r.stderr
    assert env.writes()["deletes"] == before["deletes"]
    assert env.status()["links"][0]["deletes_held"] == 11
    r = env.run("status")
    assert "approve-deletes %s" % LINK in r.stdout
    r = env.run("approve-deletes", LINK)
    assert r.returncode == 0, r.stderr
    assert "11 held deletes released" in r.stdout
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert env.writes()["deletes"] == before["deletes"] + 11
    assert not set(gone) & set(env.copies())

    # Under the share (a larger one configured), the same count goes.
    env.write_config(link_extra="max_deletes = 1000\n"
                                "max_delete_share = 50%\n")
    r, before = _delete_and_sync(env, sorted(env.in_scope())[:11])
    assert r.returncode == 0, r.stderr
    assert env.writes()["deletes"] == before["deletes"] + 11
    assert env.status()["links"][0]["deletes_held"] == 0


def test_few_deletes_of_a_small_link_go(make_env):
    """The share counts only above ten deletes: ten of a small link go."""
    env = make_env(users=30)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert len(env.copies()) < 100
    r, before = _delete_and_sync(env, sorted(env.in_scope())[:10])
    assert r.returncode == 0, r.stderr
    assert env.writes()["deletes"] == before["deletes"] + 10


def test_create_burst_held_approved_then_done(make_env):
    env = make_env(users=30)
    env.write_config(link_extra="max_creates = 5\n")
    # The first round fills the link: not held although over 5.
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    first = set(env.copies())
    assert len(first) > 5

    # Five new people: not more than the limit, they are made.
    five = _new_people(env, 5, "a")
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert set(five) <= set(env.copies())

    # Eight: all held, nothing invited, sync exits 3.
    eight = _new_people(env, 8, "b")
    before = env.writes()
    r = env.run("sync")
    assert r.returncode == 3, r.stderr
    assert ("creates held link=%s planned=8 max_creates=5: run 'galbridge "
            "approve-creates %s' to let them through" % (LINK, LINK)
            in r.stderr)
    assert env.writes()["invitations"] == before["invitations"]
    assert not set(eight) & set(env.copies())
    st = env.status()["links"][0]
    assert st["creates_held"] == 8 and st["deletes_held"] == 0
    r = env.run("status")
    assert ("8 creates held (over max_creates): run 'galbridge "
            "approve-creates %s'" % LINK) in r.stdout
    r = env.run("plan", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["links"][0]["totals"]["creates_held"] == 8
    r = env.run("plan")
    assert "creates held: 8, over max_creates (5) in one round" in r.stdout
    r = env.run("explain", LINK, eight[0], "--json")
    assert r.returncode == 0, r.stderr
    nxt = json.loads(r.stdout)["next"]
    assert nxt["action"] == "create" and nxt["held"] is True
    assert nxt["reason"] == ("held: over max_creates, waiting for "
                             "approve-creates")

    # Another process, another round (a restart): still held.
    r = env.run("sync")
    assert r.returncode == 3, r.stderr
    assert env.writes()["invitations"] == before["invitations"]

    # approve-deletes is not the way; approve-creates is.
    r = env.run("approve-deletes", LINK)
    assert r.returncode == 0 and "0 held deletes released" in r.stdout
    assert env.status()["links"][0]["creates_held"] == 8
    r = env.run("approve-creates", LINK)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("link %s: 8 held creates released; they run in the "
                        "next round\n" % LINK)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert env.writes()["invitations"] == before["invitations"] + 8
    assert set(eight) <= set(env.copies())
    assert env.status()["links"][0]["creates_held"] == 0


def test_approve_creates_usage(make_env):
    env = make_env(users=5)
    r = env.run("approve-creates", "no-such-link")
    assert r.returncode == 2
    assert "no link named 'no-such-link'" in r.stderr
    r = env.run("approve-creates")
    assert r.returncode == 2
