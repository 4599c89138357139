"""Trust: galbridge touches only what it can prove it made, and one bad
object fails alone.

Each test plays a hostile tenant or a careless admin against the real
binary: a forged anchor, a hand-invited guest, two source users mapping to
one address, an anchor edited by hand, a lost state. The rule under test:
an object galbridge did not make is never renamed, unhidden, disabled or
deleted (unless the link adopts it), and the reason shows in plan, status
and the log.
"""
import json
import os
import shutil
import sqlite3
import sys

from test_guests import check_converged

# The reliability report's recorder (a no-op outside `make reliability`).
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "reliability"))
from record import crashes, record, tally  # noqa: E402


def src_user(env, **props):
    base = {"displayName": "Person", "givenName": "P", "surname": "Q",
            "userType": "Member", "accountEnabled": True}
    base.update(props)
    return env.cloud.create_user(env.source["id"], base)


def invited_by_hand(env, mail, **props):
    """A guest an admin invited (and who accepted) in fabrikam, holding
    `mail`."""
    user = {"displayName": "Invited By Hand", "mail": mail,
            "otherMails": [mail], "proxyAddresses": ["SMTP:" + mail],
            "userType": "Guest", "creationType": "Invitation",
            "externalUserState": "Accepted", "showInAddressList": False,
            "accountEnabled": True}
    user.update(props)
    return env.cloud.create_user(env.tenants["fabrikam"]["id"], user)


def target_user(env, uid):
    return next(u for u in env.cloud.users(env.tenants["fabrikam"]["id"])
                if u["id"] == uid)


def failures(env):
    return {f["source_id"]: f for f in env.status()["links"][0]["failures"]}


def plan_ops(env):
    r = env.run("plan", "--json")
    assert r.returncode in (0, 1, 3), r.stderr
    out = json.loads(r.stdout)
    return {c["source_id"]: c for c in out["links"][0]["changes"]}, out


def untouched(before, after):
    """What an admin sees of an object: the same, field for field."""
    keys = ("displayName", "mail", "proxyAddresses", "otherMails",
            "onPremisesExtensionAttributes", "showInAddressList",
            "accountEnabled", "jobTitle", "deleted")
    return {k: before.get(k) for k in keys} == {k: after.get(k) for k in keys}


def test_forged_anchor_is_not_adopted_renamed_or_deleted(make_env):
    """A Member of the target whose extensionAttribute15 was set by hand
    to a source user's anchor (plain, and with a made-up proof) is left
    alone: plan and status say why, and when that source user leaves
    scope nothing is deleted."""
    env = make_env(users=20)
    fab = env.tenants["fabrikam"]["id"]
    victims = sorted(env.in_scope())[:2]
    forged = {}
    for n, sid in enumerate(victims):
        anchor = "galbridge:%s:%s" % (env.source["id"], sid)
        if n == 1:
            anchor += ":1.AAAAAAAAAAAAAAAAAAAAAA"
        forged[sid] = env.cloud.create_user(fab, {
            "displayName": "CEO %d" % n, "mail": "ceo%d@fabrikam.example" % n,
            "userType": "Member", "accountEnabled": True,
            "onPremisesExtensionAttributes": {"extensionAttribute15": anchor}})
    before = {sid: target_user(env, u["id"]) for sid, u in forged.items()}

    ops, _ = plan_ops(env)
    for sid in victims:
        assert ops[sid]["op"] == "fail", ops[sid]
        assert forged[sid]["id"] in ops[sid]["reason"]
        assert "cannot" in ops[sid]["reason"] or "nothing proves" in \
            ops[sid]["reason"]

    r = env.run("sync")
    assert r.returncode == 1
    fails = failures(env)
    for sid in victims:
        assert sid in fails and forged[sid]["id"] in fails[sid]["error"]
        assert untouched(before[sid], target_user(env, forged[sid]["id"]))
    assert "object not synced" in r.stderr
    # Everyone else is synced (the forged objects carry anchors too).
    forged_ids = {u["id"] for u in forged.values()}
    made = {sid for sid, c in env.copies().items()
            if any(g["id"] not in forged_ids for g in c)}
    assert made == set(env.in_scope()) - set(victims)

    # The source users leave scope: still nothing touched.
    for sid in victims:
        env.cloud.patch_user(env.source["id"], sid, {"accountEnabled": False})
    r2 = env.run("sync")
    touched = sum(not untouched(before[sid],
                                target_user(env, forged[sid]["id"]))
                  for sid in victims)
    record("forged anchors", injected=len(victims), rounds=2,
           converged=(made == set(env.in_scope()) - set(victims)) +
           (r2.returncode == 0), touched=touched,
           losses=len(set(env.in_scope()) - made),
           crashes=crashes(r.returncode, r2.returncode))
    assert touched == 0
    assert env.writes()["deletes"] == 0


