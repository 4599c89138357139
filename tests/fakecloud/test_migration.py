"""fakecloud models what Exchange Online needs for mailbox-migration-ready
mail users (galbridge issue 16).

Run:  /usr/bin/python3 -m pytest tests/fakecloud/test_migration.py -q

Mailbox data (GUIDs, LegacyExchangeDN, X500s, holds, licences,
WhenChanged), Get-Mailbox and its date filters, $select, Set-MailUser's
GUIDs, X500s, accepted domains and directory-synced objects, the
migration set-up cmdlets, Test-MigrationServerAvailability, and the admin
API's moves and licences.  One real fakecloud per module (conftest.py),
reset and seeded before each test.
"""

import datetime
import hashlib
import json
import re
import urllib.parse
import uuid

import pytest

import seed_demo
from client import EXCHANGE_SCOPE, GRAPH_SCOPE, FakeCloudError
from fctest import uid

SRC = "aaaaaaaa-0000-4000-8000-00000000c001"
SRC_DOMAIN = "contoso.onmicrosoft.com"
DST = "aaaaaaaa-0000-4000-8000-00000000f001"
DST_DOMAIN = "fabrikam.onmicrosoft.com"
APP = "bbbbbbbb-0000-4000-8000-00000000c001"
APP2 = "bbbbbbbb-0000-4000-8000-00000000f001"
MIGRATION_APP = "cccccccc-0000-4000-8000-000000000001"
SECRET = "s3cret"
NAMESPACE = uuid.UUID("f10e1128-9b0b-50b4-95ad-0101262ab3fb")
ZERO = "00000000-0000-0000-0000-000000000000"
DN = re.compile(r"^/o=ExchangeLabs/ou=Exchange Administrative Group "
                r"\(FYDIBOHF23SPDLT\)/cn=Recipients/cn=([0-9a-f]{32})-(.+)$")
ALICE, BOB, CAROL, GUEST, DAVE = uid(1), uid(2), uid(3), uid(4), uid(5)
SCOPE_GROUP, NESTED_GROUP, PLAIN_GROUP = uid(90), uid(91), uid(92)


def person(n, name, **props):
    user = {"id": uid(n), "displayName": name.title(),
            "mail": f"{name}@contoso.com", "mailNickname": name}
    user.update(props)
    return user


def seed():
    return {"tenants": [
        {"id": SRC, "domain": SRC_DOMAIN,
         "apps": [{"client_id": APP, "secrets": [SECRET]}],
         "users": [person(1, "alice"), person(2, "bob"),
                   {"id": CAROL, "displayName": "Carol No Mail"},
                   {"id": GUEST, "displayName": "Guest",
                    "mail": "guest@partner.example", "userType": "Guest",
                    "creationType": "Invitation"},
                   person(5, "dave")],
         "groups": [
             {"id": SCOPE_GROUP, "displayName": "Migration Scope",
              "mail": "scope@contoso.com", "mailNickname": "scope",
              "securityEnabled": True, "mailEnabled": True,
              "groupTypes": [], "members": [ALICE, NESTED_GROUP]},
             {"id": NESTED_GROUP, "displayName": "Nested Scope",
              "mail": "nested@contoso.com", "securityEnabled": True,
              "mailEnabled": True, "groupTypes": [], "members": [BOB]},
             {"id": PLAIN_GROUP, "displayName": "Not Mail Enabled",
              "securityEnabled": True, "groupTypes": [],
              "members": [DAVE]}]},
        {"id": DST, "domain": DST_DOMAIN,
         "apps": [{"client_id": APP2, "secrets": [SECRET]}],
         "users": [{"id": uid(50), "displayName": "Erin",
                    "mail": "erin@fabrikam.com", "mailNickname": "erin"}]},
    ]}


@pytest.fixture
def fc(cloud):
    cloud.reset()
    cloud.seed(seed())
    return cloud


def exo_token(fc, tenant=SRC):
    app = APP if tenant == SRC else APP2
    return fc.access_token(tenant, app, SECRET, EXCHANGE_SCOPE)


def invoke(fc, name, params=None, tenant=SRC, select=None, url=None,
           headers=None):
    """One InvokeCommand call with the tenant's Exchange token."""
    url = url or f"{fc.exchange_url}/adminapi/beta/{tenant}/InvokeCommand"
    if select is not None:
        url += "?" + urllib.parse.urlencode({"$select": select})
    hdrs = {"Authorization": "Bearer " + exo_token(fc, tenant)}
    hdrs.update(headers or {})
    return fc.request("POST", url, headers=hdrs, json_body={
        "CmdletInput": {"CmdletName": name, "Parameters": params or {}}})


def values(reply):
    assert reply.status == 200, reply.body
    return reply.json()["value"]


def one(fc, name, params, tenant=SRC):
    [view] = values(invoke(fc, name, params, tenant))
    return view


def error(reply, status):
    """(error id, exception type, text) of an Exchange error."""
    assert reply.status == status, reply.body
    err = reply.json()["error"]
    assert err["message"] == "Error executing cmdlet"
    return tuple(err["details"][0]["message"].split("|", 2))


def stable(prefix, oid):
    return str(uuid.uuid5(NAMESPACE, prefix + oid))


def graph_user(fc, tenant, oid):
    tok = fc.access_token(tenant, APP if tenant == SRC else APP2, SECRET,
                          GRAPH_SCOPE)
    reply = fc.request("GET", f"{fc.graph_url}/beta/users/{oid}",
                       headers={"Authorization": "Bearer " + tok})
    assert reply.status == 200, reply.body
    return reply.json()


def new_mail_user(fc, name, external, tenant=DST, **extra):
    params = {"Name": name, "ExternalEmailAddress": external}
    params.update(extra)
    return one(fc, "New-MailUser", params, tenant)


def add(*addresses):
    return {"@odata.type": "#Exchange.GenericHashTable",
            "Add": list(addresses)}


def remove(*addresses):
    return {"@odata.type": "#Exchange.GenericHashTable",
            "Remove": list(addresses)}


# --------------------------------------------------------------------------
# Mailbox data and Get-Mailbox
# --------------------------------------------------------------------------

def test_mailbox_defaults(fc):
    view = one(fc, "Get-Mailbox", {"Identity": "alice@contoso.com"})
    assert view["RecipientTypeDetails"] == "UserMailbox"
    assert view["ExchangeGuid"] == stable("mbx:", ALICE)
    assert (view["ArchiveGuid"], view["ArchiveStatus"]) == (ZERO, "None")
    match = DN.match(view["LegacyExchangeDN"])
    assert match and match.group(2) == "alice"
    # Its own GUID, as in Microsoft's examples, not the ExchangeGuid.
    assert match.group(1) == uuid.UUID(stable("dn:", ALICE)).hex
    assert match.group(1) != uuid.UUID(view["ExchangeGuid"]).hex
    for flag in ("LitigationHoldEnabled", "DelayHoldApplied",
                 "DelayReleaseHoldApplied", "ComplianceTagHoldApplied",
                 "IsDirSynced", "SKUAssigned"):
        assert view[flag] is False, flag
    assert view["InPlaceHolds"] == [] and view["PersistedCapabilities"] == []
    assert view["InPlaceHolds@odata.type"] == "#Collection(String)"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
                        view["WhenChangedUTC"])
    assert view["WhenChanged"] == view["WhenChangedUTC"]
    # The recipient view the other cmdlets give.
    assert (view["Alias"], view["PrimarySmtpAddress"],
            view["ExternalDirectoryObjectId"]) == (
        "alice", "alice@contoso.com", ALICE)
    assert view["EmailAddresses"] == ["SMTP:alice@contoso.com"]
    assert view["Guid"] != ALICE
    # Graph shows none of it.
    user = graph_user(fc, SRC, ALICE)
    assert not {"ExchangeGuid", "mailbox", "LegacyExchangeDN"} & set(user)
    # The same values after a restart of the state (reset and re-seed).
    fc.reset()
    fc.seed(seed())
    again = one(fc, "Get-Mailbox", {"Identity": ALICE})
    assert (again["ExchangeGuid"], again["LegacyExchangeDN"]) == (
        view["ExchangeGuid"], view["LegacyExchangeDN"])


