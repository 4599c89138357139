"""Hostile but valid source data: quotes, backslashes, characters that
mean something in a URL, emoji, right-to-left and combining text, values
longer than the target allows, empty strings and nulls.

Every lookup galbridge builds (Graph $filter by anchor and by mail, the
Exchange -Filter on CustomAttributeN) must reach fakecloud well formed
(no 400 anywhere), every value must arrive byte for byte, and a value the
target would refuse must be refused for that attribute alone, with a
warning naming the attribute, the source id and the limit, while the rest
of the object syncs.
"""
import os
import sys
import urllib.parse

import pytest

# The reliability report's recorder (a no-op outside `make reliability`).
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "reliability"))
from record import crashes, record  # noqa: E402

EMOJI = "\U0001f600"               # two UTF-16 code units

# Source users by key. Everything not given is null.
HOSTILE = {
    "obrien": {
        "displayName": "Seán O'Brien", "givenName": "Seán",
        "surname": "O'Brien", "mail": "o'brien@contoso.example",
        "jobTitle": "Head of 'Quotes' & \"Double\" Quotes",
        "department": "R&D / Ops", "companyName": "O'Reilly & Sons",
        "city": "Dún Laoghaire"},
    "url": {
        "displayName": "Percent %27 Plus + Hash # Amp &",
        "givenName": "a%20b", "surname": "c+d",
        "mail": "x+y&z#1@contoso.example",
        "jobTitle": "?$filter=id eq '1'&$top=1",
        "officeLocation": "100% / 50%"},
    "backslash": {
        "displayName": "Back\\Slash \\' \\\\ end\\",
        "givenName": "C:\\Temp\\", "surname": "\\u0041",
        "mail": "back.slash@contoso.example",
        "department": "\\\\server\\share"},
    "emoji": {
        "displayName": "Zoë " + EMOJI + " Smith",
        "givenName": EMOJI * 32,                 # 64 units: the limit
        "surname": EMOJI * 33,                   # 66 units: refused
        "mail": "emoji@contoso.example",
        "jobTitle": "🚀 Rocket 👩‍👩‍👧 Family"},
    "rtl": {
        "displayName": "محمد العربي", "givenName": "محمد",
        "surname": "שָׁלוֹם", "mail": "rtl@contoso.example",
        "jobTitle": "\u202eevil override\u202c", "city": "القاهرة",
        "department": "مبيعات (Sales)"},
    "combining": {
        "displayName": "Zoe\u0308 Cafe\u0301", "givenName": "Zoe\u0308",
        "surname": "Nguye\u0302\u0303n", "mail": "combining@contoso.example",
        "jobTitle": "a\u0300\u0301\u0302\u0303\u0304\u0305\u0306"},
    "long": {
        "displayName": "L" * 257,                # refused (256)
        "givenName": "G" * 64,                   # exactly the limit
        "surname": "S" * 65,                     # refused (64)
        "mail": "long@contoso.example",
        "jobTitle": "J" * 10240,                 # 10 kB, refused (128)
        "department": "D" * 64,
        "companyName": "C" * 65,                 # refused (64)
        "city": "Y" * 128},
    "empty": {
        "displayName": "   ",                    # blank: refused
        "givenName": "", "surname": "", "jobTitle": "", "department": "",
        "mail": "empty@contoso.example", "businessPhones": [""],
        "mobilePhone": ""},
    "nulls": {
        "displayName": "Only Name", "mail": "nulls@contoso.example",
        "givenName": None, "surname": None, "jobTitle": None,
        "department": None, "companyName": None, "officeLocation": None,
        "businessPhones": [], "mobilePhone": None, "streetAddress": None,
        "city": None, "state": None, "country": None, "postalCode": None,
        "employeeId": None, "onPremisesExtensionAttributes": {
            "extensionAttribute%d" % n: None for n in range(1, 16)}},
}

# (user key, attribute, length, limit) the planner must refuse, in Graph
# and in Exchange spelling.
REFUSED = [("emoji", "surname", 66, 64), ("long", "displayName", 257, 256),
           ("long", "surname", 65, 64), ("long", "jobTitle", 10240, 128),
           ("long", "companyName", 65, 64)]
BLANK = [("empty", "displayName")]

GUEST_FIELDS = ["displayName", "givenName", "surname", "jobTitle",
                "department", "companyName", "officeLocation", "city",
                "mobilePhone"]