def test_forged_anchor_without_a_key_is_not_taken_either(make_env):
    env = make_env(users=10, anchor_key=False)
    fab = env.tenants["fabrikam"]["id"]
    sid = sorted(env.in_scope())[0]
    member = env.cloud.create_user(fab, {
        "displayName": "Boss", "mail": "boss@fabrikam.example",
        "userType": "Member", "accountEnabled": True,
        "onPremisesExtensionAttributes": {
            "extensionAttribute15": "galbridge:%s:%s" % (env.source["id"],
                                                         sid)}})
    before = target_user(env, member["id"])
    r = env.run("sync")
    record("forged anchors", injected=1, rounds=1,
           converged=int(r.returncode == 1),
           touched=int(not untouched(before, target_user(env, member["id"]))),
           crashes=crashes(r.returncode))
    assert r.returncode == 1
    assert untouched(before, target_user(env, member["id"]))
    assert member["id"] in failures(env)[sid]["error"]


def test_hand_invited_guest_is_left_alone_unless_adopted(make_env):
    """A guest an admin invited by hand holds a source user's address: it
    is a conflict (never renamed, unhidden or deleted) until the link says
    `adopt = mail`; then plan shows `adopt` and sync takes it over without
    inviting anyone."""
    env = make_env(users=20)
    victim = sorted(env.in_scope().values(), key=lambda u: u["id"])[0]
    guest = invited_by_hand(env, victim["mail"])
    before = target_user(env, guest["id"])
    env.write_config(link_extra="on_delete = delete")

    ops, _ = plan_ops(env)
    assert ops[victim["id"]]["op"] == "fail"
    assert guest["id"] in ops[victim["id"]]["reason"]
    assert env.run("sync").returncode == 1
    assert untouched(before, target_user(env, guest["id"]))
    assert guest["id"] in failures(env)[victim["id"]]["error"]
    invitations = env.writes()["invitations"]
    assert invitations == len(env.in_scope()) - 1

    # Leaving scope deletes nothing that galbridge did not make.
    env.cloud.patch_user(env.source["id"], victim["id"],
                         {"accountEnabled": False})
    r = env.run("sync")
    record("hand-made objects", injected=1, rounds=2,
           converged=2 * int(r.returncode == 0),
           touched=int(not untouched(before, target_user(env, guest["id"]))),
           crashes=crashes(r.returncode), **tally(env))
    assert untouched(before, target_user(env, guest["id"]))
    assert env.writes()["deletes"] == 0
    env.cloud.patch_user(env.source["id"], victim["id"],
                         {"accountEnabled": True})

    # The admin opts in: adopted, shown as such, no invitation.
    env.write_config(link_extra="on_delete = delete\nadopt = mail")
    ops, _ = plan_ops(env)
    assert ops[victim["id"]]["op"] == "adopt", ops[victim["id"]]
    assert ops[victim["id"]]["target_id"] == guest["id"]
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert "adopting a target object galbridge did not make" in r.stderr
    check_converged(env)
    assert env.copies()[victim["id"]][0]["id"] == guest["id"]
    assert env.writes()["invitations"] == invitations


