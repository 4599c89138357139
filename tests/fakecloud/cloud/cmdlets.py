"""Exchange recipient cmdlets.

Get-Recipient, Get-MailContact, Get-Contact, Get-MailUser, Get-User,
New-MailContact, New-MailUser, Set-MailContact, Set-MailUser, Set-Contact,
Set-User, Remove-MailContact and Remove-MailUser, registered with @cmdlet;
each answers (results, warnings).  -Filter is OPATH (opath.py).  Exchange
and Graph are one directory: a cmdlet changes the same Tenant objects that
Graph shows.
"""

from .directory import Group, is_address
from .exchange import (ADDRESS_BOOK, CUSTOM_ATTRIBUTES, EXC_BINDING,
                       EXC_OBJECT_EXISTS, EXC_VALIDATION,
                       apply_email_addresses, check_addresses_free,
                       check_name_free, cmdlet, contact_recipient,
                       derive_alias, exo_address, exo_bool, exo_check_params,
                       exo_fail, exo_length, exo_not_found, exo_objects,
                       exo_required, exo_resolve, exo_result_size, lowered,
                       primary_smtp, set_external_address, user_recipient)
from .opath import opath_parse


GET_PARAMS = {"identity", "filter", "resultsize"}
MAIL_CONTACT = {"MailContact"}
MAIL_USER = {"MailUser", "GuestMailUser"}
ANY_USER = {"UserMailbox", "MailUser", "GuestMailUser", "User"}


def recipient_matches(recipient, identity):
    key = identity.lower()
    if key.startswith("smtp:"):
        key = key[5:]
    names = [recipient["Identity"], recipient["Name"], recipient["Alias"],
             recipient["DisplayName"], recipient["PrimarySmtpAddress"]]
    names += [a.split(":", 1)[-1] for a in recipient["EmailAddresses"]]
    return any(isinstance(n, str) and n.lower() == key for n in names)


@cmdlet("Get-Recipient")
def cmd_get_recipient(req, tenant, params):
    exo_check_params(params, {"identity", "recipienttypedetails",
                              "resultsize", "filter"})
    lowered_params = lowered(params)
    recipients = [v for o, v in exo_objects(req, tenant)
                  if not isinstance(o, Group)]
    if lowered_params.get("filter") not in (None, ""):
        test = opath_parse(lowered_params["filter"])
        recipients = [r for r in recipients if test(r)]
    identity = lowered_params.get("identity")
    if identity is not None:
        recipients = [r for r in recipients
                      if recipient_matches(r, str(identity))]
        if not recipients:
            exo_not_found(identity)
    kinds = lowered_params.get("recipienttypedetails")
    if kinds is not None:
        if isinstance(kinds, str):
            kinds = kinds.split(",")
        wanted = {str(k).strip().lower() for k in kinds}
        recipients = [r for r in recipients
                      if r["RecipientTypeDetails"].lower() in wanted]
    return exo_result_size(lowered_params, recipients)


def exo_get(req, tenant, params, kinds):
    exo_check_params(params, GET_PARAMS)
    p = lowered(params)
    if p.get("identity") not in (None, ""):
        return [exo_resolve(req, tenant, p["identity"], kinds)[1]], []
    views = [v for o, v in exo_objects(req, tenant, kinds)]
    if p.get("filter") not in (None, ""):
        test = opath_parse(p["filter"])
        views = [v for v in views if test(v)]
    return exo_result_size(p, views)


@cmdlet("Get-MailContact")
def cmd_get_mail_contact(req, tenant, params):
    return exo_get(req, tenant, params, MAIL_CONTACT)


@cmdlet("Get-Contact")
def cmd_get_contact(req, tenant, params):
    return exo_get(req, tenant, params, MAIL_CONTACT)


@cmdlet("Get-MailUser")
def cmd_get_mail_user(req, tenant, params):
    return exo_get(req, tenant, params, MAIL_USER)


@cmdlet("Get-User")
def cmd_get_user(req, tenant, params):
    return exo_get(req, tenant, params, ANY_USER)


NEW_COMMON = {"name", "externalemailaddress", "displayname", "firstname",
              "lastname", "alias", "initials", "confirm"}


def new_common(req, tenant, params):
    exo_required(params, "Name", "ExternalEmailAddress")
    name = str(params["name"])
    check_name_free(req, tenant, name)
    address = exo_address("ExternalEmailAddress",
                          params["externalemailaddress"])
    check_addresses_free(tenant, [f"SMTP:{address}"])
    for key, limit in (("displayname", 256), ("firstname", 64),
                       ("lastname", 64), ("alias", 64)):
        exo_length(key, params.get(key), limit)
    alias = params.get("alias") or derive_alias(req, tenant, name)
    props = {"displayName": params.get("displayname") or name,
             "mail": address, "mailNickname": alias,
             "proxyAddresses": [f"SMTP:{address}"]}
    if params.get("firstname"):
        props["givenName"] = params["firstname"]
    if params.get("lastname"):
        props["surname"] = params["lastname"]
    return name, address, props