EXO_FIELDS = {  # Exchange property: source attribute (built-in mapping)
    "DisplayName": "displayName", "FirstName": "givenName",
    "LastName": "surname", "Company": "companyName",
    "Department": "department", "Title": "jobTitle",
    "Office": "officeLocation", "City": "city", "MobilePhone": "mobilePhone",
}
EXO_NAME = {v: k for k, v in EXO_FIELDS.items()}


def add_hostile(env):
    """Create the HOSTILE users in contoso; returns {key: source id}."""
    ids = {}
    for key, props in HOSTILE.items():
        user = dict(props)
        user["mailNickname"] = key
        user["userPrincipalName"] = "%s@%s" % (key, env.source["domain"])
        ids[key] = env.cloud.create_user(env.source["id"], user)["id"]
    return ids


def expected(key, attr):
    """What the target must hold for attr: the source value, or None when
    it is empty, null or refused."""
    if any(k == key and a == attr for k, a, _, _ in REFUSED) or \
            (key, attr) in BLANK:
        return None
    value = HOSTILE[key].get(attr)
    return value if value else None


def use_exchange(env, object_name):
    text = open(env.conf).read()
    text = text.replace("object = guest", "object = %s" % object_name)
    text = text.replace("[tenant fabrikam]\n",
                        "[tenant fabrikam]\nexchange = yes\n")
    with open(env.conf, "w") as f:
        f.write(text)


def bad_requests(env):
    return [(e["service"], e["method"], e["path"], e["query"], e["status"])
            for e in env.cloud.log()
            if e["service"] in ("graph", "exchange", "login")
            and e["status"] == 400]


def warnings_for(stderr, source_id):
    return [line for line in stderr.splitlines()
            if "attribute not synced" in line
            and "source_id=%s" % source_id in line]


def check_refusal_logs(stderr, ids, spelling):
    for key, attr, length, limit in REFUSED:
        name = spelling(attr)
        lines = [line for line in warnings_for(stderr, ids[key])
                 if "attribute=%s " % name in line]
        assert len(lines) == 1, (key, name, stderr[-3000:])
        assert "link=contoso-to-fabrikam" in lines[0]
        assert "length=%d limit=%d" % (length, limit) in lines[0]
    for key, attr in BLANK:
        lines = [line for line in warnings_for(stderr, ids[key])
                 if "attribute=%s " % spelling(attr) in line]
        assert len(lines) == 1 and "blank" in lines[0], stderr[-3000:]
    # Nothing else was refused.
    others = [line for line in stderr.splitlines()
              if "attribute not synced" in line]
    assert len(others) == len(REFUSED) + len(BLANK), others


def losses(ids, copies):
    """record() figures: hostile users with no copy, extra copies."""
    return {"losses": sum(1 for sid in ids.values() if not copies.get(sid)),
            "duplicates": sum(max(0, len(copies.get(sid, [])) - 1)
                              for sid in ids.values())}


def test_guests(env):
    ids = add_hostile(env)
    r = env.run("sync")
    copies = env.copies()
    right = all(len(copies.get(sid, [])) == 1 and
                all(copies[sid][0].get(a) == expected(k, a)
                    for a in GUEST_FIELDS
                    if a != "displayName" or expected(k, a))
                for k, sid in ids.items())
    record("hostile data", injected=len(ids), rounds=1,
           converged=r.returncode == 0 and right and not bad_requests(env),
           crashes=crashes(r.returncode), **losses(ids, copies))
    assert r.returncode == 0, r.stderr[-3000:]
    assert bad_requests(env) == []
    for key, sid in ids.items():
        assert len(copies.get(sid, [])) == 1, key
        got = copies[sid][0]
        assert got["mail"] == HOSTILE[key]["mail"]
        for attr in GUEST_FIELDS:
            want = expected(key, attr)
            if attr == "displayName" and want is None:
                # Invited without a name: Graph shows the address.
                assert got["displayName"] != HOSTILE[key]["displayName"]
                continue
            assert got.get(attr) == want, (key, attr)
    check_refusal_logs(r.stderr, ids, lambda attr: attr)

    # The lookup by mail doubled the quote (OData) and the URL carried it.
    filters = [urllib.parse.parse_qs(e["query"]).get("$filter", [""])[0]
               for e in env.cloud.log(service="graph")
               if e["path"] == "/v1.0/users"]
    assert any("mail eq 'o''brien@contoso.example'" in f for f in filters)
    assert any("mail eq 'x+y&z#1@contoso.example'" in f for f in filters)

    # A second round changes nothing and warns about nothing.
    before = env.writes()
    r = env.run("sync")
    assert r.returncode == 0, r.stderr[-3000:]
    assert env.writes() == before
    assert "attribute not synced" not in r.stderr


