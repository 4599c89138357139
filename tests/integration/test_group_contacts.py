"""Groups and distribution lists as mail contacts (object = groupcontact):
the source's mail-enabled groups, read with groups/delta, become mail
contacts in the target through Exchange, anchored under
"galbridge:<source tenant id>#groups:<group id>", changed and removed
like person contacts; the rest of the source (its users, its groups
without mail) is left alone."""
import json

GROUPS = {  # name: (mailEnabled, securityEnabled, groupTypes, has mail)
    "dl": (True, False, [], True),
    "m365": (True, False, ["Unified"], True),
    "mailsec": (True, True, [], True),
    "sec": (False, True, [], False),
}


def gid(n):
    return "00000000-0000-4000-9000-%012d" % n


def add_groups(env):
    """The four kinds of group in contoso; returns {name: id}."""
    src = env.source["id"]
    ids = {}
    for n, (name, (mail_enabled, security, types, has_mail)) in \
            enumerate(sorted(GROUPS.items()), start=1):
        g = {"id": gid(n), "displayName": "Group %s" % name,
             "mailEnabled": mail_enabled, "securityEnabled": security,
             "groupTypes": types, "mailNickname": name,
             "description": "the %s group" % name}
        if has_mail:
            g["mail"] = "%s@contoso.example" % name
        env.cloud.create_group(src, g)
        ids[name] = gid(n)
    return ids


def group_config(env, link_extra=""):
    text = open(env.conf).read().replace(
        "object = guest\n", "object = groupcontact\n" + link_extra, 1)
    with open(env.conf, "w") as f:
        f.write(text)


def contacts(env):
    """Group contacts in fabrikam: {source group id: [recipient]}."""
    prefix = "galbridge:%s#groups:" % env.source["id"]
    out = {}
    for r in env.cloud.recipients(env.tenants["fabrikam"]["id"]):
        anchor = r.get("CustomAttribute15") or ""
        if r["RecipientTypeDetails"] == "MailContact" and \
                anchor.startswith(prefix):
            out.setdefault(anchor[len(prefix):].split(":")[0],
                           []).append(r)
    return out


def sync_ok(env):
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    return r


def test_lifecycle(make_env):
    env = make_env(users=5)
    ids = add_groups(env)
    group_config(env)
    fab = env.tenants["fabrikam"]["id"]
    users_before = len(env.cloud.users(fab))
    r = sync_ok(env)
    assert "objects=groups" in r.stderr
    got = contacts(env)
    assert set(got) == {ids["dl"], ids["m365"], ids["mailsec"]}
    for name in ("dl", "m365", "mailsec"):
        (c,) = got[ids[name]]
        assert c["DisplayName"] == "Group %s" % name
        assert c["ExternalEmailAddress"].lower() == \
            "smtp:%s@contoso.example" % name
        assert c["HiddenFromAddressListsEnabled"] is False
    # No person of contoso was copied, and nothing else was made.
    assert len(env.cloud.users(fab)) == users_before
    assert len([r for r in env.cloud.recipients(fab)
                if r["RecipientTypeDetails"] == "MailContact"]) == 3

    # Renamed, re-addressed, deleted, mail taken away: each applied.
    src = env.source["id"]
    env.cloud.patch_group(src, ids["dl"], displayName="Sales (all)")
    env.cloud.patch_group(src, ids["m365"], mail="team@contoso.example",
                          proxyAddresses=["SMTP:team@contoso.example"])
    env.cloud.delete_group(src, ids["mailsec"])
    sync_ok(env)
    got = contacts(env)
    assert set(got) == {ids["dl"], ids["m365"]}
    assert got[ids["dl"]][0]["DisplayName"] == "Sales (all)"
    assert got[ids["m365"]][0]["ExternalEmailAddress"].lower() == \
        "smtp:team@contoso.example"
    env.cloud.patch_group(src, ids["dl"], mailEnabled=False, mail=None)
    sync_ok(env)
    assert set(contacts(env)) == {ids["m365"]}

    # An idle round writes nothing.
    before = dict(env.cloud.stats(fab)["exchange"])
    sync_ok(env)
    after = env.cloud.stats(fab)["exchange"]
    writes = [k for k in after if not k.startswith("Get-")
              and after[k] != before.get(k, 0)]
    assert writes == [], (before, after)

    st = env.status()
    reads = sorted((s["name"], s["read"], s["objects"])
                   for s in st["sources"])
    # contoso's groups are read, its users are not (no link reads them).
    assert reads == [("contoso", "groups", 3), ("fabrikam", "users", 5)]
    r = env.run("status")
    assert "source contoso (groups): 3 groups, 0 soft-deleted, 1 deleted" \
        in r.stdout, r.stdout
    assert st["links"][0]["object"] == "groupcontact"


