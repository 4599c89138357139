"""Mail users kept ready for Microsoft's cross-tenant mailbox migration
(link key migration = yes): the stamps a move needs, kept as the source
changes, never on an object a move cannot take, and a hand-off once the
move is done (MIGRATION.md §1.4, §1.5)."""
import re

import client as fc

ZERO = "00000000-0000-0000-0000-000000000000"
MIGRATION_APP = "5e7b0a1c-4d2f-4b8e-9a61-0c2f3d4e5f60"  # the move's own app


def configure(env, **kw):
    env.write_migration_config(**kw)
    return env


def migration_env(make_env, users=40, **kw):
    return configure(make_env(users=users), **kw)


def copies(env):
    """Anchored MailUsers (or what they became) in fabrikam by source id."""
    prefix = "galbridge:%s:" % env.tenants["contoso"]["id"]
    out = {}
    for r in env.cloud.recipients(env.tenants["fabrikam"]["id"]):
        anchor = r.get("CustomAttribute15") or ""
        if anchor.startswith(prefix):
            out[anchor[len(prefix):].split(":")[0]] = r
    return out


def domain(address):
    return address.split(":", 1)[-1].rsplit("@", 1)[-1].lower()


def check_ready(env, sid, copy):
    """The copy of source `sid` carries what a move needs."""
    src = env.cloud.mailbox(env.source["id"], sid)
    tgt = env.cloud.mailbox(env.tenants["fabrikam"]["id"],
                            copy["ExternalDirectoryObjectId"])
    accepted = {d["DomainName"].lower() for d in
                env.cloud.accepted_domains(env.tenants["fabrikam"]["id"])}
    initial = [d["DomainName"].lower() for d in
               env.cloud.accepted_domains(env.tenants["fabrikam"]["id"])
               if d.get("InitialDomain")][0]
    assert tgt["ExchangeGuid"].lower() == src["ExchangeGuid"].lower(), sid
    if src.get("ArchiveStatus") == "Active":
        assert tgt["ArchiveGuid"].lower() == src["ArchiveGuid"].lower(), sid
    else:
        assert tgt["ArchiveGuid"] == ZERO, sid
    addresses = copy["EmailAddresses"]
    lowered = {a.lower() for a in addresses}
    assert "x500:" + src["LegacyExchangeDN"].lower() in lowered, sid
    for x in src.get("x500") or []:
        assert x.lower() in lowered, (sid, x)
    smtp = [a for a in addresses if a.lower().startswith("smtp:")]
    # Never an address in a domain the target does not own.
    assert all(domain(a) in accepted for a in smtp), (sid, smtp)
    assert any(domain(a) == initial for a in smtp), (sid, smtp)
    primary = [a for a in smtp if a.startswith("SMTP:")]
    assert len(primary) == 1 and domain(primary[0]) in accepted
    # The source mailbox's primary address is its user's mail.
    mail = env.cloud.user(env.source["id"], sid)["mail"]
    assert copy["ExternalEmailAddress"].lower().endswith(mail.lower()), sid
    return src


def mailboxes(env):
    """In-scope source users that have a mailbox."""
    return {sid: u for sid, u in env.in_scope().items()
            if env.cloud.mailbox(env.source["id"], sid).get(
                "RecipientTypeDetails") == "UserMailbox"}


def test_copies_are_ready_and_kept_ready(make_env):
    env = migration_env(make_env)
    src_id = env.source["id"]
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert re.search(r"source mailboxes read tenant=\S+ all=\d+", r.stderr)
    want = mailboxes(env)
    assert len(want) >= 20
    got = copies(env)
    assert set(want) <= set(got)
    for sid in want:
        check_ready(env, sid, got[sid])

    # The source changes: an archive enabled, a new X500 address.
    sids = sorted(want)
    env.cloud.patch_mailbox(src_id, sids[0], archive=True)
    old = env.cloud.mailbox(src_id, sids[1]).get("x500") or []
    env.cloud.patch_mailbox(src_id, sids[1],
                            x500=old + ["X500:/o=Legacy/ou=First/cn=r/cn=x1"])
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    # The second read asks only for what changed.
    assert re.search(r"source mailboxes read tenant=\S+ changed=\d+",
                     r.stderr), r.stderr
    got = copies(env)
    src = check_ready(env, sids[0], got[sids[0]])
    assert src["ArchiveStatus"] == "Active"
    check_ready(env, sids[1], got[sids[1]])
    assert "x500:/o=legacy/ou=first/cn=r/cn=x1" in {
        a.lower() for a in got[sids[1]]["EmailAddresses"]}


