"""Exchange Online admin API: POST /adminapi/beta/{tenant}/InvokeCommand.

The endpoint (the Exchange token check, Rate-Limit-* headers, the
exo_rate_limit and exo_max_concurrent knobs, paging of results, $select),
the cmdlet registry that cmdlets.py, orgconfig.py and migration.py fill
with @cmdlet, and what the cmdlets share: Exchange's error bodies, the
recipient view of every directory object (users, guests, mail users,
contacts, groups; a user's Exchange-only data is mailbox.py's), -Identity
resolution, parameter checks, address editing and the uniqueness of
addresses and mailbox GUIDs.
"""

import re
import time
import urllib.parse
import uuid

from .directory import is_address, text_length
from .knobs import count_stat
from .mailbox import (ZERO_GUID, archive_guid, base_fields, exchange_guid,
                      legacy_dn, user_kind, when, x500s)
from .wire import EXO_JSON, Reply, Response, bearer, exo_error, iso_ms, route


# Observed shape of Exchange Online's challenge (public captures); the 401
# carries no body.
EXO_WWW_AUTH = ('Bearer client_id="00000002-0000-0ff1-ce00-000000000000", '
                'authorization_uri="https://login.microsoftonline.com/common/'
                'oauth2/authorize", error="invalid_token"')
EXO_SERVER = "FAKEPR01A001DC001.FAKEPR01A001.PROD.OUTLOOK.COM"

CMDLETS = {}        # lower-case name -> fn, filled by cmdlets.py
CMDLET_NAMES = {}   # lower-case name -> its spelling (stats count by it)


def cmdlet(name):
    """Register fn(req, tenant, parameters) -> (list of result objects,
    list of warnings) for a cmdlet (names are case-insensitive)."""
    def register(fn):
        CMDLETS[name.lower()] = fn
        CMDLET_NAMES[name.lower()] = name
        return fn
    return register


def exo_page_size(req):
    prefer = ",".join((req.headers.get_all("Prefer") or [])
                      + (req.headers.get_all("X-Prefer") or []))
    match = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", prefer, re.I)
    return max(1, int(match.group(1))) if match else 1000