def test_scope_filter_on_groups(make_env):
    env = make_env(users=5)
    ids = add_groups(env)
    group_config(env, "scope_filter = groupTypes eq 'Unified' or "
                      "startsWith(mail, 'dl@')\n")
    sync_ok(env)
    assert set(contacts(env)) == {ids["m365"], ids["dl"]}


def test_conflict_with_a_target_recipient_fails_alone(make_env):
    env = make_env(users=5)
    ids = add_groups(env)
    fab = env.tenants["fabrikam"]["id"]
    env.cloud.create_contact(fab, {"displayName": "Not Ours",
                                   "mail": "dl@contoso.example"})
    # A distribution list of the target's own with the same address.
    env.cloud.create_group(fab, {"displayName": "Their Sales",
                                 "mailEnabled": True,
                                 "securityEnabled": False,
                                 "mail": "mailsec@contoso.example"})
    group_config(env)
    r = env.run("sync")
    assert r.returncode == 1, r.stderr
    got = contacts(env)
    assert set(got) == {ids["m365"]}
    st = env.status()["links"][0]
    assert st["failed"] == 2
    fails = {f["source_id"]: f["error"] for f in st["failures"]}
    assert set(fails) == {ids["dl"], ids["mailsec"]}
    assert "conflict" in fails[ids["dl"]], fails
    # A group holding it is found by Exchange's refusal, which names it.
    assert "ProxyAddressExistsException" in fails[ids["mailsec"]] and \
        "Their Sales" in fails[ids["mailsec"]], fails
    theirs = [g for g in env.cloud.groups(fab)
              if g.get("displayName") == "Their Sales"]
    assert len(theirs) == 1 and theirs[0]["mail"] == "mailsec@contoso.example"
    mine = [c for c in env.cloud.contacts(fab)
            if c.get("displayName") == "Not Ours"]
    assert len(mine) == 1 and mine[0]["mail"] == "dl@contoso.example"


def test_users_and_groups_reads_never_mix(make_env):
    """A person contact link and a group contact link from one source:
    each its own delta link and objects; neither takes the other's
    contacts as its own."""
    env = make_env(users=5)
    ids = add_groups(env)
    text = open(env.conf).read().replace("object = guest\n",
                                         "object = mailcontact\n", 1)
    text += ("[link contoso-groups]\nsource = contoso\ntarget = fabrikam\n"
             "object = groupcontact\n\n")
    with open(env.conf, "w") as f:
        f.write(text)
    sync_ok(env)
    fab = env.tenants["fabrikam"]["id"]
    # Both links list their own contacts (one anchor attribute, two
    # namespaces): neither sees the other's as gone, a second round
    # writes nothing.
    before = dict(env.cloud.stats(fab)["exchange"])
    r = sync_ok(env)
    after = env.cloud.stats(fab)["exchange"]
    assert [k for k in after if not k.startswith("Get-")
            and after[k] != before.get(k, 0)] == [], r.stderr
    assert "made again" not in r.stderr
    kinds = [r for r in env.cloud.recipients(fab)
             if r["RecipientTypeDetails"] == "MailContact"]
    people = len(env.in_scope())
    assert len(kinds) == people + 3
    reads = {(s["name"], s["read"]): s for s in env.status()["sources"]}
    assert reads[("contoso", "groups")]["objects"] == len(GROUPS)
    assert reads[("contoso", "users")]["objects"] == 5
    paths = {e["path"].split("?")[0] for e in env.cloud.log(service="graph")
             if e["tenant"] in (None, env.source["id"])}
    assert "/v1.0/groups/delta" in paths and "/v1.0/users/delta" in paths
    assert ids