def test_addresses_differing_in_case_conflict_for_both(make_env):
    """Two source users whose mail differs only in letter case map to one
    target address: both fail, nothing is made for either, and neither
    copy is ever deleted for the other."""
    env = make_env(users=10)
    a = src_user(env, displayName="Ann Lower", mail="ann.same@contoso.com")
    b = src_user(env, displayName="Ann Upper", mail="Ann.Same@Contoso.com")
    r = env.run("sync")
    assert r.returncode == 1
    fails = failures(env)
    assert a["id"] in fails and b["id"] in fails
    assert b["id"] in fails[a["id"]]["error"]
    assert a["id"] in fails[b["id"]]["error"]
    copies = env.copies()
    assert a["id"] not in copies and b["id"] not in copies
    fab = env.tenants["fabrikam"]["id"]
    assert not [u for u in env.cloud.users(fab)
                if "ann.same@contoso.com" in
                [m.lower() for m in (u.get("otherMails") or [])]]
    ops, _ = plan_ops(env)
    assert ops[a["id"]]["op"] == ops[b["id"]]["op"] == "fail"

    # One leaves: the other is synced.
    env.cloud.patch_user(env.source["id"], b["id"], {"accountEnabled": False})
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert len(env.copies()[a["id"]]) == 1
    guest = env.copies()[a["id"]][0]

    # It comes back: both fail again, and A's copy stays as it is.
    env.cloud.patch_user(env.source["id"], b["id"], {"accountEnabled": True})
    env.cloud.patch_user(env.source["id"], a["id"], {"jobTitle": "Changed"})
    r = env.run("sync")
    assert r.returncode == 1
    fails = failures(env)
    assert a["id"] in fails and b["id"] in fails
    now = target_user(env, guest["id"])
    assert now.get("deleted") is None
    assert now.get("jobTitle") != "Changed"
    # Disabling B never deletes the guest A has.
    env.cloud.patch_user(env.source["id"], b["id"], {"accountEnabled": False})
    r = env.run("sync")
    record("conflicts", injected=2, rounds=3,
           converged=3 * int(r.returncode == 0),
           crashes=crashes(r.returncode),
           **tally(env))
    assert r.returncode == 0, r.stderr
    assert target_user(env, guest["id"]).get("deleted") is None
    assert env.copies()[a["id"]][0]["jobTitle"] == "Changed"
    assert env.writes()["deletes"] == 0


def test_anchor_cleared_or_edited_by_hand_is_repaired(make_env):
    env = make_env(users=20)
    assert env.run("sync").returncode == 0
    fab = env.tenants["fabrikam"]["id"]
    sids = sorted(env.copies())[:2]
    guests = [env.copies()[sid][0] for sid in sids]
    stamps = [g["onPremisesExtensionAttributes"]["extensionAttribute15"]
              for g in guests]
    assert all(s.count(":") == 3 for s in stamps), stamps   # with proof
    env.cloud.patch_user(fab, guests[0]["id"], {
        "onPremisesExtensionAttributes": {"extensionAttribute15": None}})
    env.cloud.patch_user(fab, guests[1]["id"], {
        "onPremisesExtensionAttributes": {"extensionAttribute15": "edited"}})
    writes = env.writes()
    r = env.run("sync")
    record("anchors edited by hand", injected=2, rounds=1,
           converged=int(r.returncode == 0 and all(
               target_user(env, g["id"])["onPremisesExtensionAttributes"]
               .get("extensionAttribute15") == s
               for g, s in zip(guests, stamps))),
           crashes=crashes(r.returncode), **tally(env))
    assert r.returncode == 0, r.stderr
    for g, stamp in zip(guests, stamps):
        ext = target_user(env, g["id"])["onPremisesExtensionAttributes"]
        assert ext["extensionAttribute15"] == stamp
    after = env.writes()
    assert after["invitations"] == writes["invitations"]
    assert after["patches"] - writes["patches"] == 2
    check_converged(env)
    # Repaired once: the next round writes nothing.
    assert env.run("sync").returncode == 0
    assert env.writes() == after


