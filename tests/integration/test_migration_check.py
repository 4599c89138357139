"""galbridge migration-check against fakecloud.

A mail user link with migration = yes copies contoso's mailboxes to
fabrikam (galbridge sync stamps the copies); the cross-tenant set-up of
both tenants (organization relationships, the migration endpoint, the
published-scope group, licences) is seeded through fakecloud's admin API.
migration-check then reads both tenants and the state, read-only, and
says who can be moved and what to fix. Every assertion is on what the
real binary printed and exited with, or on what fakecloud saw.
"""
import hashlib
import json
import os

import client as fc
from conftest import GALBRIDGE
from test_daemon import Daemon

APP = "cccccccc-3333-4333-8333-000000000003"
OTHER_APP = "dddddddd-4444-4444-8444-000000000004"
LINK = "contoso-to-fabrikam"


def migration_env(make_env, users=8):
    """An Env whose link makes mail users with migration = yes (the source
    reads its mailboxes through Exchange)."""
    env = make_env(users=users)
    env.write_migration_config()
    env.src = env.tenants["contoso"]["id"]
    env.dst = env.tenants["fabrikam"]["id"]
    env.people = sorted(env.in_scope())
    return env


def set_up(env, members=None, target_capability="Inbound",
           source_capability="RemoteOutbound", endpoint=None, scopes=True,
           licensed=None):
    """The documented one-time set-up: the published-scope group "Movers"
    (mail-enabled security) in the source with `members` (default: every
    person), the source's RemoteOutbound and the target's Inbound
    relationships, the target's endpoint, the licence on the source
    mailboxes of `licensed` (default: every person)."""
    members = env.people if members is None else members
    env.cloud.create_group(env.src, {
        "displayName": "Movers", "mail": "movers@contoso.com",
        "mailNickname": "movers", "securityEnabled": True,
        "mailEnabled": True, "groupTypes": [], "members": members})
    env.cloud.add_organization_relationship(env.src, {
        "Name": "To Fabrikam", "DomainNames": [env.dst],
        "MailboxMoveEnabled": True,
        "MailboxMoveCapability": source_capability,
        "OAuthApplicationId": APP,
        "MailboxMovePublishedScopes": ["Movers"] if scopes else []})
    env.cloud.add_organization_relationship(env.dst, {
        "Name": "From Contoso", "DomainNames": [env.src],
        "MailboxMoveEnabled": True,
        "MailboxMoveCapability": target_capability})
    env.cloud.add_migration_endpoint(env.dst, endpoint or {
        "Name": "contoso", "RemoteTenant": "contoso.onmicrosoft.com",
        "ApplicationId": APP})
    for sid in env.people if licensed is None else licensed:
        env.cloud.patch_mailbox(env.src, sid,
                                PersistedCapabilities=["ExchangeT2TMbxMove"])


def sync(env):
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    return {sid: copies[0] for sid, copies in env.copies().items()}


def check_json(env, *args):
    r = env.run("migration-check", "--json", *args)
    report = json.loads(r.stdout)
    return r.returncode, report


def checks_by_what(link):
    return {c["what"]: c for c in link["checks"]}


def users_by_id(link):
    return {u["source_id"]: u for u in link["users"]}


def exchange_writes(env):
    """Exchange cmdlets that change something, run in either tenant."""
    out = {}
    for tid in (env.src, env.dst):
        counts = env.cloud.stats(tid).get("exchange", {})
        out[tid] = {k: v for k, v in counts.items()
                    if not k.startswith(("Get-", "Test-"))}
    return out