def test_explain_and_plan(make_env):
    env = make_env(users=5)
    ids = add_groups(env)
    group_config(env)
    r = env.run("plan")
    assert r.returncode == 0, r.stderr
    sync_ok(env)
    r = env.run("explain", "contoso-to-fabrikam", "dl@contoso.example")
    assert r.returncode == 0, r.stderr
    assert ids["dl"] in r.stdout
    assert "Group dl <dl@contoso.example>\n" in r.stdout, r.stdout
    assert "ExternalEmailAddress: \"dl@contoso.example\"" in r.stdout
    r = env.run("explain", "contoso-to-fabrikam", ids["sec"], "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert "not mail-enabled" in json.dumps(doc)


def test_doctor_checks_the_groups_read(make_env):
    env = make_env(users=5)
    group_config(env)
    r = env.run("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok    link contoso-to-fabrikam: read the source's groups " \
        "(contoso)" in r.stdout, r.stdout
    # Its people are not read: their permission is not asked for.
    assert "read the source's users" not in r.stdout, r.stdout


def test_sync_user_is_a_usage_error(make_env):
    env = make_env(users=5)
    ids = add_groups(env)
    group_config(env)
    sync_ok(env)
    fab = env.tenants["fabrikam"]["id"]
    before = env.cloud.stats(fab)["exchange"]
    r = env.run("sync", "--link", "contoso-to-fabrikam", "--user", ids["dl"])
    assert r.returncode == 2, r.stderr
    assert "copies groups (object = groupcontact)" in r.stderr
    assert env.cloud.stats(fab)["exchange"] == before


def test_check_config_refuses_scope_group(make_env):
    env = make_env(users=5)
    group_config(env, "scope_group = %s\n" % gid(1))
    r = env.run("check-config")
    assert r.returncode == 78
    assert "scope_group does not apply" in r.stderr


def test_example_groupcontact_link_checks(tmp_path):
    """The example config's commented groupcontact link, uncommented,
    passes check-config and reads back as written."""
    import subprocess
    from conftest import GALBRIDGE, example_config
    conf = example_config(tmp_path)
    text = open(conf).read()
    start = text.index(";[link contoso-groups-to-fabrikam]")
    block = "\n".join(line[1:] if line.startswith(";") else line
                      for line in text[start:].splitlines())
    with open(conf, "w") as f:
        f.write(text[:start] + block + "\n")
    r = subprocess.run([GALBRIDGE, "-c", str(conf), "check-config"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    dumped = r.stdout[r.stdout.index("[link contoso-groups-to-fabrikam]"):]
    assert "object = groupcontact\n" in dumped
    assert "scope_filter = groupTypes eq 'Unified'" in dumped
    dumped = dumped.split("\n[")[0]
    assert "user_type" not in dumped and "scope_group" not in dumped


def test_hostile_groups_fail_alone(make_env):
    """Whoever can write a group in the source: a name past Exchange's
    limit, an address that is a target mailbox's. Each fails (or loses
    its bad value) alone, with the reason; the other groups are copied,
    and the target's mailbox is never touched."""
    env = make_env(users=5)
    ids = add_groups(env)
    src, fab = env.source["id"], env.tenants["fabrikam"]["id"]
    victim = sorted(env.cloud.users(fab), key=lambda u: u["id"])[0]
    env.cloud.create_group(src, {
        "id": gid(20), "displayName": "Thief", "mailEnabled": True,
        "securityEnabled": False, "groupTypes": [],
        "mail": victim["mail"]})
    env.cloud.create_group(src, {
        "id": gid(21), "displayName": "L" * 300, "mailEnabled": True,
        "securityEnabled": False, "groupTypes": [],
        "mail": "long@contoso.example"})
    group_config(env)
    victim_before = env.cloud.user(fab, victim["id"])
    r = env.run("sync")
    assert r.returncode == 1, r.stderr
    got = contacts(env)
    assert {ids["dl"], ids["m365"], ids["mailsec"]} <= set(got)
    assert gid(20) not in got
    st = env.status()["links"][0]
    fails = {f["source_id"]: f["error"] for f in st["failures"]}
    assert "conflict" in fails[gid(20)], fails
    assert env.cloud.user(fab, victim["id"]) == victim_before
    # The long name is refused, not sent (a warning says so); the contact
    # has a name of its own and its address.
    (c,) = got[gid(21)]
    assert c["DisplayName"] != "L" * 300 and len(c["DisplayName"]) <= 256
    assert c["ExternalEmailAddress"].lower() == "smtp:long@contoso.example"
    assert "attribute not synced link=contoso-to-fabrikam source_id=%s " \
        "attribute=DisplayName length=300 limit=256" % gid(21) in r.stderr


def test_switching_object_kind_is_refused(make_env):
    """A mailcontact link turned groupcontact while it holds copies is
    refused (exit 78, nothing read or written): its person contacts would
    be nobody's. Set back, it runs as before; a new link name makes the
    group contacts."""
    env = make_env(users=5)
    ids = add_groups(env)
    text = open(env.conf).read().replace("object = guest\n",
                                         "object = mailcontact\n", 1)
    with open(env.conf, "w") as f:
        f.write(text)
    sync_ok(env)
    fab = env.tenants["fabrikam"]["id"]

    def mail_contacts():
        return sorted(r["Identity"] for r in env.cloud.recipients(fab)
                      if r["RecipientTypeDetails"] == "MailContact")
    people = mail_contacts()
    assert len(people) == len(env.in_scope()) == 5
    with open(env.conf, "w") as f:
        f.write(text.replace("object = mailcontact\n",
                             "object = groupcontact\n"))
    for command in ("sync", "plan"):
        before = dict(env.cloud.stats(fab)["exchange"])
        r = env.run(command)
        assert r.returncode == 78, r.stderr
        assert "link 'contoso-to-fabrikam' made 5 mailcontact copies and " \
            "is now object = groupcontact" in r.stderr
        assert env.cloud.stats(fab)["exchange"] == before
    assert mail_contacts() == people
    # Set back: an idle round.
    with open(env.conf, "w") as f:
        f.write(text)
    sync_ok(env)
    assert mail_contacts() == people
    # The groups under a link of their own.
    with open(env.conf, "a") as f:
        f.write("[link contoso-groups]\nsource = contoso\n"
                "target = fabrikam\nobject = groupcontact\n\n")
    sync_ok(env)
    assert set(contacts(env)) == {ids["dl"], ids["m365"], ids["mailsec"]}
    assert len(mail_contacts()) == 5 + 3


def test_a_link_without_copies_may_change_kind(make_env):
    """Nothing made yet, nothing to orphan: the change is taken."""
    env = make_env(users=5)
    ids = add_groups(env)
    text = open(env.conf).read()
    with open(env.conf, "w") as f:
        f.write(text.replace("object = guest\n", "object = mailcontact\n"
                             "scope_filter = department eq 'none'\n", 1))
    sync_ok(env)
    assert env.status()["links"][0]["objects"] == 0
    with open(env.conf, "w") as f:
        f.write(text.replace("object = guest\n", "object = groupcontact\n"))
    sync_ok(env)
    assert set(contacts(env)) == {ids["dl"], ids["m365"], ids["mailsec"]}


def test_removed_groups_are_held_past_max_deletes(make_env):
    """Groups gone from the source count against max_deletes like
    people: past it, their contacts stay and the deletes are held until
    approved."""
    env = make_env(users=5)
    ids = add_groups(env)
    group_config(env, "max_deletes = 1\n")
    sync_ok(env)
    src = env.source["id"]
    env.cloud.delete_group(src, ids["dl"])
    env.cloud.delete_group(src, ids["m365"])
    r = env.run("sync")
    assert r.returncode == 3, r.stderr
    assert set(contacts(env)) == {ids["dl"], ids["m365"], ids["mailsec"]}
    assert env.status()["links"][0]["deletes_held"] == 2
    r = env.run("approve-deletes", "contoso-to-fabrikam")
    assert r.returncode == 0, r.stderr
    sync_ok(env)
    assert set(contacts(env)) == {ids["mailsec"]}


def test_daemon_follows_group_changes(make_env):
    """galbridge run: the groups source has rounds of its own; a rename
    and a new group reach the target within the interval."""
    import client as fc
    from test_daemon import Daemon
    env = make_env(users=5)
    ids = add_groups(env)
    group_config(env, "interval = 2\n")
    d = Daemon(env)
    try:
        d.wait_key("READY=1")
        fc.wait_for(lambda: len(contacts(env)) == 3, timeout=30,
                    what="first round")
        src = env.source["id"]
        env.cloud.patch_group(src, ids["m365"], displayName="Team renamed")
        env.cloud.create_group(src, {
            "id": gid(9), "displayName": "Newcomers", "mailEnabled": True,
            "securityEnabled": False, "groupTypes": [],
            "mail": "new@contoso.example"})
        fc.wait_for(lambda: contacts(env).get(ids["m365"], [{}])[0]
                    .get("DisplayName") == "Team renamed"
                    and gid(9) in contacts(env),
                    timeout=2 * 2 + 15, what="the changes in the target")
        d.wait_log(r"delta round done source=contoso objects=groups "
                   r"mode=delta pages=1 items=[12] ")
    finally:
        assert d.stop() == 0