def test_copies_made_before_a_key_get_their_proof(make_env):
    """Copies made without anchor_key_file carry the plain anchor; once a
    key is set they are stamped with its proof in place (the state proves
    them), each with one PATCH, nothing invited again."""
    env = make_env(users=20, anchor_key=False)
    assert env.run("sync").returncode == 0
    plain = {sid: c[0]["onPremisesExtensionAttributes"]["extensionAttribute15"]
             for sid, c in env.copies().items()}
    assert all(v.count(":") == 2 for v in plain.values())
    env.anchor_key = env.write_secret("anchor-key", "k" * 40)
    env.write_config()
    writes = env.writes()
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    after = env.writes()
    assert after["invitations"] == writes["invitations"]
    assert after["patches"] - writes["patches"] == len(plain)
    for sid, c in env.copies().items():
        value = c[0]["onPremisesExtensionAttributes"]["extensionAttribute15"]
        assert value.startswith(plain[sid] + ":1.")


def test_lost_state_is_loud_and_complete(make_env):
    """The state directory is lost while a source user is deleted:
    status and plan say so and write no state; sync takes up every proven
    copy (no invitation), removes the one whose source user is gone, and
    logs how many it took up."""
    env = make_env(users=30)
    assert env.run("sync").returncode == 0
    n = len(env.copies())
    shutil.rmtree(env.state_dir)
    gone = sorted(env.in_scope())[0]
    gone_guest = env.copies()[gone][0]["id"]
    env.cloud.delete_user(env.source["id"], gone, hard=True)

    st = env.run("status")
    assert st.returncode == 0
    assert "no state database" in st.stdout and "lost" in st.stdout
    assert json.loads(env.run("status", "--json").stdout)["state"] == \
        "missing"
    assert not os.path.exists(os.path.join(env.state_dir, "state.db"))

    r = env.run("plan")
    assert r.returncode in (0, 1), r.stderr
    assert "state looks lost" in r.stdout
    assert not os.path.exists(os.path.join(env.state_dir, "state.db"))
    ops, out = plan_ops(env)
    assert out["links"][0]["state"]["state"] == "lost"
    assert out["links"][0]["state"]["proven"] == n
    assert out["links"][0]["state"]["gone"] == 1
    assert ops[gone]["op"] == "delete"
    assert "create" not in {c["op"] for c in ops.values()}

    writes = env.writes()
    r = env.run("sync")
    counts = tally(env)
    record("lost state", injected=1, rounds=1,
           converged=int(r.returncode == 0 and not any(counts.values())),
           crashes=crashes(r.returncode), **counts)
    assert r.returncode == 0, r.stderr
    assert "proven=%d gone=1 unproven=0" % n in r.stderr
    after = env.writes()
    assert after["invitations"] == writes["invitations"]
    assert after["deletes"] - writes["deletes"] == 1
    assert target_user(env, gone_guest)["deleted"] is not None
    check_converged(env)
    assert env.status()["links"][0]["objects"] == n - 1


def test_lost_state_without_a_key_touches_nothing(make_env):
    env = make_env(users=15, anchor_key=False)
    assert env.run("sync").returncode == 0
    fab = env.tenants["fabrikam"]["id"]
    before = {u["id"]: u for u in env.cloud.users(fab)}
    shutil.rmtree(env.state_dir)
    r = env.run("plan")
    assert "state looks lost" in r.stdout
    writes = env.writes()
    r = env.run("sync")
    touched = sum(not untouched(before[u["id"]], u)
                  for u in env.cloud.users(fab) if u["id"] in before)
    record("lost state", injected=1, rounds=1,
           converged=int(r.returncode == 1), touched=touched,
           crashes=crashes(r.returncode))
    assert r.returncode == 1
    assert env.writes() == writes
    for u in env.cloud.users(fab):
        assert untouched(before[u["id"]], u)
    assert len(failures(env)) == len(env.in_scope())


# -- mail contacts (Exchange) ---------------------------------------------

def contact_link(env):
    text = open(env.conf).read().replace("object = guest",
                                         "object = mailcontact")
    with open(env.conf, "w") as f:
        f.write(text)


