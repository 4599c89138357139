"""What the target tenant holds, measured against what it should hold.

An audit reads the target through fakecloud's admin API and counts, for
one link (contoso to fabrikam, anchor extensionAttribute15 /
CustomAttribute15):

  dup_anchor  objects beyond the first that carry one anchor
  dup_mail    guests (or mail contacts) beyond the first with one address
  missing     in-scope source users with no object
  wrong       in-scope source users whose one object has other values
  strays      objects anchored to a source user gone or out of scope, and
              objects galbridge made but never anchored (an interrupted
              create nobody finished)
  store       disagreements with the store: pending or failed operations,
              or an object count other than the in-scope count

Everything present before galbridge first ran (`baseline`) is left out.
"""
import collections

GUEST_MAPPED = ("displayName", "givenName", "surname", "mail", "jobTitle",
                "department", "companyName", "officeLocation",
                "businessPhones", "mobilePhone", "city", "country")

CONTACT_FIELDS = {  # Exchange property: source attribute (built-in mapping)
    "DisplayName": "displayName", "FirstName": "givenName",
    "LastName": "surname", "Company": "companyName",
    "Department": "department", "Title": "jobTitle",
    "MobilePhone": "mobilePhone", "Office": "officeLocation",
    "City": "city", "CountryOrRegion": "country",
}


def _empty(v):
    return v in (None, "", [])


def guest_objects(env):
    """Live users of fabrikam that are or may be galbridge's guests."""
    fab = env.tenants["fabrikam"]["id"]
    out = []
    for u in env.cloud.users(fab):
        if u.get("deleted") or u.get("creationType") != "Invitation":
            continue
        ext = u.get("onPremisesExtensionAttributes") or {}
        out.append((u["id"], ext.get("extensionAttribute15") or "",
                    (u.get("mail") or "").lower(), u))
    return out


def contact_objects(env):
    fab = env.tenants["fabrikam"]["id"]
    out = []
    for r in env.cloud.recipients(fab):
        if r["RecipientTypeDetails"] != "MailContact":
            continue
        mail = (r.get("ExternalEmailAddress") or "").lower()
        if mail.startswith("smtp:"):
            mail = mail[5:]
        out.append((r.get("ExternalDirectoryObjectId") or r["Guid"],
                    r.get("CustomAttribute15") or "", mail, r))
    return out


def guest_values_ok(g, u):
    if g.get("showInAddressList") is not True:
        return False
    for attr in GUEST_MAPPED:
        if _empty(u.get(attr)):
            if not _empty(g.get(attr)) and attr != "mail":
                return False
        elif g.get(attr) != u[attr]:
            return False
    return True


def contact_values_ok(r, u):
    if r.get("HiddenFromAddressListsEnabled") is not False:
        return False
    if not (r.get("ExternalEmailAddress") or "").lower().endswith(
            u["mail"].lower()):
        return False
    for prop, attr in CONTACT_FIELDS.items():
        if (r.get(prop) or "") != (u.get(attr) or ""):
            return False
    return (r.get("Phone") or "") == (u.get("businessPhones") or [""])[0]


def baseline(env, kind):
    """Ids of the objects of `kind` the target held before galbridge."""
    objs = guest_objects(env) if kind == "guest" else contact_objects(env)
    return {o[0] for o in objs}


def audit(env, kind, before):
    """Counts (a dict) for link contoso-to-fabrikam of `kind` ("guest" or
    "mailcontact"), leaving out the objects in `before`."""
    objs = guest_objects(env) if kind == "guest" else contact_objects(env)
    objs = [o for o in objs if o[0] not in before]
    ok = guest_values_ok if kind == "guest" else contact_values_ok
    prefix = "galbridge:%s:" % env.source["id"]
    want = env.in_scope()
    by_anchor = collections.defaultdict(list)
    by_mail = collections.defaultdict(list)
    strays = 0
    for oid, anchor, mail, obj in objs:
        if mail:
            by_mail[mail].append(oid)
        if not anchor.lower().startswith("galbridge:"):
            strays += 1          # made, never anchored
            continue
        # The plain anchor: a proof after it names the object it is on.
        by_anchor[":".join(anchor.lower().split(":")[:3])].append(obj)
    counts = {"objects": len(objs), "dup_anchor": 0, "dup_mail": 0,
              "missing": 0, "wrong": 0, "strays": strays, "store": 0}
    for anchor, found in by_anchor.items():
        counts["dup_anchor"] += len(found) - 1
        sid = anchor[len(prefix):].split(":")[0] \
            if anchor.startswith(prefix) else None
        if sid not in want:
            counts["strays"] += len(found)
    for found in by_mail.values():
        counts["dup_mail"] += len(found) - 1
    for sid, u in want.items():
        found = by_anchor.get(prefix + sid)
        if not found:
            counts["missing"] += 1
        elif not ok(found[0], u):
            counts["wrong"] += 1
    st = env.status()["links"][0]
    if st["pending"] or st["failed"] or st["objects"] != len(want):
        counts["store"] = 1
    counts["in_scope"] = len(want)
    counts["failures"] = st.get("failures", [])[:3]
    return counts


BAD = ("dup_anchor", "dup_mail", "missing", "wrong", "strays", "store")


def bad(counts):
    return {k: counts[k] for k in BAD if counts[k]}