def test_foreign_addresses_never_reach_the_target(make_env):
    """The mapping's extra addresses (the source's proxyAddresses, all in
    the source's domains) stay out of the copies."""
    env = migration_env(make_env, users=20,
                        mapping="EmailAddresses = proxyAddresses")
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    got = copies(env)
    for sid, u in mailboxes(env).items():
        assert any(domain(a) != "fabrikam.com" for a in
                   u.get("proxyAddresses") or []), sid
        check_ready(env, sid, got[sid])


def test_sign_in_name_through_the_mapping(make_env):
    """MicrosoftOnlineServicesID mapped into an accepted domain of the
    target becomes the copy's UPN; one in a domain the target does not
    own fails that person alone, with the reason."""
    env = migration_env(
        make_env, users=20,
        mapping='MicrosoftOnlineServicesID = Append(mailNickname, '
                '"@fabrikam.com")')
    fab = env.tenants["fabrikam"]["id"]
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    got = copies(env)
    want = mailboxes(env)
    assert want and set(want) <= set(got)
    for sid, u in want.items():
        copy = env.cloud.user(fab, got[sid]["ExternalDirectoryObjectId"])
        assert copy["userPrincipalName"].lower() == \
            (u["mailNickname"] + "@fabrikam.com").lower(), sid
        check_ready(env, sid, got[sid])
    # A domain the target does not own: refused before anything is sent.
    configure(env, mapping='MicrosoftOnlineServicesID = Append(mailNickname, '
                           '"@partner.example")')
    sid = sorted(want)[0]
    env.cloud.patch_user(env.source["id"], sid, {"jobTitle": "Renamed"})
    r = env.run("sync")
    assert r.returncode == 1, r.stderr
    assert "MicrosoftOnlineServicesID" in r.stderr
    assert "not in an accepted domain" in r.stderr
    copy = env.cloud.user(fab, got[sid]["ExternalDirectoryObjectId"])
    assert copy["userPrincipalName"].lower().endswith("@fabrikam.com")


def test_migration_targets_need_migration(make_env):
    """PrimarySmtpAddress and MicrosoftOnlineServicesID are mapped only by
    a link with migration = yes: any other is a config error (78), and
    nothing is sent."""
    env = make_env(users=5)
    for target in ("PrimarySmtpAddress", "MicrosoftOnlineServicesID"):
        configure(env, migration=False,
                  mapping='%s = Append(mailNickname, "@fabrikam.com")'
                  % target)
        before = len(env.cloud.log())
        for cmd in ("check-config", "sync"):
            r = env.run(cmd)
            assert r.returncode == 78, (cmd, r.stderr)
            assert "maps %s, which only a link with migration = yes" \
                % target in r.stderr, r.stderr
        assert not [e for e in env.cloud.log()[before:]
                    if e["service"] != "admin"]


def test_objects_a_move_cannot_take_are_left_alone(make_env):
    """A copy that had a mailbox before, or is synchronised from
    on-premises, is not stamped: the op fails with the fix, others go
    on."""
    env = migration_env(make_env, users=20, migration=False)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    fab = env.tenants["fabrikam"]["id"]
    got = copies(env)
    sids = sorted(mailboxes(env))
    prev, synced = sids[0], sids[1]
    env.cloud.patch_mailbox(fab, got[prev]["ExternalDirectoryObjectId"],
                            PreviousRecipientTypeDetails="UserMailbox")
    env.cloud.patch_mailbox(fab, got[synced]["ExternalDirectoryObjectId"],
                            IsDirSynced=True)
    configure(env)
    r = env.run("sync")
    assert r.returncode == 1, r.stderr
    assert "PermanentlyClearPreviousMailboxInfo" in r.stderr
    assert "never runs it" in r.stderr
    assert "on-premises" in r.stderr
    for sid in (prev, synced):
        data = env.cloud.mailbox(fab, got[sid]["ExternalDirectoryObjectId"])
        assert data["ExchangeGuid"] == ZERO, sid
    got = copies(env)
    for sid in sids[2:]:
        check_ready(env, sid, got[sid])
    status = env.status()["links"][0]
    assert status["failed"] == 2