def exo_cmd(env, tenant, cmdlet, params):
    """Run a cmdlet as an administrator would (the app's own rights)."""
    import client as fc
    t = env.tenants[tenant]
    token = env.cloud.access_token(t["id"], t["client_id"], t["secret"],
                                   scope=fc.EXCHANGE_SCOPE)
    r = env.cloud.request(
        "POST", "%s/adminapi/beta/%s/InvokeCommand" % (env.cloud.exchange_url,
                                                       t["id"]),
        headers={"Authorization": "Bearer " + token},
        json_body={"CmdletInput": {"CmdletName": cmdlet,
                                   "Parameters": params}})
    assert r.status == 200, r.body
    return r.json()["value"]


def contacts(env):
    """Recipients of fabrikam that are mail contacts, by id."""
    return {r["ExternalDirectoryObjectId"]: r
            for r in env.cloud.recipients(env.tenants["fabrikam"]["id"])
            if r["RecipientTypeDetails"] == "MailContact"}


def new_contacts(env):
    ex = env.cloud.stats(env.tenants["fabrikam"]["id"]).get("exchange", {})
    return ex.get("New-MailContact", 0)


def test_contact_anchor_cleared_or_edited_is_repaired(make_env):
    env = make_env(users=20)
    contact_link(env)
    assert env.run("sync").returncode == 0
    made = new_contacts(env)
    prefix = "galbridge:%s:" % env.source["id"]
    mine = [c for c in contacts(env).values()
            if c["CustomAttribute15"].startswith(prefix)]
    a, b = mine[0], mine[1]
    exo_cmd(env, "fabrikam", "Set-MailContact",
            {"Identity": a["ExternalDirectoryObjectId"],
             "CustomAttribute15": ""})
    exo_cmd(env, "fabrikam", "Set-MailContact",
            {"Identity": b["ExternalDirectoryObjectId"],
             "CustomAttribute15": "edited by hand"})
    r = env.run("sync")
    now = contacts(env)
    record("anchors edited by hand", injected=2, rounds=1,
           converged=int(r.returncode == 0 and all(
               now[c["ExternalDirectoryObjectId"]]["CustomAttribute15"] ==
               c["CustomAttribute15"] for c in (a, b))),
           duplicates=new_contacts(env) - made,
           crashes=crashes(r.returncode))
    assert r.returncode == 0, r.stderr
    for c in (a, b):
        assert now[c["ExternalDirectoryObjectId"]]["CustomAttribute15"] == \
            c["CustomAttribute15"]
    assert new_contacts(env) == made
    assert len(now) == len(mine)


def test_contacts_made_by_hand_are_left_alone(make_env):
    """A contact an admin made holds one person's address; another carries
    a second person's anchor by hand: both people fail, nothing is made
    for them, neither contact is changed or removed, even when the people
    leave scope."""
    env = make_env(users=20)
    contact_link(env)
    env.write_config(link_extra="on_delete = delete")
    contact_link(env)
    fab = env.tenants["fabrikam"]["id"]
    p1, p2 = sorted(env.in_scope().values(), key=lambda u: u["id"])[:2]
    holder = env.cloud.create_contact(fab, {"displayName": "Old Partner",
                                            "mail": p1["mail"]})
    forged = env.cloud.create_contact(fab, {
        "displayName": "Forged", "mail": "forged@elsewhere.example",
        "onPremisesExtensionAttributes": {
            "extensionAttribute15": "galbridge:%s:%s" % (env.source["id"],
                                                         p2["id"])}})
    before = contacts(env)
    r = env.run("sync")
    assert r.returncode == 1
    fails = failures(env)
    assert holder["id"] in fails[p1["id"]]["error"]
    assert forged["id"] in fails[p2["id"]]["error"]
    prefix = "galbridge:%s:" % env.source["id"]
    mine = [c for cid, c in contacts(env).items()
            if cid not in (holder["id"], forged["id"]) and
            (c.get("CustomAttribute15") or "").startswith(prefix)]
    assert len(mine) == len(env.in_scope()) - 2
    assert not [c for c in mine if p1["id"] in c["CustomAttribute15"] or
                p2["id"] in c["CustomAttribute15"]]
    # p2's forged anchor is in the round's listing: nothing is sent for
    # p2. p1's address is held by a contact no read shows: its
    # New-MailContact is sent and Exchange refuses it (the address is
    # taken), then the lookup names the holder. Nothing is made for
    # either.
    assert new_contacts(env) == len(mine) + 1
    for sid in (p1["id"], p2["id"]):
        env.cloud.patch_user(env.source["id"], sid, {"accountEnabled": False})
    r2 = env.run("sync")
    after = contacts(env)
    touched = sum(after.get(c["id"]) != before[c["id"]]
                  for c in (holder, forged))
    record("hand-made objects", injected=2, rounds=2,
           converged=2 * int(r2.returncode == 0), touched=touched,
           crashes=crashes(r.returncode, r2.returncode))
    assert touched == 0
    assert r2.returncode == 0, r2.stderr