def test_guest_value_grows_too_long(env):
    """A value that becomes too long later: the target keeps the value
    last applied, the warning comes once, the other attributes follow."""
    ids = add_hostile(env)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr[-3000:]
    sid = ids["obrien"]
    env.cloud.patch_user(env.source["id"], sid, {
        "jobTitle": "T" * 129, "department": "Hoo'ray"})
    r = env.run("sync")
    assert r.returncode == 0, r.stderr[-3000:]
    got = env.copies()[sid][0]
    assert got["jobTitle"] == HOSTILE["obrien"]["jobTitle"]
    assert got["department"] == "Hoo'ray"
    lines = warnings_for(r.stderr, sid)
    assert len(lines) == 1 and "attribute=jobTitle " in lines[0]
    assert "length=129 limit=128" in lines[0]
    r = env.run("sync")
    assert r.returncode == 0
    assert warnings_for(r.stderr, sid) == []
    # Shortened again: it goes through.
    env.cloud.patch_user(env.source["id"], sid, {"jobTitle": "T" * 128})
    r = env.run("sync")
    assert r.returncode == 0, r.stderr[-3000:]
    assert env.copies()[sid][0]["jobTitle"] == "T" * 128
    assert bad_requests(env) == []


@pytest.mark.parametrize("object_name,kind", [
    ("mailcontact", "MailContact"), ("mailuser", "MailUser")])
def test_exchange(env, object_name, kind):
    ids = add_hostile(env)
    use_exchange(env, object_name)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr[-3000:]
    assert bad_requests(env) == []
    prefix = "galbridge:%s:" % env.source["id"]
    got = {}
    for rec in env.cloud.recipients(env.tenants["fabrikam"]["id"]):
        anchor = rec.get("CustomAttribute15") or ""
        if rec["RecipientTypeDetails"] == kind and anchor.startswith(prefix):
            got.setdefault(anchor[len(prefix):].split(":")[0],
                           []).append(rec)
    right = all(len(got.get(sid, [])) == 1 and
                all((got[sid][0].get(p) or None) == expected(k, a)
                    for p, a in EXO_FIELDS.items()
                    if p != "DisplayName" or expected(k, a))
                for k, sid in ids.items())
    record("hostile data", injected=len(ids), rounds=1,
           converged=r.returncode == 0 and right and not bad_requests(env),
           crashes=crashes(r.returncode), **losses(ids, got))
    for key, sid in ids.items():
        assert len(got.get(sid, [])) == 1, key
        rec = got[sid][0]
        assert rec["ExternalEmailAddress"].lower().endswith(
            HOSTILE[key]["mail"].lower())
        assert len(rec["Name"].encode("utf-16-le")) // 2 <= 64
        assert rec["HiddenFromAddressListsEnabled"] is False
        for prop, attr in EXO_FIELDS.items():
            want = expected(key, attr)
            if prop == "DisplayName" and want is None:
                assert rec["DisplayName"]            # Exchange's default
                continue
            assert (rec.get(prop) or None) == want, (key, prop)
    check_refusal_logs(r.stderr, ids, lambda attr: EXO_NAME[attr])

    # The -Filter on the anchor was well formed for every object.
    finds = [e for e in env.cloud.log(service="exchange")
             if e["status"] == 200]
    assert finds
    before = env.cloud.stats(env.tenants["fabrikam"]["id"])["exchange"]
    r = env.run("sync")
    assert r.returncode == 0, r.stderr[-3000:]
    after = env.cloud.stats(env.tenants["fabrikam"]["id"])["exchange"]
    writes = {k: after.get(k, 0) - before.get(k, 0) for k in after
              if not k.startswith("Get-")}
    assert not any(writes.values()), writes
    assert "attribute not synced" not in r.stderr


# -- values galbridge cannot take (Trust issue, point 6) ----------------------

def refusals(stderr, source_id):
    return [line for line in stderr.splitlines()
            if "source value refused" in line
            and "id=%s " % source_id in line]