def move(env, sid, target):
    """Microsoft's cross-tenant move of source user `sid` onto its copy
    `target`, with what the move needs besides the copy (MIGRATION.md
    §1.2-1.3): the relationships, the published scope group, the
    licence capability."""
    src_id, fab = env.source["id"], env.tenants["fabrikam"]["id"]
    env.cloud.create_group(src_id, {
        "id": "7e1a0c55-0000-4000-8000-00000000abcd",
        "displayName": "Migration Scope", "mail": "scope@contoso.com",
        "mailNickname": "scope", "securityEnabled": True,
        "mailEnabled": True, "groupTypes": [], "members": [sid]})
    env.cloud.prepare_cross_tenant(src_id, fab, MIGRATION_APP,
                                   "Migration Scope")
    env.cloud.patch_mailbox(src_id, sid,
                            PersistedCapabilities=["ExchangeT2TMbxMove"])
    env.cloud.move_mailbox(src_id, sid, fab, target)


def test_hand_off_after_the_move(make_env):
    """Once the copy is a mailbox (the move done) galbridge writes nothing
    to it, removes nothing, and says so."""
    env = migration_env(make_env, users=20)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    src_id, fab = env.source["id"], env.tenants["fabrikam"]["id"]
    sid = sorted(mailboxes(env))[0]
    target = copies(env)[sid]["ExternalDirectoryObjectId"]
    move(env, sid, target)
    assert env.cloud.mailbox(fab, target)["RecipientTypeDetails"] == \
        "UserMailbox"
    before = env.cloud.user(fab, target)
    env.cloud.patch_user(src_id, sid, {"department": "After the move"})
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert "handed off" in r.stderr
    after = env.cloud.user(fab, target)
    assert after.get("department") == before.get("department")
    # Gone from the source: the mailbox in the target stays.
    env.cloud.delete_user(src_id, sid)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert env.cloud.mailbox(fab, target)["RecipientTypeDetails"] == \
        "UserMailbox"
    assert env.cloud.user(fab, target)["id"] == target


def anchored_to(env, tenant, plain):
    """Recipients of `tenant` whose anchor is `plain` (with or without
    its proof)."""
    return [r for r in env.cloud.recipients(tenant)
            if (r.get("CustomAttribute15") or "").split(":")[:3] ==
            plain.split(":")]


def exchange_writes(env):
    """{(tenant, cmdlet): calls} of every Exchange cmdlet but Get-* and
    Test-* in both tenants so far."""
    out = {}
    for name in ("contoso", "fabrikam"):
        tid = env.tenants[name]["id"]
        for cmdlet, n in env.cloud.stats(tid)["exchange"].items():
            if not cmdlet.startswith(("Get-", "Test-")):
                out[(name, cmdlet)] = n
    return out


def moved_env(make_env, reverse):
    """A migration link with a `reverse` link back, after its first
    round. Returns (env, source tenant id, target tenant id, a person
    with a mailbox, its copy's id)."""
    env = make_env(users=20)
    configure(env, reverse=reverse)
    src_id, fab = env.source["id"], env.tenants["fabrikam"]["id"]
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    sid = sorted(mailboxes(env))[0]
    target = copies(env)[sid]["ExternalDirectoryObjectId"]
    return env, src_id, fab, sid, target


def test_reverse_link_takes_over_the_mail_user_a_move_leaves(make_env):
    """With a reverse mail-user link, the mail user the move leaves in
    the source (the person's former object) becomes the reverse link's
    copy of the new mailbox: the person is in each GAL once, the moved
    mailbox is never written again, and no copy feeds another."""
    env, src_id, fab, sid, target = moved_env(make_env, "mailuser")
    plain = "galbridge:%s:%s" % (fab, target)
    # Before the move the copy is galbridge's: the reverse link leaves it.
    assert anchored_to(env, src_id, plain) == []
    move(env, sid, target)
    # The admin lets the person sign in to the new mailbox.
    env.cloud.patch_user(fab, target, {"jobTitle": "Moved",
                                       "accountEnabled": True})
    before = env.cloud.user(fab, target)
    for _ in range(3):
        r = env.run("sync")
        assert r.returncode == 0, r.stderr
        if anchored_to(env, src_id, plain):
            break
    log = r.stderr
    taken = anchored_to(env, src_id, plain)
    # Its former object, and nothing new: the person is in contoso once.
    assert [t["ExternalDirectoryObjectId"] for t in taken] == [sid], taken
    former = env.cloud.mailbox(src_id, sid)
    assert former["RecipientTypeDetails"] == "MailUser"
    user = env.cloud.user(src_id, sid)
    assert user.get("jobTitle") == "Moved"
    # The moved mailbox is the target's own: never written again.
    after = env.cloud.user(fab, target)
    assert after.get("department") == before.get("department")
    assert env.cloud.mailbox(fab, target)["RecipientTypeDetails"] == \
        "UserMailbox"
    status = {l["name"]: l for l in env.status()["links"]}
    assert status["contoso-to-fabrikam"]["failed"] == 0, log
    assert status["fabrikam-to-contoso"]["failed"] == 0, log
    # No loop: further rounds write nothing for either side.
    mark = exchange_writes(env)
    graph = env.cloud.stats(src_id)["patches"], env.cloud.stats(fab)["patches"]
    for _ in range(2):
        r = env.run("sync")
        assert r.returncode == 0, r.stderr
    assert exchange_writes(env) == mark
    assert (env.cloud.stats(src_id)["patches"],
            env.cloud.stats(fab)["patches"]) == graph
    # A change in the moved mailbox reaches its copy, the former object.
    env.cloud.patch_user(fab, target, {"jobTitle": "Moved and promoted"})
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert env.cloud.user(src_id, sid).get("jobTitle") == \
        "Moved and promoted"
    assert [t["ExternalDirectoryObjectId"] for t in
            anchored_to(env, src_id, plain)] == [sid]
    assert env.cloud.user(fab, target).get("department") == \
        before.get("department")