def test_two_links_on_one_person_conflict_for_both(make_env):
    """Two guest links from contoso to fabrikam whose scopes overlap:
    check-config warns; a person in scope of both is a conflict for both,
    nothing is written for them, and the metric and status count them.
    Removing one link ends the conflict."""
    env = make_env(users=30)
    second = ("[link sales-to-fabrikam]\nsource = contoso\n"
              "target = fabrikam\nobject = guest\n"
              "scope_filter = department eq 'Sales'\n\n")
    env.write_config(extra=second)
    r = env.run("check-config")
    assert r.returncode == 0 and "warning" in r.stderr, r.stderr
    sales = {sid for sid, u in env.in_scope().items()
             if u.get("department") == "Sales"}
    assert sales, "the seed has no Sales people"
    metrics = os.path.join(env.tmp, "galbridge.prom")
    text = open(env.conf).read().replace(
        "interval = 1\n", "interval = 1\nmetrics_file = %s\n" % metrics)
    with open(env.conf, "w") as f:
        f.write(text)
    r = env.run("sync")
    assert r.returncode == 1
    status = {link["name"]: link for link in env.status()["links"]}
    for name, other in (("contoso-to-fabrikam", "sales-to-fabrikam"),
                        ("sales-to-fabrikam", "contoso-to-fabrikam")):
        refused = {f["source_id"] for f in status[name]["failures"]}
        assert refused == sales, name
        assert status[name]["refused"] == len(sales)
        assert all(f["error"].startswith("conflict: ") and
                   "link %s" % other in f["error"]
                   for f in status[name]["failures"]), status[name]
    copies = env.copies()
    record("conflicts", injected=len(sales), rounds=1,
           converged=int(not (set(copies) & sales)),
           duplicates=sum(len(c) - 1 for c in copies.values()),
           crashes=crashes(r.returncode))
    assert not set(copies) & sales
    assert set(copies) == set(env.in_scope()) - sales
    assert status["sales-to-fabrikam"]["objects"] == 0

    # The daemon's metrics count them too.
    d = env.start("run")
    try:
        import client as fc
        fc.wait_for(lambda: os.path.exists(metrics) and
                    "galbridge_link_refused_objects" in open(metrics).read(),
                    timeout=60, what="the metrics file")
        want = 'galbridge_link_refused_objects{link="sales-to-fabrikam"} %d' \
            % len(sales)
        assert want in open(metrics).read()
    finally:
        d.terminate()
        d.communicate(timeout=30)

    # One link goes: the other takes them.
    env.write_config()
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert "claim nothing now" in r.stderr
    check_converged(env)


def test_other_mails_of_a_member_stand_in_no_way(make_env):
    """otherMails are no unique address: a member of the target who lists
    a partner's address among them does not stop that partner's guest
    (only an invited user holding it there does: an invitation would
    answer with that user)."""
    env = make_env(users=10)
    fab = env.tenants["fabrikam"]["id"]
    p1, p2 = sorted(env.in_scope().values(), key=lambda u: u["id"])[:2]
    member = env.cloud.create_user(fab, {
        "displayName": "Colleague", "mail": "colleague@fabrikam.example",
        "otherMails": [p1["mail"]], "userType": "Member",
        "accountEnabled": True})
    leftover = env.cloud.create_user(fab, {
        "displayName": "Hidden Guest", "mail": None, "proxyAddresses": [],
        "otherMails": [p2["mail"]], "userType": "Guest",
        "creationType": "Invitation", "showInAddressList": False,
        "accountEnabled": True})
    before = target_user(env, leftover["id"])
    r = env.run("sync")
    assert r.returncode == 1
    assert p1["id"] in env.copies()
    assert untouched(before, target_user(env, leftover["id"]))
    assert leftover["id"] in failures(env)[p2["id"]]["error"]
    assert target_user(env, member["id"])["otherMails"] == [p1["mail"]]


