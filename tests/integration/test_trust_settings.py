"""Cross-tenant access settings (issue 17): what `doctor` says about a
guest link's two tenants, and what `setup-trust LINK [--yes]` writes.

Each case sets both tenants' settings in fakecloud, runs the real binary
and checks its lines, its exit code, fakecloud's settings afterwards and
its request log (which writes were sent)."""

import copy

ALLOW = {"usersAndGroups": {"accessType": "allowed", "targets": [
    {"target": "AllUsers", "targetType": "user"}]}}
BLOCK = {"usersAndGroups": {"accessType": "blocked", "targets": [
    {"target": "AllUsers", "targetType": "user"}]},
    "applications": {"accessType": "blocked", "targets": [
        {"target": "AllApplications", "targetType": "application"}]}}
LINK = "contoso-to-fabrikam"
POLICY = "/v1.0/policies/crossTenantAccessPolicy"


def ids(env):
    return env.tenants["contoso"]["id"], env.tenants["fabrikam"]["id"]


def policy_writes(env, since=0):
    """(tenant, method, path) of every policy request but GETs."""
    return [(e["tenant"], e["method"], e["path"])
            for e in env.cloud.log(service="graph")
            if e["seq"] > since and e["path"].startswith(POLICY)
            and e["method"] != "GET"]


def policy_reads(env):
    return [e for e in env.cloud.log(service="graph")
            if e["path"].startswith(POLICY) and e["method"] == "GET"]


def last_seq(env):
    log = env.cloud.log()
    return log[-1]["seq"] if log else 0


def both(env):
    src, dst = ids(env)
    return (env.cloud.cross_tenant_access(src),
            env.cloud.cross_tenant_access(dst))


def trust_lines(r):
    """doctor's lines about the settings (with their fixes)."""
    out, keep = [], False
    for line in r.stdout.splitlines():
        if line.startswith("      -> ") and keep:
            out.append(line)
            continue
        keep = ("cross-tenant" in line or "partner entry" in line
                or "redeem" in line or "B2B collaboration" in line)
        if keep:
            out.append(line)
    return out