def test_take_over_refuses_a_former_object_with_another_anchor(make_env):
    """Someone writes another person's anchor on the mail user the move
    left: it proves nothing, so it is not taken over and not written;
    the person fails alone (everyone else is still synced)."""
    env, src_id, fab, sid, target = moved_env(make_env, "mailuser")
    move(env, sid, target)
    env.cloud.patch_user(fab, target, {"accountEnabled": True})
    forged = "galbridge:%s:%s" % (fab, "0000dead-0000-4000-8000-00000000beef")
    env.cloud.patch_user(src_id, sid, {"onPremisesExtensionAttributes": {
        "extensionAttribute15": forged}})
    before = env.cloud.mailbox(src_id, sid)
    logs, codes = "", []
    for _ in range(3):
        r = env.run("sync")
        logs += r.stderr
        codes.append(r.returncode)
    assert 1 in codes and set(codes) <= {0, 1}, (codes, logs)
    assert "carries another anchor" in logs
    after = env.cloud.mailbox(src_id, sid)
    assert after == before
    user = env.cloud.user(src_id, sid)
    assert user["onPremisesExtensionAttributes"]["extensionAttribute15"] \
        == forged
    status = {l["name"]: l for l in env.status()["links"]}
    reverse = status["fabrikam-to-contoso"]
    assert reverse["failed"] == 1 and reverse["objects"] > 0
    assert [(f["op"], f["error"]) for f in reverse["failures"]] == [
        ("take-over", "not taken over: the former source object %s carries "
         "another anchor; left alone" % sid)]


def test_reverse_link_copies_when_the_former_object_is_gone(make_env):
    """The mail user a move left was removed from the source afterwards
    (as Microsoft allows): nothing is taken over, and the reverse link
    makes a copy of the moved mailbox of its own, once."""
    env, src_id, fab, sid, target = moved_env(make_env, "mailuser")
    move(env, sid, target)
    env.cloud.patch_user(fab, target, {"accountEnabled": True})
    env.cloud.delete_user(src_id, sid)
    plain = "galbridge:%s:%s" % (fab, target)
    for _ in range(3):
        r = env.run("sync")
        assert r.returncode == 0, r.stderr
    made = anchored_to(env, src_id, plain)
    assert len(made) == 1, made
    assert made[0]["ExternalDirectoryObjectId"] != sid
    assert "take-over" not in r.stderr


def test_a_reverse_guest_link_leaves_the_moved_mailbox_out(make_env):
    """A reverse link of another kind takes nothing over: the moved
    mailbox stays out of its scope (the mail user the move left stands
    for the person in the source), so nobody is in a GAL twice."""
    env, src_id, fab, sid, target = moved_env(make_env, "guest")
    move(env, sid, target)
    env.cloud.patch_user(fab, target, {"accountEnabled": True})
    logs = ""
    for _ in range(2):
        r = env.run("sync")
        assert r.returncode == 0, r.stderr
        logs += r.stderr
    assert "handed off" in logs
    plain = "galbridge:%s:%s" % (fab, target)
    assert anchored_to(env, src_id, plain) == []
    # No guest of it either, while fabrikam's own people have theirs.
    anchors = [(u.get("onPremisesExtensionAttributes") or {}).get(
        "extensionAttribute15") or "" for u in env.cloud.users(src_id)]
    assert [a for a in anchors if a.startswith("galbridge:%s:" % fab)]
    assert not [a for a in anchors if a.startswith(plain)]
    assert env.cloud.mailbox(src_id, sid)["RecipientTypeDetails"] == \
        "MailUser"
    assert (env.cloud.mailbox(src_id, sid).get("CustomAttribute15")
            or "") == ""