# -- proofs that must not stretch ---------------------------------------------

def test_guest_invited_by_hand_after_a_failed_invitation_is_not_taken(
        make_env):
    """An invitation fails (its answer comes, no user is made). A while
    later an admin invites the same address by hand; galbridge's retry
    finds that guest, made after its own request had its answer: not its
    own, so a conflict, never patched."""
    env = make_env(users=5)
    fab = env.tenants["fabrikam"]["id"]
    assert env.run("sync").returncode == 0
    made = set(env.copies())
    # The invitation's connection is reset every time: no user is made.
    env.cloud.set_faults({"method": "POST", "path": "/invitations",
                          "kind": "reset_before_response", "count": 1000,
                          "tenant": fab})
    victim = src_user(env, mail="later@contoso.onmicrosoft.com",
                      userPrincipalName="later@contoso.onmicrosoft.com")
    r = env.run("sync")
    assert r.returncode == 1
    assert env.cloud.faults()["rules"][0]["fired"] > 0
    assert victim["id"] not in env.copies()
    env.cloud.set_faults()
    # Twenty minutes pass (the op's times moved back), then the admin
    # invites the address by hand.
    db = sqlite3.connect(os.path.join(env.state_dir, "state.db"))
    try:
        rows = db.execute("SELECT sent_at, sent_end FROM op WHERE"
                          " source_id = ?", (victim["id"],)).fetchall()
        assert rows and rows[0][0] > 0 and rows[0][1] >= rows[0][0], rows
        db.execute("UPDATE op SET sent_at = sent_at - 1200,"
                   " sent_end = sent_end - 1200")
        db.commit()
    finally:
        db.close()
    guest = invited_by_hand(env, victim["mail"])
    before = target_user(env, guest["id"])
    r = env.run("sync")
    touched = int(not untouched(before, target_user(env, guest["id"])))
    record("hand-made objects", injected=1, rounds=2,
           converged=2 * int(r.returncode == 1), touched=touched,
           crashes=crashes(r.returncode))
    assert r.returncode == 1, r.stderr
    assert touched == 0
    assert guest["id"] in failures(env)[victim["id"]]["error"]
    assert set(env.copies()) == made


def test_adopt_never_takes_another_persons_anchor(make_env):
    """With adopt = mail, an invited user holding a person's address but
    carrying another person's anchor (written by hand, or another
    galbridge's) is reported and left alone, not adopted."""
    env = make_env(users=10)
    p1, p2 = sorted(env.in_scope().values(), key=lambda u: u["id"])[:2]
    guest = invited_by_hand(env, p1["mail"], onPremisesExtensionAttributes={
        "extensionAttribute15": "galbridge:%s:%s" % (env.source["id"],
                                                     p2["id"])})
    before = target_user(env, guest["id"])
    env.write_config(link_extra="adopt = mail")
    ops, _ = plan_ops(env)
    assert ops[p1["id"]]["op"] == "fail", ops[p1["id"]]
    r = env.run("sync")
    touched = int(not untouched(before, target_user(env, guest["id"])))
    record("hand-made objects", injected=1, rounds=1,
           converged=int(r.returncode == 1), touched=touched,
           crashes=crashes(r.returncode))
    assert r.returncode == 1, r.stderr
    assert touched == 0
    assert guest["id"] in failures(env)[p1["id"]]["error"]
    assert "adopting" not in r.stderr