def test_get_mailbox_lists_mailboxes_only(fc):
    new_mail_user(fc, "Mu", "mu@partner.example", tenant=SRC)
    got = values(invoke(fc, "Get-Mailbox"))
    assert sorted(v["ExternalDirectoryObjectId"] for v in got) == \
        sorted([ALICE, BOB, DAVE])
    # Identity forms, LegacyExchangeDN included.
    dn = one(fc, "Get-Mailbox", {"Identity": BOB})["LegacyExchangeDN"]
    assert one(fc, "Get-Mailbox", {"Identity": dn})[
        "ExternalDirectoryObjectId"] == BOB
    for identity in ("Mu", GUEST, CAROL, "nobody@contoso.com"):
        _, exc, text = error(invoke(fc, "Get-Mailbox",
                                    {"Identity": identity}), 404)
        assert exc.endswith(".ManagementObjectNotFoundException")
        assert identity in text
    # ResultSize and paging as the other Get- cmdlets.
    reply = invoke(fc, "Get-Mailbox", {"ResultSize": 2},
                   headers={"Prefer": "odata.maxpagesize=1"})
    body = reply.json()
    assert len(body["value"]) == 1 and body["@adminapi.warnings"]
    page2 = invoke(fc, "Get-Mailbox", url=body["@odata.nextLink"]).json()
    assert len(page2["value"]) == 1 and "@odata.nextLink" not in page2
    _, exc, _ = error(invoke(fc, "Get-Mailbox", {"Bogus": 1}), 400)
    assert exc.endswith("ParameterBindingException")
    assert fc.stats(SRC)["exchange"]["Get-Mailbox"] == 9


def test_mail_user_and_user_views(fc):
    made = new_mail_user(fc, "Lara Newton", "lara@partner.example")
    assert (made["ExchangeGuid"], made["ArchiveGuid"]) == (ZERO, ZERO)
    view = one(fc, "Get-MailUser", {"Identity": "Lara Newton"}, DST)
    assert view["LegacyExchangeDN"] == made["LegacyExchangeDN"]
    assert (view["ExchangeGuid"], view["ArchiveGuid"]) == (ZERO, ZERO)
    match = DN.match(view["LegacyExchangeDN"])
    assert match and match.group(2) == "LaraNewton"
    assert view["IsDirSynced"] is False
    assert view["PersistedCapabilities"] == []
    assert "ArchiveStatus" not in view
    user = one(fc, "Get-User", {"Identity": "Lara Newton"}, DST)
    assert (user["PreviousRecipientTypeDetails"], user["SKUAssigned"]) == (
        "None", False)
    assert one(fc, "Get-User", {"Identity": CAROL})[
        "RecipientTypeDetails"] == "User"
    assert "LegacyExchangeDN" not in one(fc, "Get-User",
                                         {"Identity": CAROL})
    fc.patch_mailbox(DST, view["ExternalDirectoryObjectId"],
                     PreviousRecipientTypeDetails="UserMailbox",
                     SKUAssigned=False, IsDirSynced=True)
    user = one(fc, "Get-User", {"Identity": "Lara Newton"}, DST)
    assert (user["PreviousRecipientTypeDetails"], user["IsDirSynced"]) == (
        "UserMailbox", True)


def test_when_changed_follows_every_change(fc):
    old = "2020-01-01T00:00:00Z"

    def reset_and(change):
        fc.patch_mailbox(SRC, ALICE, WhenChangedUTC=old)
        assert one(fc, "Get-Mailbox", {"Identity": ALICE})[
            "WhenChangedUTC"] == old
        start = datetime.datetime.now(datetime.timezone.utc).replace(
            microsecond=0)
        change()
        got = one(fc, "Get-Mailbox", {"Identity": ALICE})["WhenChangedUTC"]
        when = datetime.datetime.fromisoformat(got.replace("Z", "+00:00"))
        assert when >= start, (got, start)

    gtok = fc.access_token(SRC, APP, SECRET, GRAPH_SCOPE)
    reset_and(lambda: fc.request(
        "PATCH", f"{fc.graph_url}/v1.0/users/{ALICE}",
        headers={"Authorization": "Bearer " + gtok},
        json_body={"city": "Lyon"}))
    reset_and(lambda: fc.patch_user(SRC, ALICE, {"jobTitle": "Chief"}))
    reset_and(lambda: fc.patch_mailbox(SRC, ALICE,
                                       LitigationHoldEnabled=True))
    reset_and(lambda: invoke(fc, "Set-User", {"Identity": ALICE,
                                              "Office": "B2"}))
    # A PATCH that changes nothing leaves it alone.
    fc.patch_mailbox(SRC, ALICE, WhenChangedUTC=old)
    fc.patch_user(SRC, ALICE, {"jobTitle": "Chief"})
    assert one(fc, "Get-Mailbox", {"Identity": ALICE})[
        "WhenChangedUTC"] == old
    # Mail users: Set-MailUser, Exchange-only data included.
    mu = new_mail_user(fc, "Mu", "mu@partner.example", tenant=SRC)
    oid = mu["ExternalDirectoryObjectId"]
    fc.patch_mailbox(SRC, oid, WhenChangedUTC=old)
    invoke(fc, "Set-MailUser", {"Identity": oid,
                                "ExchangeGuid": str(uuid.uuid4())})
    assert one(fc, "Get-MailUser", {"Identity": oid})[
        "WhenChangedUTC"] != old
    # Contacts too.
    one(fc, "New-MailContact", {"Name": "Con",
                                "ExternalEmailAddress": "c@partner.example"})
    contact = one(fc, "Get-MailContact", {"Identity": "Con"})
    assert contact["WhenChanged"] == contact["WhenChangedUTC"]


# --------------------------------------------------------------------------
# OPATH date filters
# --------------------------------------------------------------------------

def names(fc, flt, cmd="Get-Mailbox", tenant=SRC):
    return sorted(v["Alias"] for v in values(
        invoke(fc, cmd, {"Filter": flt}, tenant)))