def bad_of(env, source_id):
    import sqlite3
    db = sqlite3.connect("file:%s/state.db?mode=ro" % env.state_dir,
                         uri=True)
    try:
        row = db.execute("SELECT bad FROM source_object WHERE tenant = ?"
                         " AND id = ?", (env.source["id"], source_id)
                         ).fetchone()
    finally:
        db.close()
    return row[0] if row else None


def test_bad_value_fails_one_object(env):
    """A NUL, an unpaired surrogate and bytes that are not UTF-8, each in
    one user's displayName, and a 20 kB city (over GRAPH_VALUE_MAX), on
    the page of a new hire: the new hire is synced in that round and every
    later one, the rounds succeed, the four keep their copies as they
    were, and the log names each id and attribute (never the value)."""
    src = env.source["id"]
    r = env.run("sync")
    assert r.returncode == 0, r.stderr[-3000:]
    nul, surrogate, raw, big = sorted(env.in_scope())[:4]
    bad = {nul: "displayName", surrogate: "displayName",
           raw: "displayName", big: "city"}
    before = {sid: env.copies()[sid][0] for sid in bad}
    marker = "Raw-Marker-7f3a"
    env.cloud.patch_user(src, nul, {"displayName": "Nul\u0000Name"})
    env.cloud.patch_user(src, surrogate,
                         {"displayName": "Lone\ud800Surrogate"})
    env.cloud.patch_user(src, raw, {"displayName": marker,
                                    "jobTitle": "Not taken either"})
    env.cloud.patch_user(src, big, {"city": "Y" * 20000,
                                    "jobTitle": "Nor this"})
    # Every answer holding the marker gets a raw 0xFF byte after it.
    env.cloud.set_faults({"service": "graph", "method": "GET",
                          "path": "users/delta", "kind": "invalid_utf8",
                          "text": marker, "count": 1000})
    hire = env.cloud.create_user(src, {
        "displayName": "New Hire One", "mail": "hire1@contoso.com",
        "mailNickname": "hire1"})["id"]

    r = env.run("sync")
    copies = env.copies()
    record("values galbridge cannot take", injected=len(bad), rounds=1,
           converged=int("delta round failed" not in r.stderr and
                         len(copies.get(hire, [])) == 1),
           losses=int(len(copies.get(hire, [])) != 1),
           crashes=crashes(r.returncode))
    assert "delta round failed" not in r.stderr, r.stderr[-3000:]
    assert "delta round done source=contoso" in r.stderr
    assert "refused=4" in r.stderr
    copies = env.copies()
    assert len(copies.get(hire, [])) == 1, "new hire not synced"
    for sid, attr in bad.items():
        assert len(copies[sid]) == 1
        assert copies[sid][0] == before[sid], sid     # untouched
        lines = refusals(r.stderr, sid)
        assert len(lines) == 1, (sid, r.stderr[-3000:])
        assert "attribute=%s " % attr in lines[0]
        assert "source=contoso" in lines[0]
        assert "Nul" not in lines[0] and "Lone" not in lines[0] \
            and marker not in lines[0] and "YYYY" not in lines[0]
        assert bad_of(env, sid).startswith(attr + ": ")
    assert "longer than 16384 bytes" in refusals(r.stderr, big)[0]
    assert env.writes()["deletes"] == 0

    # Later rounds go on: another hire comes, the bad values stay put.
    hire2 = env.cloud.create_user(src, {
        "displayName": "New Hire Two", "mail": "hire2@contoso.com",
        "mailNickname": "hire2"})["id"]
    r = env.run("sync")
    # Each refused object is a failed one (exit 1, in status with its
    # reason); nothing else is.
    assert r.returncode == 1, r.stderr[-3000:]
    st = env.status()["links"][0]
    assert {f["source_id"] for f in st["failures"]} == set(bad)
    assert all(f["error"].startswith("source value refused: ")
               for f in st["failures"])
    assert "delta round failed" not in r.stderr
    copies = env.copies()
    assert len(copies.get(hire2, [])) == 1
    assert len(copies.get(hire, [])) == 1
    for sid in bad:
        assert copies[sid][0] == before[sid]

    # A good value again clears the refusal and syncs.
    env.cloud.patch_user(src, nul, {"displayName": "Nul Fixed"})
    r = env.run("sync")
    assert r.returncode == 1, r.stderr[-3000:]
    assert nul not in {f["source_id"]
                       for f in env.status()["links"][0]["failures"]}
    assert env.copies()[nul][0]["displayName"] == "Nul Fixed"
    assert bad_of(env, nul) is None
    assert env.writes()["deletes"] == 0
