"""Mail contacts and mail users through the Exchange admin API."""
import signal

import client as fc

FIELDS = {  # Exchange property: source attribute (the built-in mapping)
    "DisplayName": "displayName", "FirstName": "givenName",
    "LastName": "surname", "Company": "companyName",
    "Department": "department", "Title": "jobTitle",
    "MobilePhone": "mobilePhone", "Office": "officeLocation",
    "City": "city", "CountryOrRegion": "country",
}


def recipients(env, kind, source="contoso", target="fabrikam"):
    """Anchored recipients of `kind` in target: {source id: [recipient]}."""
    prefix = "galbridge:%s:" % env.tenants[source]["id"]
    out = {}
    for r in env.cloud.recipients(env.tenants[target]["id"]):
        if r["RecipientTypeDetails"] != kind:
            continue
        anchor = r.get("CustomAttribute15") or ""
        if anchor.startswith(prefix):
            out.setdefault(anchor[len(prefix):].split(":")[0],
                           []).append(r)
    return out


def check(env, kind):
    want = env.in_scope()
    got = recipients(env, kind)
    assert set(got) == set(want)
    for sid, rs in got.items():
        assert len(rs) == 1, "duplicate %s for %s" % (kind, sid)
        r, u = rs[0], want[sid]
        assert r["HiddenFromAddressListsEnabled"] is False
        assert r["ExternalEmailAddress"].lower().endswith(u["mail"].lower())
        for prop, attr in FIELDS.items():
            assert (r.get(prop) or "") == (u.get(attr) or ""), (sid, prop)
        phones = u.get("businessPhones") or [""]
        assert (r.get("Phone") or "") == phones[0]
        assert len(r["Name"]) <= 64


def run_kind(make_env, kind, object_name, users):
    env = make_env(users=users)
    text = open(env.conf).read().replace("object = guest",
                                         "object = %s" % object_name)
    with open(env.conf, "w") as f:
        f.write(text)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    check(env, kind)
    ids = sorted(env.in_scope())
    env.cloud.patch_user(env.source["id"], ids[0], {"jobTitle": "Moved"})
    env.cloud.delete_user(env.source["id"], ids[1])
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    check(env, kind)
    assert recipients(env, kind)[ids[0]][0]["Title"] == "Moved"
    assert ids[1] not in recipients(env, kind)
    return env


def test_mail_contacts(make_env):
    run_kind(make_env, "MailContact", "mailcontact", 1000)


def test_a_new_contact_costs_three_cmdlets(make_env):
    """A create that never sent its New-MailContact sends it at once, then
    Set-Contact and Set-MailContact: the round's listing of the link's
    contacts stands for the lookups. Each contact is whole (anchored,
    visible, its values), as check() asserts."""
    env = make_env(users=60)
    fab = env.tenants["fabrikam"]["id"]
    text = open(env.conf).read().replace("object = guest",
                                         "object = mailcontact")
    with open(env.conf, "w") as f:
        f.write(text)
    before = dict(env.cloud.stats(fab)["exchange"])
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    check(env, "MailContact")
    n = len(env.in_scope())
    sent = {k: v - before.get(k, 0)
            for k, v in env.cloud.stats(fab)["exchange"].items()}
    assert sent["New-MailContact"] == sent["Set-Contact"] == \
        sent["Set-MailContact"] == n, sent
    # One listing of the link's contacts for the round, no lookup each.
    assert sent.get("Get-MailContact", 0) == 1, sent
    assert sent.get("Get-Recipient", 0) == 0, sent


def test_mail_users(make_env):
    run_kind(make_env, "MailUser", "mailuser", 120)


def test_homonyms_and_a_foreign_contact(make_env):
    env = make_env(users=30)
    people = sorted(env.in_scope().values(), key=lambda u: u["id"])
    for u in people[:3]:
        env.cloud.patch_user(env.source["id"], u["id"],
                             {"displayName": "Jane Smith"})
    foreign = people[5]
    fab = env.tenants["fabrikam"]["id"]
    env.cloud.create_contact(fab, {"displayName": "Not Ours",
                                   "mail": foreign["mail"]})
    text = open(env.conf).read().replace("object = guest",
                                         "object = mailcontact")
    with open(env.conf, "w") as f:
        f.write(text)
    r = env.run("sync")
    assert r.returncode == 1
    got = recipients(env, "MailContact")
    names = [got[u["id"]][0]["Name"] for u in people[:3]]
    assert len(set(names)) == 3
    assert all(got[u["id"]][0]["DisplayName"] == "Jane Smith"
               for u in people[:3])
    assert foreign["id"] not in got
    st = env.status()["links"][0]
    assert st["failed"] == 1
    assert st["failures"][0]["source_id"] == foreign["id"]
    assert "Not Ours" in st["failures"][0]["error"] or \
        "already being used" in st["failures"][0]["error"]
    # Exchange refused the New-MailContact; the lookup it then made found
    # the holder, and nothing more was sent for that person.
    assert "conflict" in st["failures"][0]["error"], st["failures"][0]
    # The foreign contact is untouched.
    mine = [c for c in env.cloud.contacts(fab)
            if c.get("displayName") == "Not Ours"]
    assert len(mine) == 1


def test_kill_mid_round_no_duplicate_contact(make_env):
    kill_mid_round(make_env, "mailcontact", "MailContact")