def test_filter_on_dates(fc):
    fc.patch_mailbox(SRC, ALICE, WhenChangedUTC="2026-12-07T09:55:00Z")
    fc.patch_mailbox(SRC, BOB, WhenChangedUTC="2026-12-07T09:54:59Z")
    fc.patch_mailbox(SRC, DAVE, WhenChangedUTC="2020-01-01T00:00:00Z")
    # The form galbridge sends.
    assert names(fc, "WhenChangedUTC -ge '12/07/2026 09:55:00'") == ["alice"]
    assert names(fc, "WhenChangedUTC -gt '12/07/2026 09:54:59'") == ["alice"]
    assert names(fc, "WhenChangedUTC -lt '12/07/2026 09:55:00'") == [
        "bob", "dave"]
    assert names(fc, "WhenChangedUTC -le '12/07/2026 09:54:59'") == [
        "bob", "dave"]
    assert names(fc, "WhenChanged -ge '12/07/2026 09:54:59'") == [
        "alice", "bob"]
    assert names(fc, "WhenChangedUTC -eq '12/07/2026 09:55:00'") == ["alice"]
    assert names(fc, "WhenChangedUTC -ne '12/07/2026 09:55:00'") == [
        "bob", "dave"]
    # The documented form (12-hour, no leading zeros) and others .NET reads.
    assert names(fc, "WhenChangedUTC -ge '12/7/2026 9:55:00 AM'") == ["alice"]
    assert names(fc, "WhenChangedUTC -ge '12/7/2026 9:55:00 PM'") == []
    assert names(fc, "WhenChangedUTC -gt '12/7/2026 9:54 AM'") == [
        "alice", "bob"]
    assert names(fc, "WhenChangedUTC -ge '12/8/2026'") == []
    assert names(fc, "WhenChangedUTC -gt '2026-12-07T09:54:59Z'") == [
        "alice"]
    assert names(fc, "(WhenChangedUTC -gt '1/1/2021') -and "
                     "(Alias -ne 'alice')") == ["bob"]
    # Dates work on every Get- cmdlet's WhenChanged.
    assert sorted(v["Alias"] for v in values(invoke(
        fc, "Get-Recipient",
        {"Filter": "WhenChangedUTC -lt '1/1/2021'"}))) == ["dave"]
    assert names(fc, "WhenChanged -lt '1/1/2021'", "Get-User") == ["dave"]
    assert names(fc, "WhenCreatedUTC -gt '1/1/2000'", "Get-MailUser") == [
        "guest"]
    for bad in ("13/45/2026", "yesterday", "12/07/2026 25:00:00",
                "12/7/2026 13:00:00 PM", "2026-02-30", "12/07/26"):
        _, exc, text = error(invoke(fc, "Get-Mailbox", {
            "Filter": f"WhenChangedUTC -ge '{bad}'"}), 400)
        assert exc.endswith("ParameterBindingException"), bad
        assert "'Filter'" in text and bad in text
    _, exc, _ = error(invoke(fc, "Get-Mailbox", {
        "Filter": "WhenChangedUTC -ge"}), 400)
    assert exc.endswith("ParameterBindingException")


# --------------------------------------------------------------------------
# $select
# --------------------------------------------------------------------------

def test_select_on_every_cmdlet(fc):
    got = values(invoke(fc, "Get-Mailbox", {"Identity": ALICE},
                        select="ExchangeGuid,emailaddresses,NoSuchThing"))
    assert got == [{"ExchangeGuid": stable("mbx:", ALICE),
                    "EmailAddresses@odata.type": "#Collection(String)",
                    "EmailAddresses": ["SMTP:alice@contoso.com"]}]
    for cmd in ("Get-Recipient", "Get-User", "Get-MailUser",
                "Get-AcceptedDomain", "Get-OrganizationConfig"):
        rows = values(invoke(fc, cmd, select="Identity"))
        assert rows and all(list(r) == ["Identity"] for r in rows), cmd
    # The selection holds on later pages.
    body = invoke(fc, "Get-Mailbox", select="Alias",
                  headers={"Prefer": "odata.maxpagesize=2"}).json()
    assert [list(v) for v in body["value"]] == [["Alias"], ["Alias"]]
    page2 = invoke(fc, "Get-Mailbox", url=body["@odata.nextLink"]).json()
    assert [list(v) for v in page2["value"]] == [["Alias"]]
    # An empty $select selects everything.
    full = values(invoke(fc, "Get-Mailbox", {"Identity": ALICE}, select=""))
    assert "LegacyExchangeDN" in full[0]


# --------------------------------------------------------------------------
# Set-MailUser: GUIDs, X500s, accepted domains, directory-synced objects
# --------------------------------------------------------------------------

def test_set_mail_user_guids(fc):
    mu = new_mail_user(fc, "Lara", "lara@contoso.com")
    exchange, archive = str(uuid.uuid4()), str(uuid.uuid4())
    assert values(invoke(fc, "Set-MailUser", {
        "Identity": "Lara", "ExchangeGuid": exchange,
        "ArchiveGuid": "{" + archive.upper() + "}"}, DST)) == []
    view = one(fc, "Get-MailUser", {"Identity": "Lara"}, DST)
    assert (view["ExchangeGuid"], view["ArchiveGuid"]) == (exchange, archive)
    assert view["RecipientTypeDetails"] == "MailUser"
    assert fc.mailbox(DST, mu["ExternalDirectoryObjectId"])[
        "ExchangeGuid"] == exchange
    # A malformed GUID fails parameter binding; nothing changes.
    for bad in ("not-a-guid", "1234", "{" + "0" * 32 + "}"):
        _, exc, text = error(invoke(fc, "Set-MailUser", {
            "Identity": "Lara", "ExchangeGuid": bad,
            "CustomAttribute1": "x"}, DST), 400)
        assert exc.endswith("ParameterBindingException")
        assert "'ExchangeGuid'" in text and "System.Guid" in text
    assert one(fc, "Get-MailUser", {"Identity": "Lara"}, DST)[
        "CustomAttribute1"] == ""
    # Unique across the tenant's recipients, as ExchangeGuid or ArchiveGuid.
    erin = stable("mbx:", uid(50))
    for name, value in (("ExchangeGuid", erin), ("ArchiveGuid", erin),
                        ("ExchangeGuid", archive)):
        other = new_mail_user(fc, f"Other{name}{value[:4]}",
                              f"o{value[:4]}{name}@partner.example")
        _, exc, text = error(invoke(fc, "Set-MailUser", {
            "Identity": other["Name"], name: value}, DST), 400)
        assert exc == "Microsoft.Exchange.Data.DataValidationException"
        assert text == (f'The value "{value}" of property "{name}" is used '
                        f'by another recipient object. Please specify a '
                        f'unique value.')
    # Set-MailContact has no such parameters.
    one(fc, "New-MailContact", {"Name": "C",
                                "ExternalEmailAddress": "c@partner.example"},
        DST)
    _, exc, _ = error(invoke(fc, "Set-MailContact", {
        "Identity": "C", "ExchangeGuid": exchange}, DST), 400)
    assert exc.endswith("ParameterBindingException")