def test_a_new_link_leaves_the_copies_of_another_alone(make_env):
    """Two guest links from one source to one target with scopes apart
    (as check-config advises). The second is added later: its state is
    empty, and the first link's copies carry proven anchors of the same
    source, but they are not its own to take up, nor to remove."""
    env = make_env(users=30)
    env.write_config(link_extra="scope_filter = department ne 'Sales'")
    assert env.run("sync").returncode == 0
    first = {sid: c[0]["id"] for sid, c in env.copies().items()}
    sales = {sid for sid, u in env.in_scope().items()
             if u.get("department") == "Sales"}
    assert first and sales and not set(first) & sales
    writes = env.writes()
    env.write_config(
        link_extra="scope_filter = department ne 'Sales'",
        extra="[link sales-to-fabrikam]\nsource = contoso\n"
              "target = fabrikam\nobject = guest\n"
              "scope_filter = department eq 'Sales'\n\n")
    r = env.run("sync")
    after = env.writes()
    lost = sum(sid not in env.copies() or
               env.copies()[sid][0]["id"] != tid for sid, tid in first.items())
    record("lost state", injected=1, rounds=1,
           converged=int(r.returncode == 0), losses=lost,
           crashes=crashes(r.returncode))
    assert r.returncode == 0, r.stderr
    assert after["deletes"] == writes["deletes"]
    assert lost == 0
    assert set(env.copies()) == set(first) | sales
    status = {link["name"]: link for link in env.status()["links"]}
    assert status["sales-to-fabrikam"]["objects"] == len(sales)
    assert status["contoso-to-fabrikam"]["objects"] == len(first)


def test_lost_state_waits_for_the_whole_read_before_removing(make_env):
    """The state is lost and the source's first read is long (streamed in
    partial rounds): copies of people not read yet are not gone. Nothing
    is removed or made again, and every copy is taken up."""
    env = make_env(users=5)
    # Many out-of-scope users first, so that the people with copies come
    # in the read's last pages.
    for i in range(300):
        src_user(env, displayName="Disabled %d" % i, accountEnabled=False,
                 mail="off%d@contoso.onmicrosoft.com" % i)
    for i in range(25):
        src_user(env, displayName="Late %d" % i,
                 mail="late%d@contoso.onmicrosoft.com" % i)
    assert env.run("sync").returncode == 0
    n = len(env.copies())
    assert n == len(env.in_scope())
    shutil.rmtree(env.state_dir)
    writes = env.writes()
    env.cloud.set_knobs(delta_page_size=5, latency_ms=20)
    try:
        r = env.run("sync", timeout=300)
    finally:
        env.cloud.set_knobs(latency_ms=0)
    after = env.writes()
    record("lost state", injected=1, rounds=1,
           converged=int(r.returncode == 0),
           losses=after["deletes"] - writes["deletes"],
           duplicates=after["invitations"] - writes["invitations"],
           crashes=crashes(r.returncode))
    assert r.returncode == 0, r.stderr
    assert "link partial round done" in r.stderr
    assert after["deletes"] == writes["deletes"]
    assert after["invitations"] == writes["invitations"]
    assert env.status()["links"][0]["objects"] == n
    check_converged(env)


def test_a_full_read_fills_what_an_upgraded_store_lacks(make_env):
    """A store upgraded to schema 4 has no object keys (addresses,
    anchors) and no delta links: the full read that follows writes the
    keys of every object, changed or not, so that lookups before writes
    and a lost state's recovery see the copies made before the upgrade."""
    env = make_env(users=20)
    # The second round reads the copies the first one made.
    assert env.run("sync").returncode == 0
    assert env.run("sync").returncode == 0
    fab = env.tenants["fabrikam"]["id"]
    path = os.path.join(env.state_dir, "state.db")

    def anchors():
        db = sqlite3.connect(path)
        try:
            return db.execute("SELECT count(*) FROM object_key WHERE"
                              " tenant = ? AND key LIKE 'anchor:%'",
                              (fab,)).fetchone()[0]
        finally:
            db.close()
    n = len(env.copies())
    assert anchors() == n
    # What migration 4 leaves of a schema 3 store.
    db = sqlite3.connect(path)
    try:
        db.execute("DELETE FROM object_key")
        db.execute("UPDATE delta_state SET delta_link = NULL")
        db.commit()
    finally:
        db.close()
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert "mode=full" in r.stderr
    assert anchors() == n