def exo_rate_headers(tenant):
    minute = int(time.time() // 60)
    window, used = tenant.exo_window
    used = used + 1 if window == minute else 1
    tenant.exo_window = (minute, used)
    return {"Rate-Limit-Limit": "30000",
            "Rate-Limit-Remaining": str(max(0, 30000 - used)),
            "Rate-Limit-Reset": iso_ms((minute + 1) * 60)}


INVOKE_PATH = r"^/adminapi/beta/([^/]+)/InvokeCommand$"
# Plain-text answer public EXO REST clients retry on (GreyCorbel ExoHelper
# matches "You have reached the maximum number of concurrent requests per
# tenant. Please wait and try again*"); the status code is a guess.
EXO_CONCURRENCY_TEXT = ("You have reached the maximum number of concurrent "
                        "requests per tenant. Please wait and try again.")


def exo_enter(cloud, req):
    """Before the latency knob, under the lock: count an Exchange request
    as in progress for its tenant (returns (None, tenant); the caller
    decrements when answered), or refuse it past exo_max_concurrent
    (returns (Response, None))."""
    match = re.match(INVOKE_PATH, req.path)
    if match is None:
        return None, None
    tenant = cloud.find_tenant(urllib.parse.unquote(match.group(1)))
    if tenant is None:
        return None, None
    limit = cloud.knobs["exo_max_concurrent"]
    if limit and tenant.exo_in_progress >= limit:
        req.tenant = tenant
        return Response(429, EXO_CONCURRENCY_TEXT.encode("utf-8"),
                        content_type="text/plain; charset=utf-8"), None
    tenant.exo_in_progress += 1
    return None, tenant


def exo_rate_limited(req, tenant):
    """exo_rate_limit knob: requests per second per tenant; past it 429
    with Retry-After (seconds) and no body (public clients handle an empty
    429 payload)."""
    limit = req.cloud.knobs["exo_rate_limit"]
    if not limit:
        return None
    now = time.monotonic()
    calls = tenant.exo_calls
    while calls and calls[0] <= now - 1.0:
        calls.popleft()
    if len(calls) >= limit:
        retry = max(1, int(calls[0] + 1.0 - now + 0.999))
        return Response(429, None, {"Retry-After": str(retry)})
    calls.append(now)
    return None


@route("exchange", "POST", INVOKE_PATH)
def invoke_command(req):
    cloud = req.cloud
    segment = req.group(1)
    tenant = cloud.find_tenant(segment)
    token, _ = cloud.check_token(bearer(req))
    if token is not None:
        req.client_id = token.client_id
    if tenant is None or token is None or token.kind != "exchange" or \
            token.tenant_id != tenant.id:
        raise Reply(Response(401, None, {"WWW-Authenticate": EXO_WWW_AUTH}))
    req.tenant = tenant
    rate = exo_rate_headers(tenant)
    try:
        resp = exo_rate_limited(req, tenant) or exo_invoke(req, tenant)
    except Reply as reply:
        resp = reply.response
    resp.headers.update(rate)
    return resp


def exo_invoke(req, tenant):
    cloud = req.cloud
    base = f"{cloud.exchange_url}/adminapi/beta/{req.match.group(1)}"
    if "skiptoken" in req.params:
        link = cloud.get_link(req.params["skiptoken"], "exo", tenant.id)
        if link is None:
            raise Reply(exo_error(400, "BadRequest", "Ex8F21A0",
                                  "System.ArgumentException",
                                  "The paging token is not valid."))
        results, warnings = link.data
    else:
        body = req.json_body()
        cmd = body.get("CmdletInput") if isinstance(body, dict) else None
        name = cmd.get("CmdletName") if isinstance(cmd, dict) else None
        params = cmd.get("Parameters", {}) if isinstance(cmd, dict) else {}
        if not isinstance(name, str) or not isinstance(params, dict):
            raise Reply(exo_error(400, "BadRequest", "Ex4A1B2C",
                                  "System.ArgumentException",
                                  "The request body must be {\"CmdletInput\":"
                                  " {\"CmdletName\", \"Parameters\"}}."))
        fn = CMDLETS.get(name.lower())
        denied = {c.lower() for c in cloud.knobs["exo_cmdlets_denied"]}
        # A cmdlet outside the caller's roles is not in its session at
        # all: Exchange answers as for one that does not exist (guessed
        # for the REST endpoint; seen in remote PowerShell sessions).
        if fn is None or name.lower() in denied:
            raise Reply(exo_error(
                400, "BadRequest", "Ex9D6E3A",
                "System.Management.Automation.CommandNotFoundException",
                f"The term '{name}' is not recognized as a name of a cmdlet, "
                f"function, script file, or executable program."))
        count_stat(req.cloud, tenant, CMDLET_NAMES[name.lower()],
                   exchange=True)
        results, warnings = fn(req, tenant, params)
        results = exo_select(req, results)

    size = exo_page_size(req)
    body = {"@odata.context":
            f"{base}/$metadata#Collection(Exchange.GenericHashTable)",
            "adminapi.warnings@odata.type": "#Collection(String)",
            "@adminapi.warnings": list(warnings)}
    if len(results) > size:
        token = cloud.new_link("exo", tenant.id, (results[size:], []))
        body["@odata.nextLink"] = f"{base}/InvokeCommand?$skiptoken={token}"
    body["value"] = results[:size]
    return Response(200, body, {"Content-Type": EXO_JSON})


def exo_select(req, results):
    """?$select=A,B (public clients such as CIPP send it): each result
    keeps only those properties and their "@odata.type" annotations.
    Guessed: names match case-insensitively, an unknown name is left out
    silently, an empty $select selects everything."""
    wanted = {n.strip().lower()
              for n in str(req.params.get("select") or "").split(",")
              if n.strip()}
    if not wanted:
        return results
    return [{k: v for k, v in r.items()
             if k.split("@", 1)[0].lower() in wanted} for r in results]


def exo_check_params(params, allowed):
    for name in params:
        if name.lower() not in allowed:
            raise Reply(exo_error(
                400, "BadRequest", "ExB3C4D5",
                "System.Management.Automation.ParameterBindingException",
                f"A parameter cannot be found that matches parameter name "
                f"'{name}'."))


# -- recipients: one view for every kind ------------------------------------

EXO_DN = ("OU={domain},OU=Microsoft Exchange Hosted Organizations,"
          "DC=FAKEPR01A001,DC=PROD,DC=OUTLOOK,DC=COM")
EXC_NOT_FOUND = ("Microsoft.Exchange.Configuration.Tasks."
                 "ManagementObjectNotFoundException")
EXC_AMBIGUOUS = ("Microsoft.Exchange.Configuration.Tasks."
                 "ManagementObjectAmbiguousException")
EXC_PROXY_EXISTS = "Microsoft.Exchange.Data.Directory.ProxyAddressExistsException"
EXC_OBJECT_EXISTS = ("Microsoft.Exchange.Data.Directory."
                     "ADObjectAlreadyExistsException")
EXC_BINDING = "System.Management.Automation.ParameterBindingException"
EXC_DATA_VALIDATION = "Microsoft.Exchange.Data.DataValidationException"
EXC_VALIDATION = ("System.Management.Automation."
                  "ParameterBindingValidationException")
CUSTOM_ATTRIBUTES = [f"CustomAttribute{n}" for n in range(1, 16)]
# Groups Get-DistributionGroupMember takes (Microsoft 365 groups are not
# distribution groups).
GROUP_KINDS = {"MailUniversalSecurityGroup", "MailUniversalDistributionGroup"}

# Set-Contact / Set-User address-book parameters -> (Graph property,
# maximum length).  Exchange and Graph are one directory object.
ADDRESS_BOOK = {
    "company": ("companyName", 64), "department": ("department", 64),
    "title": ("jobTitle", 128), "phone": ("businessPhones", 64),
    "mobilephone": ("mobilePhone", 64), "office": ("officeLocation", 128),
    "streetaddress": ("streetAddress", 1024), "city": ("city", 128),
    "stateorprovince": ("state", 128), "postalcode": ("postalCode", 40),
    "countryorregion": ("country", 128), "firstname": ("givenName", 64),
    "lastname": ("surname", 64), "displayname": ("displayName", 256),
    "fax": ("faxNumber", 64),
}


def exo_fail(status, code, err_id, exc_type, text):
    raise Reply(exo_error(status, code, err_id, exc_type, text))


def exo_not_found(identity):
    exo_fail(404, "NotFound", "Ex6F9304", EXC_NOT_FOUND,
             f"The operation couldn't be performed because object "
             f"'{identity}' couldn't be found on '{EXO_SERVER}'.")


def exo_guid(oid):
    """Exchange's own object Guid (not the directory object id)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "fakecloud-exo:" + oid))


def strip_smtp(value):
    value = str(value or "")
    return value[5:] if value[:5].lower() == "smtp:" else value


def primary_smtp(addresses):
    for value in addresses:
        if isinstance(value, str) and value.startswith("SMTP:"):
            return value[5:]
    return None


def recipient_view(tenant, oid, name, props, rtype, details, external,
                   hidden, created=None):
    mail = props.get("mail")
    addresses = list(props.get("proxyAddresses") or []) or \
        ([f"SMTP:{mail}"] if mail else [])
    ext = props.get("onPremisesExtensionAttributes") or {}
    phones = props.get("businessPhones") or [""]
    view = {
        "Identity": oid,
        "Name": name,
        "Alias": props.get("mailNickname")
        or (mail.split("@")[0] if mail else name),
        "DisplayName": props.get("displayName"),
        "FirstName": props.get("givenName") or "",
        "LastName": props.get("surname") or "",
        "Company": props.get("companyName") or "",
        "Department": props.get("department") or "",
        "Title": props.get("jobTitle") or "",
        "Office": props.get("officeLocation") or "",
        "StreetAddress": props.get("streetAddress") or "",
        "City": props.get("city") or "",
        "StateOrProvince": props.get("state") or "",
        "PostalCode": props.get("postalCode") or "",
        "CountryOrRegion": props.get("country") or "",
        "Phone": phones[0] if isinstance(phones, list) else phones,
        "MobilePhone": props.get("mobilePhone") or "",
        "Fax": props.get("faxNumber") or "",
        "PrimarySmtpAddress": mail or primary_smtp(addresses),
        "EmailAddresses@odata.type": "#Collection(String)",
        "EmailAddresses": addresses,
        "ExternalEmailAddress": external,
        "ExternalDirectoryObjectId": oid,
        "Guid": exo_guid(oid),
        "DistinguishedName": f"CN={name},{EXO_DN.format(domain=tenant.domain)}",
        "RecipientType": rtype,
        "RecipientTypeDetails": details,
        "HiddenFromAddressListsEnabled": hidden,
    }
    # When the object was made, as Exchange lists it (guessed: ISO 8601
    # UTC, the JSON output format's dates).
    created = created or props.get("createdDateTime")
    if created:
        view["WhenCreated"] = view["WhenCreatedUTC"] = created
    for n in range(1, 16):
        view[f"CustomAttribute{n}"] = ext.get(f"extensionAttribute{n}") or ""
    return view


def user_recipient(user, tenant=None):
    """A directory user as Exchange shows it: UserMailbox (member with
    mail), MailUser (New-MailUser), GuestMailUser, or User (no mail)."""
    props = user.props
    kind = user_kind(user)
    exo = user.exo or {}
    mail = props.get("mail")
    hidden_flag = props.get("showInAddressList")
    if kind == "UserMailbox":
        rtype, external = "UserMailbox", None
        hidden = hidden_flag is False
    elif kind == "User":
        rtype, external, hidden = "User", None, hidden_flag is False
    else:
        rtype = "MailUser"
        external = exo.get("ExternalEmailAddress") or f"SMTP:{mail}"
        # Guests are hidden from the GAL by default (MICROSOFT.md).
        hidden = (hidden_flag is not True) if kind == "GuestMailUser" \
            else hidden_flag is False
    view = recipient_view(tenant or _NO_TENANT, user.id,
                          exo.get("Name") or user.id, props, rtype, kind,
                          external, hidden)
    view["UserPrincipalName"] = props.get("userPrincipalName")
    return base_fields(user, view)


def contact_recipient(contact, tenant=None):
    """An org contact as Exchange shows a MailContact."""
    props = contact.props
    mail = props.get("mail")
    view = recipient_view(
        tenant or _NO_TENANT, contact.id,
        props.get("name") or props.get("displayName") or contact.id, props,
        "MailContact", "MailContact",
        props.get("externalEmailAddress") or f"SMTP:{mail}",
        props.get("hiddenFromAddressListsEnabled") is True,
        created=getattr(contact, "created", None))
    view["WhenChanged"] = view["WhenChangedUTC"] = when(contact.changed_at)
    return view


def group_recipient(group, tenant):
    props = group.props
    unified = "Unified" in (props.get("groupTypes") or [])
    details = "GroupMailbox" if unified else (
        "MailUniversalSecurityGroup" if props.get("securityEnabled")
        else "MailUniversalDistributionGroup")
    rtype = "MailUniversalDistributionGroup" if unified else details
    return recipient_view(tenant, group.id,
                          props.get("displayName") or group.id, props, rtype,
                          details, None,
                          props.get("hiddenFromAddressListsEnabled") is True)


class _NoTenant:
    domain = "unknown"


_NO_TENANT = _NoTenant()


def guest_provisioned(req, user):
    """exo_guest_provisioning_ms: Exchange learns of an invited guest only
    this long after the invitation (current knob value)."""
    delay = req.cloud.knobs["exo_guest_provisioning_ms"] / 1000.0
    return not (delay and user.invited_at
                and time.monotonic() < user.invited_at + delay)


def exo_objects(req, tenant, kinds=None):
    """[(obj, view)] of what Exchange lists, optionally only the given
    RecipientTypeDetails (a set)."""
    out = []
    for user in tenant.users.values():
        if user.deleted or not guest_provisioned(req, user):
            continue
        kind = user_kind(user)
        if kinds is None and kind == "User":
            continue
        if kinds is not None and kind not in kinds:
            continue
        out.append((user, user_recipient(user, tenant)))
    if kinds is None or "MailContact" in kinds:
        out += [(c, contact_recipient(c, tenant))
                for c in tenant.contacts.values() if c.props.get("mail")]
    if kinds is None or kinds & GROUP_KINDS:
        out += [(g, view) for g, view in
                ((g, group_recipient(g, tenant))
                 for g in tenant.groups.values() if g.props.get("mail"))
                if kinds is None or view["RecipientTypeDetails"] in kinds]
    return out


def identity_matches(view, identity):
    """-Identity forms the cmdlet docs list: Name, Alias, distinguished
    name, GUID, LegacyExchangeDN (Get-Mailbox's list); plus email address
    and ExternalDirectoryObjectId (Exchange resolves both;
    UserPrincipalName for users)."""
    key = strip_smtp(str(identity)).strip().lower()
    names = [view["Identity"], view["Name"], view["Alias"],
             view["DistinguishedName"], view["Guid"],
             view["ExternalDirectoryObjectId"], view["PrimarySmtpAddress"],
             view.get("UserPrincipalName"), view.get("LegacyExchangeDN")]
    names += [strip_smtp(a) for a in view["EmailAddresses"]
              if str(a)[:5].lower() == "smtp:"]
    return any(isinstance(n, str) and n.lower() == key for n in names)


def exo_resolve(req, tenant, identity, kinds):
    if not isinstance(identity, str) or not identity:
        exo_fail(400, "BadRequest", "ExB3C4D6", EXC_BINDING,
                 "Cannot process command because of one or more missing "
                 "mandatory parameters: Identity.")
    found = [(o, v) for o, v in exo_objects(req, tenant, kinds)
             if identity_matches(v, identity)]
    if not found:
        exo_not_found(identity)
    if len(found) > 1:
        exo_fail(400, "BadRequest", "Ex2B7A41", EXC_AMBIGUOUS,
                 f"The operation couldn't be performed because "
                 f"'{identity}' matches multiple entries.")
    return found[0]


def lowered(params):
    return {k.lower(): v for k, v in params.items()}


def exo_required(params, *names):
    missing = [n for n in names if params.get(n.lower()) in (None, "")]
    if missing:
        exo_fail(400, "BadRequest", "ExB3C4D6", EXC_BINDING,
                 f"Cannot process command because of one or more missing "
                 f"mandatory parameters: {' '.join(missing)}.")


def exo_length(name, value, limit):
    if isinstance(value, str) and text_length(value) > limit:
        exo_fail(400, "BadRequest", "Ex5C1D22", EXC_VALIDATION,
                 f"Cannot validate argument on parameter '{name}'. The "
                 f"argument is longer than the maximum allowed length of "
                 f"\"{limit}\". Provide an argument that is less than or "
                 f"equal to \"{limit}\" and then try the command again.")


def exo_bool(name, value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower().lstrip("$")
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    exo_fail(400, "BadRequest", "ExB3C4D7", EXC_BINDING,
             f"Cannot process argument transformation on parameter "
             f"'{name}'. Cannot convert value \"{value}\" to type "
             f"\"System.Boolean\".")


def exo_address(name, value):
    address = strip_smtp(value).strip()
    if not is_address(address):
        exo_fail(400, "BadRequest", "ExB3C4D8", EXC_BINDING,
                 f"Cannot process argument transformation on parameter "
                 f"'{name}'. Cannot convert value \"{value}\" to type "
                 f"\"Microsoft.Exchange.Data.ProxyAddress\".")
    return address


def exo_guid_param(name, value):
    """A System.Guid parameter: the forms .NET parses (32 digits, with
    dashes, in braces or parentheses), as lower-case dashed text; a bad
    one fails parameter binding with .NET's message."""
    text = str(value).strip()
    dashed = r"[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}"
    forms = (r"[0-9A-Fa-f]{32}", dashed, r"\{" + dashed + r"\}",
             r"\(" + dashed + r"\)")
    if not any(re.fullmatch(form, text) for form in forms):
        exo_fail(400, "BadRequest", "ExB3C4DB", EXC_BINDING,
                 f"Cannot process argument transformation on parameter "
                 f"'{name}'. Cannot convert value \"{value}\" to type "
                 f"\"System.Guid\". Error: \"Guid should contain 32 digits "
                 f"with 4 dashes (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx).\"")
    return str(uuid.UUID(text.strip("{}()")))


def owner_name(tenant, owner):
    kind, oid = owner
    if kind == "User":
        user = tenant.users[oid]
        return (user.exo or {}).get("Name") or oid
    if kind == "Group":
        return tenant.groups[oid].props.get("displayName") or oid
    contact = tenant.contacts[oid]
    return contact.props.get("name") or contact.props.get("displayName") \
        or oid


def proxy_taken(tenant, value, owner):
    """Exchange's answer to a proxy address another recipient holds."""
    exo_fail(400, "BadRequest", "Ex5A2D4E", EXC_PROXY_EXISTS,
             f"The proxy address \"{value}\" is already being used "
             f"by the proxy addresses or LegacyExchangeDN of "
             f"\"{owner_name(tenant, owner)}\". Please choose "
             f"another proxy address.")


def check_addresses_free(tenant, addresses, exclude=None):
    """Every SMTP address unique across the tenant's recipients (users,
    guests, mail users, contacts, groups)."""
    for value in addresses:
        if str(value)[:5].lower() != "smtp:":
            continue
        owner = tenant.address_owner(value[5:], exclude=exclude)
        if owner is not None:
            proxy_taken(tenant, value, owner)


def x500_values(addresses):
    """{folded value: address} of the X500 entries of a proxy list."""
    return {a.split(":", 1)[1].lower(): a for a in addresses
            if isinstance(a, str) and a[:5].lower() == "x500:"}


def user_x500_held(user):
    """Folded X500 values a user holds: its X500 proxies and, if it is a
    recipient, its own LegacyExchangeDN."""
    held = set(x500_values(x500s(user)))
    if user_kind(user) != "User":
        held.add(legacy_dn(user).lower())
    return held


def check_x500_free(tenant, addresses, exclude=None):
    """Every X500 address unique across the tenant's recipients: no other
    one holds it as a proxy address or as its LegacyExchangeDN (the
    ProxyAddressExists text names both).  X500 values compare
    case-insensitively."""
    wanted = x500_values(addresses)
    if not wanted:
        return
    for user in tenant.users.values():
        if user.deleted is None and user.id != exclude:
            hit = wanted.keys() & user_x500_held(user)
            if hit:
                proxy_taken(tenant, wanted[min(hit)], ("User", user.id))
    for kind, objects in (("Contact", tenant.contacts),
                          ("Group", tenant.groups)):
        for obj in objects.values():
            if obj.id == exclude:
                continue
            hit = wanted.keys() & set(x500_values(
                obj.props.get("proxyAddresses") or []))
            if hit:
                proxy_taken(tenant, wanted[min(hit)], (kind, obj.id))


def check_guid_free(tenant, name, value, exclude=None):
    """A mailbox GUID (ExchangeGuid or ArchiveGuid) no other recipient
    of the tenant holds as either (text observed in Microsoft's
    support blogs; the exception type is a guess)."""
    if value == ZERO_GUID:
        return
    for user in tenant.users.values():
        if user.deleted is None and user.id != exclude and \
                value in (exchange_guid(user), archive_guid(user)):
            exo_fail(400, "BadRequest", "Ex7B2C19", EXC_DATA_VALIDATION,
                     f"The value \"{value}\" of property \"{name}\" is "
                     f"used by another recipient object. Please specify a "
                     f"unique value.")


def recipient_names(req, tenant, exclude=None):
    return {v["Name"].lower() for o, v in exo_objects(req, tenant)
            if o.id != exclude and isinstance(v["Name"], str)}


def check_name_free(req, tenant, name, exclude=None):
    exo_length("Name", name, 64)
    if name.lower() in recipient_names(req, tenant, exclude):
        exo_fail(400, "BadRequest", "Ex6D1F0B", EXC_OBJECT_EXISTS,
                 f"The object 'CN={name},{EXO_DN.format(domain=tenant.domain)}"
                 f"' already exists.")


def derive_alias(req, tenant, name, exclude=None):
    """Alias from Name (characters an alias cannot hold dropped), made
    unique with a number, as Exchange does when -Alias is absent."""
    base = re.sub(r"[^A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]", "", name).strip(".")
    base = base[:64] or "recipient"
    taken = {str(v["Alias"]).lower() for o, v in exo_objects(req, tenant)
             if o.id != exclude}
    alias, n = base, 1
    while alias.lower() in taken:
        n += 1
        alias = f"{base[:60]}{n}"
    return alias


def apply_email_addresses(current, value):
    """EmailAddresses: a list replaces; the GenericHashTable form
    {"@odata.type": "#Exchange.GenericHashTable", "Add": [...],
    "Remove": [...]} edits.  "SMTP:" is the primary (one only), "smtp:"
    or no prefix a secondary."""
    def norm(item):
        item = str(item).strip()
        if ":" not in item:
            item = "smtp:" + item
        prefix, rest = item.split(":", 1)
        if prefix.lower() == "smtp":
            exo_address("EmailAddresses", rest)
        return item

    def as_list(item):
        if item is None:
            return []
        return list(item) if isinstance(item, list) else [item]

    if isinstance(value, dict):
        ops = lowered(value)
        out = list(current)
        for item in as_list(ops.get("remove")):
            key = norm(item).split(":", 1)[1].lower()
            out = [a for a in out if a.split(":", 1)[-1].lower() != key]
        for item in as_list(ops.get("add")):
            item = norm(item)
            key = item.split(":", 1)[1].lower()
            if item.startswith("SMTP:"):
                out = ["smtp:" + a[5:] if a.startswith("SMTP:") else a
                       for a in out]
            out = [a for a in out if a.split(":", 1)[-1].lower() != key]
            out.append(item)
    else:
        out = [norm(a) for a in as_list(value)]
        primaries = [a for a in out if a.startswith("SMTP:")]
        for extra in primaries[1:]:
            out[out.index(extra)] = "smtp:" + extra[5:]
    if not any(a.startswith("SMTP:") for a in out):
        for i, a in enumerate(out):
            if a[:5].lower() == "smtp:":
                out[i] = "SMTP:" + a[5:]
                break
    return out


def set_external_address(addresses, address):
    """ExternalEmailAddress becomes the primary SMTP address; the old
    primary stays as a secondary one."""
    out = [("smtp:" + a[5:]) if a.startswith("SMTP:") else a
           for a in addresses
           if a.split(":", 1)[-1].lower() != address.lower()]
    return [f"SMTP:{address}"] + out


def exo_result_size(params, items):
    size = params.get("resultsize", 1000)
    warnings = []
    if str(size).lower() != "unlimited":
        try:
            size = int(size)
        except (TypeError, ValueError):
            size = 1000
        if len(items) > size:
            items = items[:size]
            warnings.append("There are more results available than are "
                            "currently displayed. To view them, increase "
                            "the value for the ResultSize parameter.")
    return items, warnings