def test_set_mail_user_x500(fc):
    mu = new_mail_user(fc, "Lara", "lara@contoso.com")
    oid = mu["ExternalDirectoryObjectId"]
    first = ("X500:/o=First Organization/ou=Exchange Administrative Group "
             "(FYDIBOHF23SPDLT)/cn=Recipients/cn=d11ec1a2Lara")
    second = "x500:/o=ExchangeLabs/ou=Old/cn=Recipients/cn=Lara-Old"
    assert invoke(fc, "Set-MailUser", {
        "Identity": oid, "EmailAddresses": add(first, second)},
        DST).status == 200
    view = one(fc, "Get-MailUser", {"Identity": oid}, DST)
    assert view["EmailAddresses"] == ["SMTP:lara@contoso.com", first, second]
    # Not in Graph's proxyAddresses.
    assert graph_user(fc, DST, oid)["proxyAddresses"] == [
        "SMTP:lara@contoso.com"]
    assert fc.mailbox(DST, oid)["x500"] == [first, second]
    # The same value in another case is the same address.
    invoke(fc, "Set-MailUser", {"Identity": oid,
                                "EmailAddresses": add(first.lower())}, DST)
    got = one(fc, "Get-MailUser", {"Identity": oid}, DST)["EmailAddresses"]
    assert [a.lower() for a in got].count(first.lower()) == 1
    invoke(fc, "Set-MailUser", {"Identity": oid,
                                "EmailAddresses": remove(second)}, DST)
    got = one(fc, "Get-MailUser", {"Identity": oid}, DST)["EmailAddresses"]
    assert second not in got and len(got) == 2
    # Unique in the tenant: another's X500, LegacyExchangeDN or contact's.
    other = new_mail_user(fc, "Other", "other@partner.example")
    erin_dn = one(fc, "Get-Mailbox", {"Identity": uid(50)}, DST)[
        "LegacyExchangeDN"]
    fc.create_contact(DST, {"id": uid(60), "displayName": "Con",
                            "mail": "con@partner.example",
                            "proxyAddresses": ["SMTP:con@partner.example",
                                               "X500:/o=Con/cn=Con"]})
    for taken, holder in ((first.upper(), "Lara"),
                          ("X500:" + erin_dn, uid(50)),
                          ("x500:/O=CON/CN=CON", "Con")):
        _, exc, text = error(invoke(fc, "Set-MailUser", {
            "Identity": "Other", "EmailAddresses": add(taken)}, DST), 400)
        assert exc.endswith(".ProxyAddressExistsException")
        assert text == (f'The proxy address "{taken}" is already being used '
                        f'by the proxy addresses or LegacyExchangeDN of '
                        f'"{holder}". Please choose another proxy address.')
    assert fc.mailbox(DST, other["ExternalDirectoryObjectId"])["x500"] == []


def test_set_mail_user_accepted_domains(fc):
    new_mail_user(fc, "Lara", "lara@partner.example")
    assert invoke(fc, "Set-MailUser", {"Identity": "Lara", "EmailAddresses":
                                       add("smtp:lara@fabrikam.com",
                                           "lara@fabrikam.onmicrosoft.com")},
                  DST).status == 200
    for address in ("smtp:lara@partner.example.org", "SMTP:lara@contoso.com",
                    "lara@sub.fabrikam.com"):
        _, exc, text = error(invoke(fc, "Set-MailUser", {
            "Identity": "Lara", "EmailAddresses": add(address)}, DST), 400)
        assert exc == ("Microsoft.Exchange.Configuration.ObjectModel."
                       "NotAcceptedDomainException")
        assert text == ("You can't use the domain because it's not an "
                        "accepted domain for your organization.")
    # The replace-all form is checked the same way, for what it adds.
    _, exc, _ = error(invoke(fc, "Set-MailUser", {
        "Identity": "Lara", "EmailAddresses": [
            "SMTP:lara@fabrikam.com", "smtp:x@elsewhere.example"]}, DST), 400)
    assert exc.endswith("NotAcceptedDomainException")
    fc.add_accepted_domain(DST, "fabrikam.net")
    assert invoke(fc, "Set-MailUser", {"Identity": "Lara", "EmailAddresses":
                                       add("smtp:lara@FABRIKAM.net")},
                  DST).status == 200
    assert one(fc, "Get-MailUser", {"Identity": "Lara"}, DST)[
        "EmailAddresses"] == [
        "SMTP:lara@partner.example", "smtp:lara@fabrikam.com",
        "smtp:lara@fabrikam.onmicrosoft.com", "smtp:lara@FABRIKAM.net"]
    # The external address may stay outside (it is not added here), and
    # mail contacts take any domain.
    assert invoke(fc, "Set-MailUser", {"Identity": "Lara",
                                       "ExternalEmailAddress":
                                       "lara2@partner.example"},
                  DST).status == 200
    one(fc, "New-MailContact", {"Name": "C",
                                "ExternalEmailAddress": "c@partner.example"},
        DST)
    assert invoke(fc, "Set-MailContact", {"Identity": "C", "EmailAddresses":
                                          add("smtp:c2@partner.example")},
                  DST).status == 200


def test_dir_synced_objects_refuse_changes(fc):
    mu = new_mail_user(fc, "Synced", "synced@partner.example")
    oid = mu["ExternalDirectoryObjectId"]
    fc.patch_mailbox(DST, oid, IsDirSynced=True)
    assert one(fc, "Get-MailUser", {"Identity": oid}, DST)["IsDirSynced"]
    for cmd, params, first in (
            ("Set-MailUser", {"Identity": oid, "CustomAttribute1": "x",
                              "ExchangeGuid": str(uuid.uuid4())},
             "CustomAttribute1"),
            ("Set-MailUser", {"Identity": oid,
                              "EmailAddresses": add("X500:/o=x/cn=y")},
             "EmailAddresses"),
            ("Set-User", {"Identity": oid, "City": "Oslo"}, "City")):
        err_id, exc, text = error(invoke(fc, cmd, params, DST), 400)
        assert (err_id, exc) == ("", "System.InvalidOperationException")
        assert text == (
            f"The operation on mailbox \"Synced\" failed because it's out "
            f"of the current user's write scope. The action '{cmd}', "
            f"'{first}', can't be performed on the object 'Synced' because "
            f"the object is being synchronized from your on-premises "
            f"organization. This action should be performed on the object "
            f"in your on-premises organization.")
    view = one(fc, "Get-MailUser", {"Identity": oid}, DST)
    assert (view["CustomAttribute1"], view["ExchangeGuid"]) == ("", ZERO)
    assert fc.user(DST, oid).get("city") is None
    # A mailbox synchronised from on-premises: Set-User is refused too.
    fc.patch_mailbox(DST, uid(50), IsDirSynced=True)
    _, exc, _ = error(invoke(fc, "Set-User", {"Identity": uid(50),
                                              "Title": "x"}, DST), 400)
    assert exc == "System.InvalidOperationException"
    fc.patch_mailbox(DST, oid, IsDirSynced=False)
    assert invoke(fc, "Set-MailUser", {"Identity": oid,
                                       "CustomAttribute1": "x"},
                  DST).status == 200


def test_new_mail_user_any_accepted_domain(fc):
    for upn in ("lara@fabrikam.onmicrosoft.com", "lara2@fabrikam.com"):
        local = upn.split("@")[0]
        made = new_mail_user(fc, local, f"{local}@partner.example",
                             Password="x", MicrosoftOnlineServicesID=upn)
        assert fc.user(DST, made["ExternalDirectoryObjectId"])[
            "userPrincipalName"] == upn
    _, exc, text = error(invoke(fc, "New-MailUser", {
        "Name": "No", "ExternalEmailAddress": "no@partner.example",
        "Password": "x", "MicrosoftOnlineServicesID": "no@fabrikam.net"},
        DST), 400)
    assert "not an accepted domain" in text
    fc.add_accepted_domain(DST, "fabrikam.net")
    assert invoke(fc, "New-MailUser", {
        "Name": "No", "ExternalEmailAddress": "no@partner.example",
        "Password": "x", "MicrosoftOnlineServicesID": "no@fabrikam.net"},
        DST).status == 200