@cmdlet("New-MailContact")
def cmd_new_mail_contact(req, tenant, params):
    exo_check_params(params, NEW_COMMON)
    p = lowered(params)
    name, address, props = new_common(req, tenant, p)
    props.update({"name": name, "externalEmailAddress": f"SMTP:{address}",
                  "hiddenFromAddressListsEnabled": False})
    contact = tenant.add_contact(props)
    return [contact_recipient(contact, tenant)], []


@cmdlet("New-MailUser")
def cmd_new_mail_user(req, tenant, params):
    """Parameter sets (New-MailUser docs): DisabledUser = -Name
    -ExternalEmailAddress (no password, no sign-in); EnabledUser adds
    -Password and -MicrosoftOnlineServicesID (cloud) / -UserPrincipalName."""
    exo_check_params(params, NEW_COMMON | {
        "password", "microsoftonlineservicesid", "userprincipalname",
        "primarysmtpaddress"})
    p = lowered(params)
    upn = p.get("microsoftonlineservicesid") or p.get("userprincipalname")
    if bool(p.get("password")) != bool(upn):
        exo_fail(400, "BadRequest", "ExB3C4D9", EXC_BINDING,
                 "Parameter set cannot be resolved using the specified named "
                 "parameters. One or more parameters issued cannot be used "
                 "together or an insufficient number of parameters were "
                 "provided.")
    name, address, props = new_common(req, tenant, p)
    taken = {(u.props.get("userPrincipalName") or "").lower()
             for u in tenant.users.values() if not u.deleted}
    if upn:
        upn = str(upn)
        if not is_address(upn) or \
                not upn.lower().endswith("@" + tenant.domain.lower()):
            exo_fail(400, "BadRequest", "ExB3C4DA", EXC_BINDING,
                     f"Cannot process argument transformation on parameter "
                     f"'MicrosoftOnlineServicesID'. The domain of \"{upn}\" "
                     f"is not an accepted domain of the organization.")
        if upn.lower() in taken:
            exo_fail(400, "BadRequest", "Ex6D1F0C", EXC_OBJECT_EXISTS,
                     f"The object '{upn}' already exists.")
    else:
        upn = f"{props['mailNickname']}@{tenant.domain}"
        base, n = upn.split("@")[0], 1
        while upn.lower() in taken:
            n += 1
            upn = f"{base}{n}@{tenant.domain}"
    props.update({"userPrincipalName": upn, "userType": "Member",
                  "accountEnabled": bool(p.get("password")),
                  "creationType": None})
    user = tenant.add_user(props)
    user.exo = {"kind": "MailUser", "Name": name,
                "ExternalEmailAddress": f"SMTP:{address}"}
    return [user_recipient(user, tenant)], []


def set_common(req, tenant, obj, p, is_user):
    """Set-MailContact / Set-MailUser: HiddenFromAddressListsEnabled,
    CustomAttribute1..15, EmailAddresses, ExternalEmailAddress,
    DisplayName, Name, Alias."""
    props = obj.props
    changes = {}
    addresses = list(props.get("proxyAddresses") or []) or \
        ([f"SMTP:{props['mail']}"] if props.get("mail") else [])
    new_addresses = None
    external = None
    if "externalemailaddress" in p:
        external = exo_address("ExternalEmailAddress",
                               p["externalemailaddress"])
        new_addresses = set_external_address(addresses, external)
    if "emailaddresses" in p:
        new_addresses = apply_email_addresses(
            new_addresses if new_addresses is not None else addresses,
            p["emailaddresses"])
    if new_addresses is not None:
        check_addresses_free(tenant, new_addresses, exclude=obj.id)
        changes["proxyAddresses"] = new_addresses
        changes["mail"] = primary_smtp(new_addresses)
    if "name" in p:
        check_name_free(req, tenant, str(p["name"]), exclude=obj.id)
    for key, prop, limit in (("displayname", "displayName", 256),
                             ("alias", "mailNickname", 64)):
        if key in p:
            exo_length(key, p[key], limit)
            changes[prop] = p[key]
    custom = {}
    for n in range(1, 16):
        key = f"customattribute{n}"
        if key in p:
            value = p[key]
            exo_length(f"CustomAttribute{n}", value, 1024)
            custom[f"extensionAttribute{n}"] = value if value not in (
                None, "") else None
    if custom:
        merged = dict(props.get("onPremisesExtensionAttributes") or {})
        merged.update(custom)
        changes["onPremisesExtensionAttributes"] = merged
    hidden = None
    if "hiddenfromaddresslistsenabled" in p:
        hidden = exo_bool("HiddenFromAddressListsEnabled",
                          p["hiddenfromaddresslistsenabled"])
    # All checks passed: apply.
    if is_user:
        if hidden is not None:
            changes["showInAddressList"] = not hidden
        tenant.patch_user(obj, changes)
        if "name" in p or external is not None:
            obj.exo = dict(obj.exo or {})
            if "name" in p:
                obj.exo["Name"] = str(p["name"])
            if external is not None:
                obj.exo["ExternalEmailAddress"] = f"SMTP:{external}"
    else:
        props.update(changes)
        if hidden is not None:
            props["hiddenFromAddressListsEnabled"] = hidden
        if "name" in p:
            props["name"] = str(p["name"])
        if external is not None:
            props["externalEmailAddress"] = f"SMTP:{external}"