def state_digest(env):
    with open(os.path.join(env.state_dir, "state.db"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_ready_pair(make_env):
    """Everything set up: exit 0 in each format, every check ok, the
    endpoint tested with a TARGET address, the CSV lists every person's
    target address; nothing written to either tenant or to the state, and
    a running daemon is not disturbed."""
    env = migration_env(make_env, users=6)
    set_up(env)
    copies = sync(env)
    assert set(copies) == set(env.people)
    source_mail = {u["id"]: u["mail"] for u in env.in_scope().values()}
    writes, graph, digest = exchange_writes(env), env.writes(), \
        state_digest(env)

    r = env.run("migration-check")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("link %s: mailboxes of contoso (%s) moving "
                               "to fabrikam (%s)" % (LINK, env.src, env.dst))
    assert all(l.startswith(("ok    ", "link ")) for l in lines), r.stdout
    assert "FAIL" not in r.stdout
    for what in ("target fabrikam: organization customization enabled",
                 "source contoso: organization customization enabled",
                 "target fabrikam: relationship 'From Contoso': "
                 "MailboxMoveCapability has Inbound",
                 "target fabrikam: endpoint 'contoso': RemoteServer "
                 "outlook.office.com",
                 "target fabrikam: endpoint 'contoso': EndpointType "
                 "ExchangeRemoteMove",
                 "source contoso: relationship 'To Fabrikam': "
                 "OAuthApplicationId is the endpoint's ApplicationId " + APP,
                 "source contoso: relationship 'To Fabrikam': "
                 "MailboxMovePublishedScopes Movers"):
        assert any(l.startswith("ok    " + what) for l in lines), what
    tested = [l for l in lines if "Test-MigrationServerAvailability" in l]
    assert len(tested) == 1
    # The TestMailbox is a target address (MIGRATION.md §1.3).
    target_mail = {sid: c["mail"] for sid, c in copies.items()}
    assert tested[0].split("-TestMailbox ")[1] in target_mail.values()
    for sid in env.people:
        assert "ok    user %s -> %s" % (source_mail[sid],
                                        target_mail[sid]) in lines
    assert lines[-1] == "link %s: 6 of 6 users ready; 0 checks failed" % LINK

    rc, report = check_json(env)
    assert rc == 0
    assert list(report) == ["links"] and len(report["links"]) == 1
    link = report["links"][0]
    assert set(link) == {"name", "checks", "users"} and link["name"] == LINK
    for c in link["checks"]:
        assert set(c) == {"subject", "what", "ok", "detail", "fix"}
        assert c["ok"] is True and c["detail"] is None and c["fix"] is None
    assert len(link["users"]) == 6
    for u in link["users"]:
        assert {"source_id", "source_address", "target_address", "ready",
                "missing"} <= set(u)
        assert u["ready"] is True and u["missing"] == []
        assert u["source_address"] == source_mail[u["source_id"]]
        assert u["target_address"] == target_mail[u["source_id"]]

    r = env.run("migration-check", "--csv")
    assert r.returncode == 0
    rows = r.stdout.splitlines()
    assert rows[0] == "EmailAddress"
    assert sorted(rows[1:]) == sorted(target_mail.values())
    assert "6 of 6 users ready" in r.stderr

    # Read-only: no Exchange write, no Graph write, the state untouched.
    assert exchange_writes(env) == writes
    assert env.writes() == graph
    assert state_digest(env) == digest

    # Beside a running daemon (it holds the state's lock): works, and the
    # daemon goes on.
    daemon = Daemon(env)
    try:
        daemon.wait_key("READY=1")
        r = env.run("migration-check", LINK)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.splitlines()[-1].startswith(
            "link %s: 6 of 6 users ready" % LINK)
        assert daemon.proc.poll() is None
    finally:
        assert daemon.stop() == 0


def test_each_failure_with_its_fix(make_env):
    """One thing wrong per person, and the target's relationship without
    Inbound: each is found, with its fix; the two-way capability on the
    source passes; only the ready people are in the CSV; exit 1."""
    env = migration_env(make_env, users=8)
    p = env.people
    set_up(env, members=p[1:], target_capability="RemoteOutbound",
           source_capability="Inbound, RemoteOutbound", licensed=p[:-1])
    env.cloud.patch_mailbox(env.src, p[2], LitigationHoldEnabled=True)
    copies = sync(env)
    # Changed in the target after galbridge stamped them.
    env.cloud.patch_mailbox(env.dst, copies[p[3]]["id"], x500=[])
    proxies = env.cloud.user(env.dst, copies[p[4]]["id"])["proxyAddresses"]
    env.cloud.patch_user(env.dst, copies[p[4]]["id"], {
        "proxyAddresses": proxies + ["smtp:old.address@contoso.com"]})
    env.cloud.patch_mailbox(env.dst, copies[p[5]]["id"], SKUAssigned=True)

    r = env.run("migration-check")
    assert r.returncode == 1
    out = r.stdout
    assert ("FAIL  target fabrikam: relationship 'From Contoso': "
            "MailboxMoveCapability has Inbound: MailboxMoveCapability is "
            "RemoteOutbound\n      -> in fabrikam: Set-OrganizationRelation"
            "ship 'From Contoso' -MailboxMoveCapability 'Inbound, "
            "RemoteOutbound'\n") in out
    assert ("ok    source contoso: relationship 'To Fabrikam': "
            "MailboxMoveCapability has RemoteOutbound\n") in out
    assert ("      -> in contoso: Add-DistributionGroupMember -Identity "
            "'Movers' -Member <its source address> (1 user)\n") in out
    assert ("      -> assign the Cross Tenant User Data Migration licence "
            "to the user in contoso or in fabrikam (1 user)\n") in out
    assert out.splitlines()[-1] == \
        "link %s: 2 of 8 users ready; 2 checks failed" % LINK

    rc, report = check_json(env)
    assert rc == 1
    link = report["links"][0]
    users = users_by_id(link)
    want = {
        p[0]: ["not a member of the published-scope group Movers"],
        p[1]: [],
        p[2]: ["on hold in the source: LitigationHold"],
        p[3]: ["X500 address of the source's LegacyExchangeDN missing"],
        p[4]: ["address old.address@contoso.com is in a domain fabrikam "
               "does not accept"],
        p[5]: ["the target object is licensed"],
        p[6]: [],
        p[7]: ["no Cross Tenant User Data Migration licence (on the source "
               "mailbox or the target MailUser)"],
    }
    assert {sid: u["missing"] for sid, u in users.items()} == want
    assert {sid for sid, u in users.items() if u["ready"]} == {p[1], p[6]}
    assert "Set-MailUser <its target> -EmailAddresses " \
        "@{add='X500:<the source's value>'}" in users[p[3]]["fixes"][0]
    assert "@{remove='smtp:<that address>'}" in users[p[4]]["fixes"][0]
    assert "remove its licences" in users[p[5]]["fixes"][0]
    # The endpoint is tested with a ready person's target address, and
    # Exchange's cause of the failure is shown.
    test = [c for c in link["checks"]
            if c["what"].startswith("Test-MigrationServerAvailability")][0]
    assert test["ok"] is False
    assert test["what"].endswith("-TestMailbox " + copies[p[1]]["mail"])
    assert "CrossTenantMigrationNotAuthorizedPermanentException" in \
        test["detail"]
    failed = [c["what"] for c in link["checks"] if not c["ok"]]
    assert failed == ["relationship 'From Contoso': MailboxMoveCapability "
                      "has Inbound", test["what"]]

    r = env.run("migration-check", "--csv")
    assert r.returncode == 1
    assert r.stdout.splitlines() == ["EmailAddress", copies[p[1]]["mail"],
                                     copies[p[6]]["mail"]]
    assert "2 of 8 users ready (in the CSV); 2 checks failed" in r.stderr

    # The hold released in the source: the next sync reads the mailbox
    # again, and migration-check finds that person ready.
    env.cloud.patch_mailbox(env.src, p[2], LitigationHoldEnabled=False)
    sync(env)
    _, report = check_json(env, LINK)
    assert users_by_id(report["links"][0])[p[2]]["ready"] is True


def test_set_up_failures(make_env):
    """A dehydrated target, an endpoint on the wrong server without an
    application, a source relationship with another application and no
    published scope: each a failed check with its fix; membership is then
    not judged (no scope to read)."""
    env = migration_env(make_env, users=3)
    set_up(env, scopes=False, endpoint={
        "Name": "contoso", "RemoteTenant": "contoso.onmicrosoft.com",
        "RemoteServer": "outlook.office365.com"})
    env.cloud.set_organization_config(env.dst, True)
    sync(env)

    rc, report = check_json(env)
    assert rc == 1
    checks = checks_by_what(report["links"][0])
    org = {c["subject"]: c for c in report["links"][0]["checks"]
           if c["what"] == "organization customization enabled "
           "(IsDehydrated false)"}
    assert org["source contoso"]["ok"] is True
    assert org["target fabrikam"]["ok"] is False
    assert org["target fabrikam"]["detail"] == "IsDehydrated is true"
    assert org["target fabrikam"]["fix"] == \
        "in fabrikam: Enable-OrganizationCustomization"
    server = checks["endpoint 'contoso': RemoteServer outlook.office.com"]
    assert server["detail"] == "RemoteServer is outlook.office365.com"
    assert server["fix"] == ("in fabrikam: Set-MigrationEndpoint 'contoso' "
                             "-RemoteServer outlook.office.com")
    app = checks["endpoint 'contoso': ApplicationId"]
    assert app["ok"] is False
    assert "-ApplicationId " + APP in app["fix"]
    oauth = checks["relationship 'To Fabrikam': OAuthApplicationId " + APP]
    assert oauth["subject"] == "source contoso" and oauth["ok"] is True
    scope = checks["relationship 'To Fabrikam': MailboxMovePublishedScopes"]
    assert scope["ok"] is False
    assert "-MailboxMovePublishedScopes" in scope["fix"]
    for u in report["links"][0]["users"]:
        assert u["ready"] is True and u["missing"] == []

    # Another application on the endpoint than the source relationship's:
    # the endpoint is still found by its RemoteTenant, and the source's
    # OAuthApplicationId is the failure.
    env.cloud.add_migration_endpoint(env.dst, {
        "Name": "contoso-2", "RemoteTenant": "contoso.onmicrosoft.com",
        "ApplicationId": OTHER_APP})
    _, report = check_json(env)
    checks = checks_by_what(report["links"][0])
    found = [w for w in checks if w.startswith("migration endpoint for")]
    assert found == ["migration endpoint for contoso: 'contoso-2'"]
    oauth = checks["relationship 'To Fabrikam': OAuthApplicationId is the "
                   "endpoint's ApplicationId " + OTHER_APP]
    assert oauth["ok"] is False
    assert oauth["detail"] == "OAuthApplicationId is " + APP
    assert oauth["fix"] == ("in contoso: Set-OrganizationRelationship 'To "
                            "Fabrikam' -OAuthApplicationId " + OTHER_APP)


def test_nothing_set_up_and_no_state(make_env):
    """Before any sync: no state (and none made), the set-up missing, each
    failure with the command that makes it."""
    env = migration_env(make_env, users=3)
    rc, report = check_json(env)
    assert rc == 1
    assert not os.path.exists(os.path.join(env.state_dir, "state.db"))
    link = report["links"][0]
    assert link["users"] == []
    checks = checks_by_what(link)
    state = checks["copies of source mailboxes in the state"]
    assert state["subject"] == "link " + LINK
    assert state["detail"] == "there is no state yet"
    rel = checks["organization relationship for contoso (DomainNames has %s)"
                 % env.src]
    assert rel["fix"] == (
        "in fabrikam: New-OrganizationRelationship 'contoso' -Enabled:$true "
        "-MailboxMoveEnabled:$true -MailboxMoveCapability Inbound "
        "-DomainNames " + env.src)
    ep = checks["migration endpoint for contoso"]
    assert ep["detail"] == "the target has no migration endpoint"
    assert ep["fix"].startswith(
        "in fabrikam: New-MigrationEndpoint -Name 'contoso' -RemoteServer "
        "outlook.office.com -RemoteTenant 'contoso.onmicrosoft.com' "
        "-ExchangeRemoteMove:$true")
    src = checks["organization relationship for fabrikam (DomainNames has "
                 "%s)" % env.dst]
    assert src["subject"] == "source contoso"
    assert "-MailboxMoveCapability RemoteOutbound -DomainNames " + env.dst \
        in src["fix"]


def test_usage_and_config_errors(make_env):
    env = make_env(users=3)
    # No link has migration = yes.
    r = env.run("migration-check")
    assert r.returncode == 2
    assert "no link in %s has migration = yes" % env.conf in r.stderr
    # A guest link named: a usage error naming the key and the section.
    r = env.run("migration-check", LINK)
    assert r.returncode == 2
    line = open(env.conf).read().splitlines().index("[link %s]" % LINK) + 1
    assert ("link '%s' does not have migration = yes (%s:%d)"
            % (LINK, env.conf, line)) in r.stderr
    assert r.stdout == ""

    env.write_config(extra="[link mig]\nsource = contoso\ntarget = fabrikam\n"
                           "object = mailuser\nmigration = yes\n")
    text = open(env.conf).read().replace("[tenant contoso]\n",
                                         "[tenant contoso]\nexchange = yes\n")
    with open(env.conf, "w") as f:
        f.write(text)
    for args in (("nosuch",), ("--json", "--csv"), ("mig", "other"),
                 ("--bogus",)):
        r = env.run("migration-check", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stdout == "", args
    assert "no link named 'nosuch'" in env.run("migration-check",
                                               "nosuch").stderr
    assert "--json and --csv cannot be combined" in env.run(
        "migration-check", "--csv", "--json").stderr

    with open(env.conf, "a") as f:
        f.write("bogus_key = 1\n")
    r = env.run("migration-check")
    assert r.returncode == 78
    assert env.conf + ":" in r.stderr and "bogus_key" in r.stderr

    r = env.run("--help")
    assert "migration-check [LINK] [--json | --csv]" in r.stdout


def test_refused_credentials(make_env):
    """The source refuses galbridge's credentials: one failed check says
    so, with its fix, and the source is not asked again; the target's
    checks still run."""
    env = migration_env(make_env, users=3)
    set_up(env)
    env.write_secret("contoso", "not-the-secret")
    rc, report = check_json(env)
    assert rc == 1
    checks = report["links"][0]["checks"]
    source = [c for c in checks if c["subject"] == "source contoso"]
    assert len(source) == 1
    assert source[0]["ok"] is False
    assert "invalid_client" in source[0]["detail"]
    assert source[0]["fix"].startswith(
        "check tenant contoso's tenant_id, client_id and its client secret")
    target = checks_by_what(report["links"][0])
    assert target["relationship 'From Contoso': MailboxMoveCapability has "
                  "Inbound"]["ok"] is True
    assert target["endpoint 'contoso': ApplicationId " + APP]["ok"] is True


def test_roles_missing(make_env):
    """The application lacks an Exchange role for some reads (the cmdlet
    is not in its session): each such read is one failed check naming the
    role to grant; what does not depend on it is still checked, and
    nothing is guessed for what does."""
    env = migration_env(make_env, users=3)
    set_up(env)
    sync(env)
    env.cloud.set_knobs(exo_cmdlets_denied=[
        "Get-MigrationEndpoint", "Test-MigrationServerAvailability"])
    rc, report = check_json(env)
    assert rc == 1
    link = report["links"][0]
    refused = [c for c in link["checks"] if not c["ok"]]
    assert refused, link["checks"]
    endpoint = [c for c in refused if "Get-MigrationEndpoint" in
                c["what"] + c["detail"]]
    assert len(endpoint) == 1, refused
    assert endpoint[0]["subject"] == "target fabrikam"
    assert "give galbridge's application the Exchange role" in \
        endpoint[0]["fix"]
    assert "View-Only Configuration" in endpoint[0]["fix"]
    # The relationships are still read and checked.
    checks = checks_by_what(link)
    assert checks["relationship 'From Contoso': MailboxMoveCapability has "
                  "Inbound"]["ok"] is True
    # Nothing about the endpoint is claimed from a read that failed.
    assert not [c for c in link["checks"] if c["ok"] and
                c["what"].startswith("endpoint ")]
    # The text form says the same, with exit 1.
    r = env.run("migration-check")
    assert r.returncode == 1
    assert "View-Only Configuration" in r.stdout