def test_cmdlets_denied(fc):
    """exo_cmdlets_denied: a cmdlet outside the application's roles
    answers like one that does not exist; the others still work."""
    fc.set_knobs(exo_cmdlets_denied=["Get-MigrationEndpoint"])
    _, exc, text = error(invoke(fc, "get-migrationendpoint", {}, DST), 400)
    assert exc == "System.Management.Automation.CommandNotFoundException"
    assert "is not recognized as a name of a cmdlet" in text
    assert invoke(fc, "Get-OrganizationRelationship", {}, DST).status == 200
    fc.set_knobs(exo_cmdlets_denied=[])
    assert invoke(fc, "Get-MigrationEndpoint", {}, DST).status == 200


def test_set_mail_user_sign_in_name(fc):
    """Set-MailUser -MicrosoftOnlineServicesID (cloud only) changes the
    UPN: an address in an accepted domain that no other user has."""
    made = new_mail_user(fc, "lara", "lara@partner.example")
    oid = made["ExternalDirectoryObjectId"]
    assert invoke(fc, "Set-MailUser", {
        "Identity": oid, "MicrosoftOnlineServicesID": "lara@fabrikam.com"},
        DST).status == 200
    assert fc.user(DST, oid)["userPrincipalName"] == "lara@fabrikam.com"
    _, exc, text = error(invoke(fc, "Set-MailUser", {
        "Identity": oid, "MicrosoftOnlineServicesID": "lara@partner.example"},
        DST), 400)
    assert "not an accepted domain" in text
    other = new_mail_user(fc, "ed", "ed@partner.example")
    _, exc, text = error(invoke(fc, "Set-MailUser", {
        "Identity": other["ExternalDirectoryObjectId"],
        "MicrosoftOnlineServicesID": "LARA@fabrikam.com"}, DST), 400)
    assert "already exists" in text
    # A refused call changes nothing.
    assert fc.user(DST, other["ExternalDirectoryObjectId"])[
        "userPrincipalName"].lower() != "lara@fabrikam.com"


# --------------------------------------------------------------------------
# Migration set-up cmdlets
# --------------------------------------------------------------------------

def test_get_accepted_domain(fc):
    got = values(invoke(fc, "Get-AcceptedDomain", tenant=DST))
    assert [(d["DomainName"], d["Default"], d["InitialDomain"])
            for d in got] == [(DST_DOMAIN, False, True),
                              ("fabrikam.com", True, False)]
    for d in got:
        assert d["Name"] == d["Identity"] == d["DomainName"]
        assert d["DomainType"] == "Authoritative"
    made = fc.add_accepted_domain(DST, "fabrikam.net", default=True)
    assert (made["DomainName"], made["Default"]) == ("fabrikam.net", True)
    got = {d["DomainName"]: d["Default"] for d in fc.accepted_domains(DST)}
    assert got == {DST_DOMAIN: False, "fabrikam.com": False,
                   "fabrikam.net": True}
    assert one(fc, "Get-AcceptedDomain", {"Identity": "FABRIKAM.NET"},
               DST)["Default"] is True
    _, exc, _ = error(invoke(fc, "Get-AcceptedDomain",
                             {"Identity": "nope.example"}, DST), 404)
    assert exc.endswith("ManagementObjectNotFoundException")
    with pytest.raises(FakeCloudError) as err:
        fc.add_accepted_domain(DST, "Fabrikam.com")
    assert err.value.status == 409
    with pytest.raises(FakeCloudError) as err:
        fc.add_accepted_domain(DST, "not a domain")
    assert err.value.status == 400


def test_relationships_endpoints_and_org_config(fc):
    rel = fc.add_organization_relationship(SRC, {
        "Name": "to_fabrikam", "DomainNames": [DST],
        "MailboxMoveEnabled": True,
        "MailboxMoveCapability": ["RemoteOutbound", "Inbound"],
        "OAuthApplicationId": MIGRATION_APP,
        "MailboxMovePublishedScopes": ["Migration Scope"]})
    assert rel["MailboxMoveCapability"] == "Inbound, RemoteOutbound"
    view = one(fc, "Get-OrganizationRelationship", {"Identity": "TO_fabrikam"})
    assert {k: view[k] for k in (
        "Identity", "Name", "DomainNames", "Enabled", "MailboxMoveEnabled",
        "MailboxMoveCapability", "OAuthApplicationId",
        "MailboxMovePublishedScopes")} == {
        "Identity": "to_fabrikam", "Name": "to_fabrikam",
        "DomainNames": [DST], "Enabled": True, "MailboxMoveEnabled": True,
        "MailboxMoveCapability": "Inbound, RemoteOutbound",
        "OAuthApplicationId": MIGRATION_APP,
        "MailboxMovePublishedScopes": ["Migration Scope"]}
    fc.add_organization_relationship(SRC, {"Name": "plain",
                                           "DomainNames": ["x.example"]})
    rows = values(invoke(fc, "Get-OrganizationRelationship"))
    assert [(r["Name"], r["MailboxMoveCapability"], r["MailboxMoveEnabled"])
            for r in rows] == [("to_fabrikam", "Inbound, RemoteOutbound",
                                True), ("plain", "None", False)]
    for bad in ({"Name": "x", "MailboxMoveCapability": "Sideways"},
                {"Name": "y", "DomainNames": 3}, {"DomainNames": []}):
        with pytest.raises(FakeCloudError) as err:
            fc.add_organization_relationship(SRC, bad)
        assert err.value.status == 400
    with pytest.raises(FakeCloudError) as err:
        fc.add_organization_relationship(SRC, {"Name": "PLAIN"})
    assert err.value.status == 409
    _, exc, _ = error(invoke(fc, "Get-OrganizationRelationship",
                             {"Identity": "none"}), 404)
    assert exc.endswith("ManagementObjectNotFoundException")

    fc.add_migration_endpoint(DST, {"Name": "t2t",
                                    "RemoteTenant": SRC_DOMAIN,
                                    "ApplicationId": MIGRATION_APP})
    ep = one(fc, "Get-MigrationEndpoint", {"Identity": "t2t"}, DST)
    assert (ep["Identity"], ep["RemoteServer"], ep["RemoteTenant"],
            ep["ApplicationId"], ep["EndpointType"]) == (
        "t2t", "outlook.office.com", SRC_DOMAIN, MIGRATION_APP,
        "ExchangeRemoteMove")
    assert "Name" not in ep
    assert values(invoke(fc, "Get-MigrationEndpoint", tenant=SRC)) == []
    _, exc, _ = error(invoke(fc, "Get-MigrationEndpoint",
                             {"Identity": "other"}, DST), 404)
    assert exc.endswith("ManagementObjectNotFoundException")
    assert [e["Identity"] for e in fc.migration_endpoints(DST)] == ["t2t"]

    org = one(fc, "Get-OrganizationConfig", {}, DST)
    assert (org["IsDehydrated"], org["Name"]) == (False, DST_DOMAIN)
    fc.set_organization_config(DST, True)
    assert one(fc, "Get-OrganizationConfig", {}, DST)["IsDehydrated"] is True