def test_hostile_mailbox_fails_alone(make_env):
    """A source mailbox whose X500 address carries a control character
    fails that person only."""
    env = migration_env(make_env, users=20)
    src_id = env.source["id"]
    sids = sorted(mailboxes(env))
    env.cloud.patch_mailbox(src_id, sids[0],
                            x500=["X500:/o=Evil/cn=a\r\nInjected: 1"])
    r = env.run("sync")
    assert r.returncode == 1, r.stderr
    assert "source mailbox refused" in r.stderr
    got = copies(env)
    assert sids[0] not in got or env.cloud.mailbox(
        env.tenants["fabrikam"]["id"],
        got[sids[0]]["ExternalDirectoryObjectId"])["ExchangeGuid"] == ZERO
    for sid in sids[1:]:
        check_ready(env, sid, got[sid])


def test_a_contact_holding_the_x500_is_a_conflict(make_env):
    """A mail contact made by hand in the target that holds a source
    mailbox's X500 address (an older contact sync did that): the copy of
    that person fails with Exchange's reason, the contact is neither
    changed nor removed, every other copy is made ready."""
    from test_trust import exo_cmd
    env = migration_env(make_env, users=20)
    src_id = env.source["id"]
    sids = sorted(mailboxes(env))
    dn = env.cloud.mailbox(src_id, sids[0])["LegacyExchangeDN"]
    made = exo_cmd(env, "fabrikam", "New-MailContact",
                   {"Name": "Old contact", "ExternalEmailAddress":
                    "old.contact@partner.example"})
    contact = made[0]["ExternalDirectoryObjectId"]
    exo_cmd(env, "fabrikam", "Set-MailContact",
            {"Identity": contact, "EmailAddresses": {
                "@odata.type": "#Exchange.GenericHashTable",
                "Add": ["X500:" + dn]}})
    r = env.run("sync")
    assert r.returncode == 1, r.stderr
    status = env.run("status", "--json")
    assert status.returncode in (0, 1), status.stderr
    assert env.status()["links"][0]["failed"] == 1
    after = {x["ExternalDirectoryObjectId"]: x
             for x in env.cloud.recipients(env.tenants["fabrikam"]["id"])}
    assert "x500:" + dn.lower() in {a.lower() for a in
                                    after[contact]["EmailAddresses"]}
    got = copies(env)
    # The refused person's copy is there, anchored (provably galbridge's),
    # only not ready.
    assert env.cloud.mailbox(env.tenants["fabrikam"]["id"],
                             got[sids[0]]["ExternalDirectoryObjectId"])[
        "ExchangeGuid"] == ZERO
    assert "already being used" in r.stderr or "X500" in r.stderr
    for sid in sids[1:]:
        check_ready(env, sid, got[sid])


def test_stamps_changed_in_the_target_are_written_again(make_env):
    """An X500 address removed by hand from a ready copy, and another
    ExchangeGuid set on one, are put right by the next round (the copies
    are listed on Exchange's side each round); the others are left
    alone."""
    from test_trust import exo_cmd
    env = migration_env(make_env, users=20)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    src_id = env.source["id"]
    sids = sorted(mailboxes(env))
    got = copies(env)
    dn = env.cloud.mailbox(src_id, sids[0])["LegacyExchangeDN"]
    first, second = (got[s]["ExternalDirectoryObjectId"] for s in sids[:2])
    exo_cmd(env, "fabrikam", "Set-MailUser",
            {"Identity": first, "EmailAddresses": {
                "@odata.type": "#Exchange.GenericHashTable",
                "Remove": ["X500:" + dn]}})
    exo_cmd(env, "fabrikam", "Set-MailUser",
            {"Identity": second,
             "ExchangeGuid": "0f0f0f0f-1111-4222-8333-444455556666"})
    assert "x500:" + dn.lower() not in {
        a.lower() for a in copies(env)[sids[0]]["EmailAddresses"]}
    stats = env.cloud.stats(env.tenants["fabrikam"]["id"])["exchange"]
    before = stats.get("Set-MailUser", 0)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("stamps changed in the target") == 2, r.stderr
    got = copies(env)
    for sid in sids:
        check_ready(env, sid, got[sid])
    stats = env.cloud.stats(env.tenants["fabrikam"]["id"])["exchange"]
    assert stats.get("Set-MailUser", 0) - before == 2
    # Put right: the round after has nothing to write.
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert "stamps changed in the target" not in r.stderr