def test_doctor_reports_missing_settings_with_fixes(env):
    src, dst = ids(env)
    before = both(env)
    r = env.run("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    p = "link %s: " % LINK
    assert ("WARN  " + p + "tenant fabrikam has no partner entry for contoso"
            " in its cross-tenant access settings: automatic redemption "
            "cannot be set without one") in lines
    assert ("      -> galbridge setup-trust %s adds it; or in fabrikam's Entra"
            " admin center, External Identities > Cross-tenant access "
            "settings > Organizational settings > Add organization: %s"
            % (LINK, src)) in lines
    assert ("WARN  " + p + "tenant contoso has no partner entry for fabrikam"
            " in its cross-tenant access settings: automatic redemption "
            "cannot be set without one") in lines
    inbound = [l for l in lines if l.startswith(
        "WARN  " + p + "tenant fabrikam does not redeem invitations from "
        "contoso automatically (inbound; ")]
    assert len(inbound) == 1, r.stdout
    assert "consent prompt at first sign-in" in inbound[0]
    assert "invitation mail is not suppressed" in inbound[0]
    assert any(l.startswith("WARN  " + p + "tenant contoso does not redeem "
                            "invitations to fabrikam automatically "
                            "(outbound; ") for l in lines), r.stdout
    assert ("ok    " + p + "tenant fabrikam allows B2B collaboration inbound "
            "for contoso's users (default policy)") in lines
    assert ("ok    " + p + "tenant contoso allows B2B collaboration outbound "
            "for its users to fabrikam (default policy)") in lines
    assert ("ok    " + p + "tenant fabrikam does not let contoso sync users "
            "in with Entra cross-tenant synchronization (galbridge does not "
            "need it)") in lines
    assert lines[-1].startswith("doctor: every check passed, with warnings")
    # Read-only: nothing written, settings as they were.
    assert policy_writes(env) == []
    assert both(env) == before
    assert {e["tenant"] for e in policy_reads(env)} == {src, dst}


def test_doctor_all_set_and_cts_note(env):
    src, dst = ids(env)
    env.cloud.trust(src, dst, sync=True)
    r = env.run("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = trust_lines(r)
    assert not [l for l in lines if l.startswith(("WARN", "FAIL"))], lines
    assert not [l for l in lines if l.startswith("      -> ")], lines
    p = "link %s: " % LINK
    for text in ("tenant fabrikam has a partner entry for contoso",
                 "tenant contoso has a partner entry for fabrikam",
                 "tenant fabrikam redeems invitations from contoso "
                 "automatically (inbound)",
                 "tenant contoso redeems invitations to fabrikam "
                 "automatically (outbound)"):
        assert "ok    " + p + text in lines, (text, lines)
    [note] = [l for l in lines if l.startswith("note  " + p)]
    assert "tenant fabrikam lets contoso sync users in with Entra " \
        "cross-tenant synchronization" in note
    assert "takes over galbridge's guests" in note
    assert r.stdout.splitlines()[-1].startswith(
        "doctor: every check passed; ")


def test_doctor_fails_when_b2b_is_blocked(env):
    src, dst = ids(env)
    env.cloud.set_cross_tenant_access(dst, default={
        "b2bCollaborationInbound": BLOCK})
    # The source allows its users out on the partner entry, though its
    # default blocks them: the partner entry wins.
    env.cloud.set_cross_tenant_access(
        src, default={"b2bCollaborationOutbound": BLOCK},
        partners=[{"tenantId": dst, "b2bCollaborationOutbound": ALLOW}])
    r = env.run("doctor")
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    p = "link %s: " % LINK
    i = lines.index("FAIL  " + p + "tenant fabrikam blocks B2B collaboration "
                    "inbound for contoso's users (default policy): the link's"
                    " invitations are refused")
    assert lines[i + 1] == (
        "      -> galbridge setup-trust %s allows it on the partner entry "
        "only; or in fabrikam's Entra admin center, External Identities > "
        "Cross-tenant access settings > contoso > Inbound access > B2B "
        "collaboration > Allow access" % LINK)
    assert ("ok    " + p + "tenant contoso allows B2B collaboration outbound "
            "for its users to fabrikam (partner entry)") in lines
    assert lines[-1].startswith("doctor: some checks failed")


def test_doctor_without_policy_read_all(env):
    """A tenant that refuses the read: one line naming Policy.Read.All,
    the other tenant's settings and every other check still run, and
    doctor does not fail for it."""
    src, dst = ids(env)
    env.cloud.set_faults({"kind": "deny", "method": "GET",
                          "path": "^/v1.0/policies/", "tenant": dst,
                          "count": 100})
    r = env.run("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    p = "link %s: " % LINK
    denied = [l for l in lines if "Policy.Read.All" in l]
    assert denied == [
        "note  " + p + "tenant fabrikam's cross-tenant access settings for "
        "contoso not read: in tenant fabrikam (%s), grant the application "
        "Microsoft Graph permission Policy.Read.All and give admin consent "
        "to have them checked" % dst], r.stdout
    assert "ok    " + p + "read the target's users (fabrikam)" in lines
    assert "ok    tenant fabrikam: a Microsoft Graph token" in lines
    # The source's own settings were still read and judged.
    assert ("WARN  " + p + "tenant contoso has no partner entry for fabrikam"
            " in its cross-tenant access settings: automatic redemption "
            "cannot be set without one") in lines
    assert not any("tenant fabrikam has" in l or "tenant fabrikam allows" in l
                   for l in lines), r.stdout
    assert not any(l.startswith("FAIL") for l in lines), r.stdout


def test_doctor_and_setup_trust_for_a_contact_link(env):
    env.write_config(extra="[link c-contacts]\nsource = contoso\n"
                           "target = fabrikam\nobject = mailcontact\n"
                           "anchor = extensionAttribute14\n")
    text = open(env.conf).read().replace(
        "[link contoso-to-fabrikam]\nsource = contoso\ntarget = fabrikam\n"
        "object = guest\n", "")
    with open(env.conf, "w") as f:
        f.write(text)
    r = env.run("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    assert ("note  link c-contacts makes mail contacts in fabrikam, not B2B "
            "guests: nobody is invited, so no cross-tenant access settings "
            "are needed") in r.stdout.splitlines()
    assert policy_reads(env) == []
    before = both(env)
    r = env.run("setup-trust", "c-contacts", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == (
        "link c-contacts makes mail contacts in fabrikam, not B2B guests: "
        "nobody is invited, so no cross-tenant access settings are needed; "
        "nothing changed\n")
    assert policy_writes(env) == [] and both(env) == before


def test_setup_trust_dry_run_then_yes_then_again(env):
    src, dst = ids(env)
    before = both(env)
    r = env.run("setup-trust", LINK)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "link %s: guests of contoso in fabrikam" % LINK,
        "tenant fabrikam (%s): POST %s/partners" % (dst, POLICY),
        "    tenantId: (no partner entry) -> %s" % src,
        "tenant fabrikam (%s): PATCH %s/partners/%s" % (dst, POLICY, src),
        "    automaticUserConsentSettings.inboundAllowed: null -> true",
        "tenant contoso (%s): POST %s/partners" % (src, POLICY),
        "    tenantId: (no partner entry) -> %s" % dst,
        "tenant contoso (%s): PATCH %s/partners/%s" % (src, POLICY, dst),
        "    automaticUserConsentSettings.outboundAllowed: null -> true",
        "nothing changed; run again with --yes"]
    # The dry run changed nothing and sent no write.
    assert policy_writes(env) == []
    assert both(env) == before

    mark = last_seq(env)
    r = env.run("setup-trust", LINK, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.splitlines()
    assert out[-5:] == [
        "done  tenant fabrikam: POST %s/partners" % POLICY,
        "done  tenant fabrikam: PATCH %s/partners/%s" % (POLICY, src),
        "done  tenant contoso: POST %s/partners" % POLICY,
        "done  tenant contoso: PATCH %s/partners/%s" % (POLICY, dst),
        "link %s: cross-tenant access settings written and read back" % LINK]
    assert policy_writes(env, mark) == [
        (dst, "POST", POLICY + "/partners"),
        (dst, "PATCH", POLICY + "/partners/" + src),
        (src, "POST", POLICY + "/partners"),
        (src, "PATCH", POLICY + "/partners/" + dst)]
    # Exactly the fields asked for; nothing else set.
    target = env.cloud.partner_policy(dst, src)
    assert target["automaticUserConsentSettings"] == {
        "inboundAllowed": True, "outboundAllowed": None}
    source = env.cloud.partner_policy(src, dst)
    assert source["automaticUserConsentSettings"] == {
        "inboundAllowed": None, "outboundAllowed": True}
    for p in (target, source):
        for key in ("inboundTrust", "b2bCollaborationInbound",
                    "b2bCollaborationOutbound", "b2bDirectConnectInbound",
                    "b2bDirectConnectOutbound", "identitySynchronization"):
            assert p[key] is None, (key, p)
    after = both(env)
    assert [a["default"] for a in after] == [b["default"] for b in before]

    mark = last_seq(env)
    r = env.run("setup-trust", LINK, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "link %s: guests of contoso in fabrikam" % LINK,
        "link %s: cross-tenant access settings already set in fabrikam and "
        "contoso; nothing to change" % LINK]
    assert policy_writes(env, mark) == []
    assert both(env) == after
    # doctor agrees.
    r = env.run("doctor")
    assert r.returncode == 0
    assert not [l for l in trust_lines(r) if l.startswith(("WARN", "FAIL"))]


def test_setup_trust_leaves_other_settings_alone(env):
    """A partner entry an admin made, with MFA trust, outbound redemption,
    direct connect and cross-tenant synchronization: only
    inboundAllowed changes."""
    src, dst = ids(env)
    direct = copy.deepcopy(ALLOW)
    env.cloud.set_cross_tenant_access(dst, partners=[{
        "tenantId": src, "inboundTrust": {"isMfaAccepted": True},
        "automaticUserConsentSettings": {"outboundAllowed": True},
        "b2bDirectConnectInbound": direct,
        "identitySynchronization": {"displayName": "c",
                                    "userSyncInbound": {
                                        "isSyncAllowed": True}}}])
    env.cloud.set_cross_tenant_access(src, partners=[{
        "tenantId": dst,
        "automaticUserConsentSettings": {"outboundAllowed": True}}])
    before = env.cloud.partner_policy(dst, src)
    source_before = both(env)[0]
    r = env.run("setup-trust", LINK)
    assert r.returncode == 0
    assert r.stdout.splitlines()[1:] == [
        "tenant fabrikam (%s): PATCH %s/partners/%s" % (dst, POLICY, src),
        "    automaticUserConsentSettings.inboundAllowed: null -> true",
        "tenant contoso (%s): already set" % src,
        "nothing changed; run again with --yes"]
    mark = last_seq(env)
    r = env.run("setup-trust", LINK, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert policy_writes(env, mark) == [
        (dst, "PATCH", POLICY + "/partners/" + src)]
    after = env.cloud.partner_policy(dst, src)
    expected = copy.deepcopy(before)
    expected["automaticUserConsentSettings"]["inboundAllowed"] = True
    assert after == expected
    assert both(env)[0] == source_before


def test_setup_trust_allows_blocked_b2b_on_the_partner_only(env):
    src, dst = ids(env)
    env.cloud.set_cross_tenant_access(dst, default={
        "b2bCollaborationInbound": BLOCK})
    default_before = env.cloud.cross_tenant_access(dst)["default"]
    r = env.run("setup-trust", LINK, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert ("    b2bCollaborationInbound.usersAndGroups: null (default "
            "policy: blocked AllUsers) -> allowed AllUsers") in \
        r.stdout.splitlines()
    partner = env.cloud.partner_policy(dst, src)
    assert partner["b2bCollaborationInbound"] == {
        "usersAndGroups": ALLOW["usersAndGroups"],
        "applications": BLOCK["applications"]}
    assert partner["b2bCollaborationOutbound"] is None
    assert env.cloud.cross_tenant_access(dst)["default"] == default_before
    # The source's outbound was allowed by its default: untouched.
    assert env.cloud.partner_policy(src, dst)["b2bCollaborationOutbound"] \
        is None
    r = env.run("doctor")
    assert r.returncode == 0, r.stdout
    assert ("ok    link %s: tenant fabrikam allows B2B collaboration inbound "
            "for contoso's users (partner entry)" % LINK) in \
        r.stdout.splitlines()


def test_setup_trust_without_write_permission(env):
    src, dst = ids(env)
    env.cloud.set_faults({"kind": "deny", "method": "POST",
                          "path": "^/v1.0/policies/", "tenant": dst,
                          "count": 100})
    before = both(env)
    r = env.run("setup-trust", LINK, "--yes")
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert ("FAIL  tenant fabrikam: POST %s/partners: " % POLICY) in \
        "\n".join(lines)
    assert ("      -> in tenant fabrikam (%s), grant the application Microsoft"
            " Graph permission Policy.ReadWrite.CrossTenantAccess and give "
            "admin consent" % dst) in lines
    assert not any(l.startswith("done") for l in lines)
    assert both(env) == before
    assert policy_writes(env) == [(None, "POST", POLICY + "/partners")]


def test_setup_trust_unknown_link(env):
    r = env.run("setup-trust", "nope")
    assert r.returncode == 2
    assert r.stderr == "galbridge: no link named 'nope' in %s\n" % env.conf
    assert policy_reads(env) == []


def test_setup_trust_both_directions_keeps_each_other(make_env):
    """Guest links both ways: each run sets its own direction on the
    partner entry and sends the other direction back as it was read, so
    the second link does not undo the first."""
    env = make_env(users=5)
    env.write_config(reverse=True)
    src, dst = ids(env)
    for link in (LINK, "fabrikam-to-contoso"):
        r = env.run("setup-trust", link, "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
    both_ways = {"inboundAllowed": True, "outboundAllowed": True}
    assert env.cloud.partner_policy(dst, src)[
        "automaticUserConsentSettings"] == both_ways
    assert env.cloud.partner_policy(src, dst)[
        "automaticUserConsentSettings"] == both_ways
    mark = last_seq(env)
    for link in (LINK, "fabrikam-to-contoso"):
        r = env.run("setup-trust", link)
        assert "already set" in r.stdout, r.stdout
    assert policy_writes(env, mark) == []


def test_setup_trust_without_read_permission(env):
    src, dst = ids(env)
    env.cloud.set_faults({"kind": "deny", "method": "GET",
                          "path": "^/v1.0/policies/", "tenant": dst,
                          "count": 100})
    r = env.run("setup-trust", LINK, "--yes")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "FAIL  tenant fabrikam: cannot read its cross-tenant access "
        "settings: GET %s/partners: HTTP 403 Authorization_RequestDenied: "
        "Insufficient privileges to complete the operation." % POLICY,
        "      -> in tenant fabrikam (%s), grant the application Microsoft "
        "Graph permission Policy.Read.All (or "
        "Policy.ReadWrite.CrossTenantAccess, which setup-trust needs to "
        "write) and give admin consent" % dst]
    assert policy_writes(env) == []