def test_get_distribution_group_member(fc):
    got = values(invoke(fc, "Get-DistributionGroupMember",
                        {"Identity": "Migration Scope"}))
    assert sorted((m["Name"], m["RecipientTypeDetails"]) for m in got) == \
        sorted([(ALICE, "UserMailbox"),
                ("Nested Scope", "MailUniversalSecurityGroup")])
    got = values(invoke(fc, "Get-DistributionGroupMember",
                        {"Identity": "nested@contoso.com"}))
    assert [m["ExternalDirectoryObjectId"] for m in got] == [BOB]
    fc.delete_user(SRC, BOB)
    assert values(invoke(fc, "Get-DistributionGroupMember",
                         {"Identity": "Nested Scope"})) == []
    for identity in ("Not Mail Enabled", "alice@contoso.com", "nobody"):
        _, exc, _ = error(invoke(fc, "Get-DistributionGroupMember",
                                 {"Identity": identity}), 404)
        assert exc.endswith("ManagementObjectNotFoundException")
    _, exc, _ = error(invoke(fc, "Get-DistributionGroupMember", {}), 400)
    assert exc.endswith("ParameterBindingException")
    fc.add_group_members(SRC, SCOPE_GROUP, [DAVE])
    assert len(values(invoke(fc, "Get-DistributionGroupMember",
                             {"Identity": "Migration Scope"}))) == 3


# --------------------------------------------------------------------------
# Moves, Test-MigrationServerAvailability and licences
# --------------------------------------------------------------------------

def ready_source(fc, user=ALICE, archive=True, x500=True):
    """The source mailbox with a licence, an archive and an old X500."""
    old = ["X500:/o=Contoso/ou=First Administrative Group/cn=Recipients/"
           f"cn={user}"] if x500 else []
    return fc.patch_mailbox(SRC, user, archive=archive, x500=old,
                            PersistedCapabilities=["ExchangeT2TMbxMove"])


def ready_target(fc, source, name="Alice Target", alias="alice"):
    """A target mail user made the documented way (New-MailUser, then
    Set-MailUser with the GUIDs, the X500s and a primary address in the
    target's domain, the external address removed).  Returns its id."""
    made = new_mail_user(fc, name, f"{alias}@contoso.com",
                         Alias=alias, Password="x",
                         MicrosoftOnlineServicesID=f"{alias}@{DST_DOMAIN}")
    oid = made["ExternalDirectoryObjectId"]
    assert invoke(fc, "Set-MailUser", {
        "Identity": oid, "ExchangeGuid": source["ExchangeGuid"],
        "ArchiveGuid": source["ArchiveGuid"],
        "EmailAddresses": {
            "@odata.type": "#Exchange.GenericHashTable",
            "Add": ["X500:" + source["LegacyExchangeDN"]] + source["x500"]
            + [f"SMTP:{alias}@fabrikam.com",
               f"smtp:{alias}@{DST_DOMAIN}"],
            "Remove": [f"smtp:{alias}@contoso.com"]}}, DST).status == 200
    return oid


def prepare(fc):
    fc.prepare_cross_tenant(SRC, DST, MIGRATION_APP, "Migration Scope")
    source = ready_source(fc)
    return source, ready_target(fc, source)


def test_move_mailbox(fc):
    source, target = prepare(fc)
    before = one(fc, "Get-Mailbox", {"Identity": ALICE})
    fc.patch_mailbox(SRC, ALICE, WhenChangedUTC="2020-01-01T00:00:00Z")
    fc.patch_mailbox(DST, target, WhenChangedUTC="2020-01-01T00:00:00Z")
    moved = fc.move_mailbox(SRC_DOMAIN, f"alice@{SRC_DOMAIN}", DST, target)
    assert moved["target"]["RecipientTypeDetails"] == "UserMailbox"
    assert moved["source"]["RecipientTypeDetails"] == "MailUser"
    # The target: a mailbox keeping its GUIDs, with an active archive.
    mbx = one(fc, "Get-Mailbox", {"Identity": target}, DST)
    assert (mbx["ExchangeGuid"], mbx["ArchiveGuid"], mbx["ArchiveStatus"]) \
        == (source["ExchangeGuid"], source["ArchiveGuid"], "Active")
    assert "X500:" + source["LegacyExchangeDN"] in mbx["EmailAddresses"]
    assert mbx["ExternalEmailAddress"] is None
    assert mbx["WhenChangedUTC"] != "2020-01-01T00:00:00Z"
    # The source: a mail user routing to the target's initial domain.
    mu = one(fc, "Get-MailUser", {"Identity": ALICE})
    assert mu["RecipientTypeDetails"] == "MailUser"
    assert mu["ExternalEmailAddress"] == f"SMTP:alice@{DST_DOMAIN}"
    assert mu["ExchangeGuid"] == source["ExchangeGuid"]
    assert "X500:" + before["LegacyExchangeDN"] in mu["EmailAddresses"]
    assert mu["LegacyExchangeDN"] != before["LegacyExchangeDN"]
    assert mu["WhenChangedUTC"] != "2020-01-01T00:00:00Z"
    assert one(fc, "Get-User", {"Identity": ALICE})[
        "PreviousRecipientTypeDetails"] == "UserMailbox"
    _, exc, _ = error(invoke(fc, "Get-Mailbox", {"Identity": ALICE}), 404)
    # Both directory users stay.
    assert graph_user(fc, SRC, ALICE)["id"] == ALICE
    assert graph_user(fc, DST, target)["id"] == target
    # A second move of the same mailbox is refused: it is no mailbox now.
    with pytest.raises(FakeCloudError) as err:
        fc.move_mailbox(SRC, ALICE, DST, target)
    assert err.value.body["exception"] == \
        "RecipientNotMailboxPermanentException"


def refuse(fc, exception, source_user=ALICE, target=None):
    with pytest.raises(FakeCloudError) as err:
        fc.move_mailbox(SRC, source_user, DST, target)
    assert err.value.status == 409
    body = err.value.body
    assert body["exception"] == exception, body
    assert body["error"] == f"{exception}: {body['message']}"
    return body["message"]