SET_MAIL = {"identity", "hiddenfromaddresslistsenabled", "emailaddresses",
            "externalemailaddress", "displayname", "name", "alias",
            "confirm"} | {a.lower() for a in CUSTOM_ATTRIBUTES}


@cmdlet("Set-MailContact")
def cmd_set_mail_contact(req, tenant, params):
    exo_check_params(params, SET_MAIL)
    p = lowered(params)
    contact, _ = exo_resolve(req, tenant, p.get("identity"), MAIL_CONTACT)
    set_common(req, tenant, contact, p, is_user=False)
    return [], []


@cmdlet("Set-MailUser")
def cmd_set_mail_user(req, tenant, params):
    exo_check_params(params, SET_MAIL)
    p = lowered(params)
    user, _ = exo_resolve(req, tenant, p.get("identity"), MAIL_USER)
    set_common(req, tenant, user, p, is_user=True)
    return [], []


SET_BOOK = {"identity", "name", "confirm"} | set(ADDRESS_BOOK)


def address_book_changes(p):
    changes = {}
    for key, (prop, limit) in ADDRESS_BOOK.items():
        if key not in p:
            continue
        value = p[key]
        if value is not None and not isinstance(value, str):
            value = str(value)
        exo_length(key, value, limit)
        if key == "displayname" and not (value or "").strip():
            exo_fail(400, "BadRequest", "Ex5C1D23", EXC_VALIDATION,
                     "Cannot validate argument on parameter 'DisplayName'. "
                     "The argument is null or empty. Provide an argument "
                     "that is not null or empty, and then try the command "
                     "again.")
        if prop == "businessPhones":
            value = [value] if value else []
        elif value == "":
            value = None
        changes[prop] = value
    return changes


@cmdlet("Set-Contact")
def cmd_set_contact(req, tenant, params):
    exo_check_params(params, SET_BOOK)
    p = lowered(params)
    contact, _ = exo_resolve(req, tenant, p.get("identity"), MAIL_CONTACT)
    changes = address_book_changes(p)
    if "name" in p:
        check_name_free(req, tenant, str(p["name"]), exclude=contact.id)
        changes["name"] = str(p["name"])
    contact.props.update(changes)
    return [], []


@cmdlet("Set-User")
def cmd_set_user(req, tenant, params):
    exo_check_params(params, SET_BOOK)
    p = lowered(params)
    user, _ = exo_resolve(req, tenant, p.get("identity"), ANY_USER)
    changes = address_book_changes(p)
    if "name" in p:
        check_name_free(req, tenant, str(p["name"]), exclude=user.id)
    tenant.patch_user(user, changes)
    if "name" in p:
        user.exo = dict(user.exo or {})
        user.exo["Name"] = str(p["name"])
    return [], []


@cmdlet("Remove-MailContact")
def cmd_remove_mail_contact(req, tenant, params):
    exo_check_params(params, {"identity", "confirm"})
    p = lowered(params)
    contact, _ = exo_resolve(req, tenant, p.get("identity"), MAIL_CONTACT)
    del tenant.contacts[contact.id]
    return [], []


@cmdlet("Remove-MailUser")
def cmd_remove_mail_user(req, tenant, params):
    """Removes the directory user too (soft-deleted, like a Graph
    DELETE)."""
    exo_check_params(params, {"identity", "confirm"})
    p = lowered(params)
    user, _ = exo_resolve(req, tenant, p.get("identity"), MAIL_USER)
    tenant.delete_user(user, hard=False)
    return [], []
