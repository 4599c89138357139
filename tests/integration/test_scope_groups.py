"""Scope by several groups, exclude groups, and the filter's in/contains,
driven through the real galbridge against fakecloud (issue 19, point 5).

A person is in scope when a (transitive) member of any scope_group, and
out of it when a member of any exclude_group, whatever else matches. A
group that cannot be read leaves the link unplanned: nothing is created
or deleted on the strength of a membership galbridge could not see.
"""
import json


def _people(env, n):
    return sorted(env.in_scope().values(), key=lambda u: u["id"])[:n]


def _group(env, name, members):
    return env.cloud.create_group(env.source["id"], {
        "displayName": name, "members": members})["id"]


def test_two_scope_groups_and_an_exclude_group(make_env):
    env = make_env(users=40)
    people = _people(env, 30)
    ids = [u["id"] for u in people]
    nested = _group(env, "Nested", ids[20:25])
    g_sales = _group(env, "Sales", ids[:10])
    g_support = _group(env, "Support", ids[8:20] + [nested])
    g_out = _group(env, "Leavers", [ids[3], ids[12], ids[22]])
    env.write_config(link_extra="scope_group = %s, %s\nexclude_group = %s\n"
                     % (g_sales, g_support.upper(), g_out))
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    excluded = {ids[3], ids[12], ids[22]}
    want = set(ids[:25]) - excluded
    assert set(env.copies()) == want
    # Nobody of the 26th..30th (in neither group) nor an excluded one.
    assert not set(env.copies()) & (set(ids[25:]) | excluded)

    # explain names the group that keeps the person out, in both forms.
    r = env.run("explain", "contoso-to-fabrikam", ids[12], "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    sc = doc["scope"]
    assert sc["in_scope"] is False
    assert sc["why"] == "member of exclude_group %s" % g_out
    assert sc["exclude_group"] == {"id": g_out, "excluded": True,
                                   "group": g_out}
    assert sc["scope_group"]["member"] is True
    assert sc["scope_group"]["id"] == "%s,%s" % (g_sales, g_support)
    r = env.run("explain", "contoso-to-fabrikam", ids[12])
    assert r.returncode == 0, r.stderr
    assert ("exclude_group          excluded: member of group %s" % g_out
            in r.stdout)
    r = env.run("explain", "contoso-to-fabrikam", ids[0])
    assert r.returncode == 0, r.stderr
    assert "exclude_group          not a member (groups %s)" % g_out \
        in r.stdout

    # A member added to the exclude group later: the copy goes.
    env.cloud.patch_group(env.source["id"], g_out, add=[ids[0]])
    before = env.writes()
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert ids[0] not in env.copies()
    assert set(env.copies()) == want - {ids[0]}
    assert env.writes()["deletes"] - before["deletes"] == 1


def test_unreadable_exclude_group_plans_nothing(make_env):
    """An exclude group that cannot be read is never taken as empty: the
    link is not planned, so nobody it should keep out is created."""
    env = make_env(users=20)
    ids = [u["id"] for u in _people(env, 10)]
    g_in = _group(env, "In", ids)
    missing = "0badbad0-0000-4000-8000-000000000001"
    env.write_config(link_extra="scope_group = %s\nexclude_group = %s\n"
                     % (g_in, missing))
    r = env.run("sync")
    assert r.returncode == 1
    assert "cannot read exclude_group members, link not planned" in r.stderr
    assert "group=%s" % missing in r.stderr
    assert env.copies() == {}
    assert env.writes()["invitations"] == 0

    # Made readable (an empty group), the round runs.
    g_none = _group(env, "Nobody", [])
    env.write_config(link_extra="scope_group = %s\nexclude_group = %s\n"
                     % (g_in, g_none))
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert set(env.copies()) == set(ids)

    # Then it goes unreadable again: nothing is deleted on its account.
    env.write_config(link_extra="scope_group = %s\nexclude_group = %s\n"
                     % (g_in, missing))
    before = env.writes()
    r = env.run("sync")
    assert r.returncode == 1
    assert set(env.copies()) == set(ids)
    assert env.writes() == before


def test_filter_in_and_contains(make_env):
    env = make_env(users=40)
    people = list(env.in_scope().values())
    depts = sorted({u["department"] for u in people if u.get("department")})
    assert len(depts) >= 2
    pick = depts[:2]
    env.write_config(
        link_extra="scope_filter = department in ('%s', '%s') and not "
                   "contains(mail, '%s')\n"
                   % (pick[0].upper(), pick[1], people[0]["mail"][:4]))
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    frag = people[0]["mail"][:4].lower()
    want = {u["id"] for u in people if u.get("department") in pick
            and frag not in u["mail"].lower()}
    assert want
    assert set(env.copies()) == want


def test_bad_group_lists_are_config_errors(make_env):
    env = make_env(users=5)
    g = "11111111-2222-4333-8444-555555555555"
    env.write_config(link_extra="scope_group = %s\nexclude_group = %s\n"
                     % (g, g.upper()))
    r = env.run("check-config")
    assert r.returncode == 78
    assert ("exclude_group %s is also a scope_group: it would take nobody "
            "of that group" % g) in r.stderr
    env.write_config(link_extra="scope_group = %s,,%s\n" % (g, g))
    r = env.run("sync")
    assert r.returncode == 78
    assert "scope_group: empty item" in r.stderr
    assert env.writes()["invitations"] == 0