def test_move_mailbox_refusals(fc):
    source, target = prepare(fc)
    set_target = lambda **p: invoke(fc, "Set-MailUser",  # noqa: E731
                                    dict(Identity=target, **p), DST)
    # Licence: on the source or on the target.
    fc.patch_mailbox(SRC, ALICE, PersistedCapabilities=[])
    text = refuse(fc, "CrossTenantMigrationWithoutLicensePermanentException",
                  target=target)
    assert text == (f"No license was found for the source recipient, "
                    f"'{source['ExchangeGuid']}', or the target recipient, "
                    f"'{source['ExchangeGuid']}'. A Cross-tenant User Data "
                    f"Migration license is required to move a mailbox "
                    f"between tenants.")
    fc.patch_mailbox(DST, target, PersistedCapabilities=["ExchangeT2TMbxMove"])
    # Scope: DAVE is in no published group; BOB is, through a nested one.
    fc.patch_mailbox(SRC, DAVE, PersistedCapabilities=["ExchangeT2TMbxMove"])
    refuse(fc, "MailboxNotInCrossTenantMigrationScopeException", DAVE,
           target)
    # Holds, each of them.
    for hold in ({"LitigationHoldEnabled": True}, {"DelayHoldApplied": True},
                 {"DelayReleaseHoldApplied": True},
                 {"ComplianceTagHoldApplied": True},
                 {"InPlaceHolds": ["mbx1234"]}):
        fc.patch_mailbox(SRC, ALICE, **hold)
        refuse(fc, "SourceMailboxOnHoldPermanentException", target=target)
        fc.patch_mailbox(SRC, ALICE, **{k: type(v)() for k, v in
                                        hold.items()})
    # GUIDs.
    set_target(ExchangeGuid=str(uuid.uuid4()))
    text = refuse(fc, "MissingExchangeGuidException", target=target)
    assert source["ExchangeGuid"] in text
    set_target(ExchangeGuid=source["ExchangeGuid"])
    set_target(ArchiveGuid=ZERO)
    text = refuse(fc, "MissingArchiveGuidPermanentException", target=target)
    assert source["ArchiveGuid"] in text
    set_target(ArchiveGuid=source["ArchiveGuid"])
    # X500s: the LegacyExchangeDN and every older X500.
    for missing in ("X500:" + source["LegacyExchangeDN"], source["x500"][0]):
        set_target(EmailAddresses=remove(missing))
        text = refuse(fc, "MissingX500ProxyAddressPermanentException",
                      target=target)
        assert missing in text
        set_target(EmailAddresses=add(missing))
    # An SMTP address outside the target's accepted domains.
    set_target(ExternalEmailAddress="alice@contoso.com")
    text = refuse(fc, "NotAcceptedDomainException", target=target)
    assert text == ("You can't use the domain because it's not an accepted "
                    "domain for your organization.")
    set_target(EmailAddresses=remove("alice@contoso.com"),
               ExternalEmailAddress="alice@contoso.com")
    # Kinds: a target that is not a mail user, a source that is no mailbox.
    refuse(fc, "UnsupportedRecipientTypePermanentException", target=uid(50))
    refuse(fc, "RecipientNotMailboxPermanentException", CAROL, target)
    # The target's side of the organisation relationship.
    fc.reset()
    fc.seed(seed())
    fc.add_organization_relationship(SRC, {
        "Name": "out", "DomainNames": [DST], "MailboxMoveEnabled": True,
        "MailboxMoveCapability": "RemoteOutbound",
        "MailboxMovePublishedScopes": ["Migration Scope"]})
    source = ready_source(fc)
    target = ready_target(fc, source)
    refuse(fc, "CrossTenantMigrationNotAuthorizedPermanentException",
           target=target)
    fc.add_organization_relationship(DST, {
        "Name": "in", "DomainNames": [SRC], "MailboxMoveEnabled": True,
        "MailboxMoveCapability": "Inbound, RemoteOutbound"})
    assert fc.move_mailbox(SRC, ALICE, DST, target)["target"][
        "RecipientTypeDetails"] == "UserMailbox"


def test_move_mailbox_admin_errors(fc):
    for body, status in (
            ((SRC, ALICE, "nope.example", BOB), 404),
            ((SRC, "nobody@contoso.com", DST, uid(50)), 404),
            ((SRC, ALICE, SRC, BOB), 400)):
        with pytest.raises(FakeCloudError) as err:
            fc.move_mailbox(*body)
        assert err.value.status == status
    with pytest.raises(FakeCloudError) as err:
        fc._admin("POST", "/admin/move-mailbox", {"source_tenant": SRC})
    assert err.value.status == 400


def test_nested_scope_member_moves(fc):
    fc.prepare_cross_tenant(SRC, DST, MIGRATION_APP, "scope@contoso.com")
    source = ready_source(fc, BOB, archive=False, x500=False)
    target = ready_target(fc, source, "Bob Target", "bob")
    moved = fc.move_mailbox(SRC, BOB, DST, f"bob@{DST_DOMAIN}")
    assert moved["target"]["id"] == target
    assert moved["target"]["ArchiveStatus"] == "None"


def test_test_migration_server_availability(fc):
    source, target = prepare(fc)
    address = "alice@fabrikam.com"
    outcome = one(fc, "Test-MigrationServerAvailability", {
        "Endpoint": "t2t", "TestMailbox": address}, DST)
    assert outcome["Result"] == "Success"
    assert outcome["ErrorDetail"] is None and outcome["Message"] == ""
    assert outcome["SupportsCutover"] is False
    # The source's address is no recipient of the target tenant.
    _, exc, text = error(invoke(fc, "Test-MigrationServerAvailability", {
        "Endpoint": "t2t", "TestMailbox": "dave@contoso.com"}, DST), 404)
    assert exc == ("Microsoft.Exchange.Configuration.Tasks."
                   "ManagementObjectNotFoundException")
    assert "dave@contoso.com" in text
    _, exc, _ = error(invoke(fc, "Test-MigrationServerAvailability", {
        "Endpoint": "nope", "TestMailbox": address}, DST), 404)
    assert exc.endswith("ManagementObjectNotFoundException")
    _, exc, text = error(invoke(fc, "Test-MigrationServerAvailability", {
        "Endpoint": "t2t"}, DST), 400)
    assert "TestMailbox" in text
    # A set-up problem: Failed, with the documented message.
    fc.patch_mailbox(SRC, ALICE, LitigationHoldEnabled=True)
    outcome = one(fc, "Test-MigrationServerAvailability", {
        "Endpoint": "t2t", "TestMailbox": address}, DST)
    assert outcome["Result"] == "Failed"
    assert outcome["Message"].startswith(
        "The connection to the server 'outlook.office.com' could not be "
        "completed. Please make sure source mailbox is in the migration "
        "scope")
    assert outcome["ErrorDetail"].startswith(
        "SourceMailboxOnHoldPermanentException: ")
    fc.patch_mailbox(SRC, ALICE, LitigationHoldEnabled=False)
    # The endpoint's application must be the one the source consented to.
    fc.add_migration_endpoint(DST, {"Name": "other-app",
                                    "RemoteTenant": SRC_DOMAIN,
                                    "ApplicationId": str(uuid.uuid4())})
    outcome = one(fc, "Test-MigrationServerAvailability", {
        "Endpoint": "other-app", "TestMailbox": address}, DST)
    assert outcome["ErrorDetail"].startswith(
        "MailboxNotInCrossTenantMigrationScopeException")
    # A mailbox of the target tenant is no mail user to test with.
    outcome = one(fc, "Test-MigrationServerAvailability", {
        "Endpoint": "t2t", "TestMailbox": "erin@fabrikam.com"}, DST)
    assert outcome["Result"] == "Failed"
    # Nothing moved.
    assert one(fc, "Get-Mailbox", {"Identity": ALICE})[
        "RecipientTypeDetails"] == "UserMailbox"