def test_kill_mid_round_no_duplicate_mail_user(make_env):
    kill_mid_round(make_env, "mailuser", "MailUser")


def kill_mid_round(make_env, object_name, kind):
    env = make_env(users=200)
    text = open(env.conf).read().replace("object = guest",
                                         "object = %s" % object_name)
    with open(env.conf, "w") as f:
        f.write(text)
    env.cloud.set_knobs(latency_ms=15)
    proc = env.start("sync")
    fc.wait_for(lambda: len(recipients(env, kind)) >= 20 or
                proc.poll() is not None, timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    env.cloud.set_knobs(latency_ms=0)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    check(env, kind)
    made = [r for r in env.cloud.recipients(env.tenants["fabrikam"]["id"])
            if r["RecipientTypeDetails"] == kind]
    assert len(made) == len(env.in_scope())


def test_doctor(make_env):
    env = make_env(users=5)
    env.write_config(extra="[link c-contacts]\nsource = contoso\n"
                           "target = fabrikam\nobject = mailcontact\n"
                           "anchor = extensionAttribute14\n")
    r = env.run("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "ok    tenant contoso: a Microsoft Graph token" in lines
    assert "ok    tenant fabrikam: an Exchange Online token" in lines
    assert "ok    link c-contacts: list mail contacts in fabrikam" in lines
    assert not any(l.startswith("FAIL") for l in lines)
    # Nothing was written anywhere.
    assert env.writes() == {"invitations": 0, "patches": 0, "deletes": 0,
                            "restores": 0}
    env.write_secret("contoso", "not-it")
    r = env.run("doctor")
    assert r.returncode == 1
    assert "FAIL  tenant contoso: a Microsoft Graph token" in r.stdout
    assert "AADSTS7000215" in r.stdout
    assert "check tenant contoso's tenant_id, client_id" in r.stdout
    assert "not-it" not in r.stdout + r.stderr


def test_guests_visible_on_the_exchange_side(make_env):
    env = make_env(users=30)
    text = open(env.conf).read().replace(
        "[tenant fabrikam]\n", "[tenant fabrikam]\nexchange = yes\n")
    with open(env.conf, "w") as f:
        f.write(text)
    fab = env.tenants["fabrikam"]["id"]
    env.cloud.set_knobs(exo_guest_provisioning_ms=2000)
    assert env.run("sync").returncode == 0
    n = len(env.in_scope())
    # Exchange has not provisioned the guests yet: status says so.
    st = env.status()["links"][0]
    assert st["guests_not_visible"] == n
    assert len(st["guests_not_visible_first"]) == min(n, 20)
    assert "guests not yet seen visible" in env.run("status").stdout
    # One guest's GAL flag did not take on the directory side.
    hidden = sorted(env.copies().values(), key=lambda c: c[0]["id"])[0][0]
    env.cloud.patch_user(fab, hidden["id"], {"showInAddressList": False})
    fc.wait_for(lambda: len(recipients(env, "GuestMailUser")) == n,
                timeout=30, what="guests provisioned in Exchange")
    assert env.run("sync").returncode == 0
    assert env.status()["links"][0]["guests_not_visible"] == 0
    guests = recipients(env, "GuestMailUser")
    assert all(r[0]["HiddenFromAddressListsEnabled"] is False
               for r in guests.values())
    assert env.cloud.stats(fab)["exchange"].get("Set-MailUser") == 1


def test_extra_addresses_added_and_removed(make_env):
    env = make_env(users=10)
    text = open(env.conf).read().replace("object = guest",
                                         "object = mailcontact\n"
                                         "mapping = extra")
    text += "[mapping extra]\nEmailAddresses = otherMails\n"
    with open(env.conf, "w") as f:
        f.write(text)
    sid = sorted(env.in_scope())[0]
    env.cloud.patch_user(env.source["id"], sid,
                         {"otherMails": ["first.alt@contoso.com"]})
    r = env.run("sync")
    assert r.returncode == 0, r.stderr

    def addresses():
        return [a.lower() for a in
                recipients(env, "MailContact")[sid][0]["EmailAddresses"]]
    assert "smtp:first.alt@contoso.com" in addresses()
    env.cloud.patch_user(env.source["id"], sid,
                         {"otherMails": ["second.alt@contoso.com"]})
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert "smtp:second.alt@contoso.com" in addresses()
    assert "smtp:first.alt@contoso.com" not in addresses()
    check(env, "MailContact")


def test_exchange_throttling_is_retried(make_env):
    """Exchange answers 429 (rate) and its concurrent-requests answer;
    galbridge backs off and converges, and sends nothing on a connection
    that carried a 429 before its Retry-After has passed (not even a
    request that was about to leave: fakecloud counts per connection)."""
    env = make_env(users=15)
    text = open(env.conf).read().replace("object = guest",
                                         "object = mailcontact")
    with open(env.conf, "w") as f:
        f.write(text)
    env.cloud.set_knobs(exo_max_concurrent=3, exo_rate_limit=25,
                        latency_ms=10)
    r = env.run("sync", timeout=300)
    assert r.returncode == 0, r.stderr
    check(env, "MailContact")
    refused = [e for e in env.cloud.log(service="exchange")
               if e["status"] == 429]
    assert refused, "the knobs should have made Exchange refuse some calls"
    stats = env.cloud.throttle_stats(env.tenants["fabrikam"]["id"])
    assert stats["connection_early"] == 0, stats["connection_early_examples"]