def test_licences(fc):
    # A mail user licensed before its ExchangeGuid is set: a new mailbox,
    # its external addresses scrubbed.
    early = new_mail_user(fc, "Early", "early@partner.example")
    oid = early["ExternalDirectoryObjectId"]
    data = fc.patch_mailbox(DST, oid, SKUAssigned=True)
    assert data["RecipientTypeDetails"] == "UserMailbox"
    assert data["ExchangeGuid"] == stable("mbx:", oid)
    mbx = one(fc, "Get-Mailbox", {"Identity": oid}, DST)
    assert mbx["EmailAddresses"] == [f"SMTP:Early@{DST_DOMAIN}"]
    assert graph_user(fc, DST, oid)["mail"] == f"Early@{DST_DOMAIN}"
    assert mbx["SKUAssigned"] is True
    # Licensed after the ExchangeGuid: still a mail user, scrubbed.
    ready = new_mail_user(fc, "Ready", "ready@partner.example")
    rid = ready["ExternalDirectoryObjectId"]
    guid = str(uuid.uuid4())
    invoke(fc, "Set-MailUser", {"Identity": rid, "ExchangeGuid": guid,
                                "EmailAddresses": add(
                                    "smtp:ready@fabrikam.com")}, DST)
    data = fc.patch_mailbox(DST, rid, SKUAssigned=True)
    assert (data["RecipientTypeDetails"], data["ExchangeGuid"]) == (
        "MailUser", guid)
    assert one(fc, "Get-MailUser", {"Identity": rid}, DST)[
        "EmailAddresses"] == ["SMTP:ready@fabrikam.com"]
    # The migration licence alone is no Exchange licence.
    plain = new_mail_user(fc, "Plain", "plain@partner.example")
    data = fc.patch_mailbox(DST, plain["ExternalDirectoryObjectId"],
                            PersistedCapabilities=["ExchangeT2TMbxMove"])
    assert (data["RecipientTypeDetails"], data["PersistedCapabilities"]) == (
        "MailUser", ["ExchangeT2TMbxMove"])
    assert one(fc, "Get-MailUser", {"Identity": "Plain"}, DST)[
        "PersistedCapabilities"] == ["ExchangeT2TMbxMove"]


def test_admin_mailbox_route(fc):
    data = fc.patch_mailbox(SRC, f"alice@{SRC_DOMAIN}", archive=True,
                            x500=["X500:/o=Old/cn=alice"],
                            InPlaceHolds=["UniH123"], IsDirSynced=True,
                            PreviousRecipientTypeDetails="MailUser")
    assert (data["ArchiveGuid"], data["ArchiveStatus"]) == (
        stable("arc:", ALICE), "Active")
    assert data["x500"] == ["X500:/o=Old/cn=alice"]
    assert fc.mailbox(SRC, ALICE) == data
    view = one(fc, "Get-Mailbox", {"Identity": ALICE})
    assert view["ArchiveStatus"] == "Active"
    assert view["InPlaceHolds"] == ["UniH123"]
    assert view["EmailAddresses"][-1] == "X500:/o=Old/cn=alice"
    assert fc.patch_mailbox(SRC, ALICE, archive=False)["ArchiveGuid"] == ZERO
    for body in ({"bogus": 1}, {"archive": "yes"}, {"x500": ["/o=no"]},
                 {"InPlaceHolds": "mbx"}, {"WhenChangedUTC": "monday"},
                 {"PreviousRecipientTypeDetails": ""}):
        with pytest.raises(FakeCloudError) as err:
            fc.patch_mailbox(SRC, ALICE, **body)
        assert err.value.status == 400, body
    for user in ("nobody", uid(99)):
        with pytest.raises(FakeCloudError) as err:
            fc.mailbox(SRC, user)
        assert err.value.status == 404
    fc.delete_user(SRC, BOB)
    with pytest.raises(FakeCloudError) as err:
        fc.mailbox(SRC, BOB)
    assert err.value.status == 404


def test_seed_carries_mailbox_and_org_data(fc):
    data = seed()
    data["tenants"][0]["users"][0]["mailbox"] = {
        "archive": True, "LitigationHoldEnabled": True,
        "x500": ["X500:/o=Seeded/cn=alice"],
        "WhenChangedUTC": "2024-05-01T10:00:00Z"}
    data["tenants"][1].update({
        "acceptedDomains": ["fabrikam.net", {"DomainName": "fabrikam.com"}],
        "organizationRelationships": [{
            "Name": "in", "DomainNames": [SRC],
            "MailboxMoveCapability": "Inbound"}],
        "migrationEndpoints": [{"Name": "t2t", "RemoteTenant": SRC_DOMAIN,
                                "ApplicationId": MIGRATION_APP}]})
    fc.reset()
    fc.seed(data)
    view = one(fc, "Get-Mailbox", {"Identity": ALICE})
    assert (view["ArchiveStatus"], view["LitigationHoldEnabled"],
            view["WhenChangedUTC"]) == ("Active", True,
                                        "2024-05-01T10:00:00Z")
    assert "X500:/o=Seeded/cn=alice" in view["EmailAddresses"]
    assert "mailbox" not in fc.user(SRC, ALICE)
    assert [d["DomainName"] for d in fc.accepted_domains(DST)] == [
        DST_DOMAIN, "fabrikam.com", "fabrikam.net"]
    assert [r["Name"] for r in fc.organization_relationships(DST)] == ["in"]
    assert [e["Identity"] for e in fc.migration_endpoints(DST)] == ["t2t"]
    data["tenants"][0]["users"][0]["mailbox"] = {"archive": "yes"}
    with pytest.raises(FakeCloudError) as err:
        fc.seed(data)
    assert err.value.status == 400


def test_seed_demo_migration_data(fc):
    fixed = {"contoso": "c", "fabrikam": "f"}
    made = seed_demo.make_seed(contoso=300, fabrikam=200,
                               client_secrets=fixed)
    assert made == seed_demo.make_seed(contoso=300, fabrikam=200,
                                       client_secrets=fixed)
    boxes = [u["mailbox"] for t in made["tenants"] for u in t["users"]
             if "mailbox" in u]
    mailboxes = sum(u["userType"] == "Member" and "mail" in u
                    for t in made["tenants"] for u in t["users"])
    archives = sum(b.get("archive", False) for b in boxes)
    x500 = [b["x500"] for b in boxes if "x500" in b]
    assert 0.02 < archives / mailboxes < 0.09
    assert 0.06 < len(x500) / mailboxes < 0.15
    assert {len(x) for x in x500} == {1, 2}
    assert any(b.get("LitigationHoldEnabled") for b in boxes)
    # Nothing else changed: the same people, names and addresses as the
    # seed had before it carried mailbox data (digest of that seed).
    for tenant in made["tenants"]:
        assert tenant.pop("crossTenantAccess") == {"partners": []}
        for user in tenant["users"]:
            user.pop("mailbox", None)
    assert hashlib.sha256(json.dumps(made, sort_keys=True).encode()) \
        .hexdigest() == ("29242920aa15ad53d8de00cce75d68300c5597928185dca"
                         "bb774779920685c36")
    # fakecloud takes it.
    fc.reset()
    made = seed_demo.make_seed(contoso=300, fabrikam=200,
                               client_secrets=fixed)
    fc.seed(made)
    contoso = made["tenants"][0]
    with_x500 = next(u for u in contoso["users"]
                     if "x500" in u.get("mailbox", {}))
    view = fc.mailbox(contoso["id"], with_x500["id"])
    assert view["x500"] == with_x500["mailbox"]["x500"]
