"""Exchange recipient cmdlets.

Get-Recipient, Get-MailContact, Get-Contact, Get-MailUser, Get-User,
Get-Mailbox, Get-DistributionGroupMember, New-MailContact, New-MailUser,
Set-MailContact, Set-MailUser, Set-Contact, Set-User, Remove-MailContact
and Remove-MailUser, registered with @cmdlet;
each answers (results, warnings).  -Filter is OPATH (opath.py).  Exchange
and Graph are one directory: a cmdlet changes the same Tenant objects that
Graph shows.
"""

from .directory import Group, is_address
from .exchange import (ADDRESS_BOOK, CUSTOM_ATTRIBUTES, EXC_BINDING,
                       EXC_OBJECT_EXISTS, EXC_VALIDATION, GROUP_KINDS,
                       apply_email_addresses, check_addresses_free,
                       check_guid_free, check_name_free, check_x500_free,
                       cmdlet, contact_recipient, derive_alias, exo_address,
                       exo_bool, exo_check_params, exo_fail, exo_guid_param,
                       exo_length, exo_not_found, exo_objects, exo_required,
                       exo_resolve, exo_result_size, group_recipient,
                       guest_provisioned, lowered, primary_smtp,
                       set_external_address, user_recipient, x500_values)
from .mailbox import (is_dir_synced, mail_user_fields, mailbox_fields, touch,
                      user_fields, writable, x500s)
from .opath import opath_parse
from .orgconfig import is_accepted


GET_PARAMS = {"identity", "filter", "resultsize"}
MAIL_CONTACT = {"MailContact"}
MAIL_USER = {"MailUser", "GuestMailUser"}
MAILBOX = {"UserMailbox"}
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


def exo_get(req, tenant, params, kinds, extend=None):
    """A Get- cmdlet over the recipients of `kinds`: -Identity (one or
    ManagementObjectNotFoundException), -Filter, -ResultSize.
    extend(obj, view) adds the cmdlet's own properties (before the
    filter sees them)."""
    exo_check_params(params, GET_PARAMS)
    p = lowered(params)
    extend = extend or (lambda obj, view: view)
    if p.get("identity") not in (None, ""):
        return [extend(*exo_resolve(req, tenant, p["identity"], kinds))], []
    views = [extend(o, v) for o, v in exo_objects(req, tenant, kinds)]
    if p.get("filter") not in (None, ""):
        test = opath_parse(p["filter"])
        views = [v for v in views if test(v)]
    return exo_result_size(p, views)


@cmdlet("Get-MailContact")
def cmd_get_mail_contact(req, tenant, params):
    return exo_get(req, tenant, params, MAIL_CONTACT)


@cmdlet("Get-Contact")
def cmd_get_contact(req, tenant, params):
    return exo_get(req, tenant, params, MAIL_CONTACT,
                   lambda obj, view: dict(view,
                                          Manager=manager_name(tenant, obj)))


@cmdlet("Get-MailUser")
def cmd_get_mail_user(req, tenant, params):
    """Mail users and guests, with their mailbox GUIDs."""
    return exo_get(req, tenant, params, MAIL_USER, mail_user_fields)


@cmdlet("Get-User")
def cmd_get_user(req, tenant, params):
    """Every user, with PreviousRecipientTypeDetails, SKUAssigned and
    Manager."""
    return exo_get(req, tenant, params, ANY_USER,
                   lambda obj, view: dict(user_fields(obj, view),
                                          Manager=manager_name(tenant, obj)))


@cmdlet("Get-Mailbox")
def cmd_get_mailbox(req, tenant, params):
    """User mailboxes with their migration data (mailbox.py)."""
    return exo_get(req, tenant, params, MAILBOX, mailbox_fields)


@cmdlet("Get-DistributionGroupMember")
def cmd_get_distribution_group_member(req, tenant, params):
    """The direct members of a distribution group or mail-enabled
    security group, in the Get-Recipient shape (users Exchange does not
    know yet and deleted ones left out)."""
    exo_check_params(params, {"identity", "resultsize"})
    p = lowered(params)
    group, _ = exo_resolve(req, tenant, p.get("identity"), GROUP_KINDS)
    members = []
    for member in group.members:
        user = tenant.users.get(member)
        if user is not None and user.deleted is None and \
                guest_provisioned(req, user):
            members.append(user_recipient(user, tenant))
        elif member in tenant.groups and \
                tenant.groups[member].props.get("mail"):
            members.append(group_recipient(tenant.groups[member], tenant))
    return exo_result_size(p, members)


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


def checked_upn(tenant, upn, taken):
    """-MicrosoftOnlineServicesID: an address in an accepted domain that
    no other user of the tenant has as its UPN (`taken`: lower case)."""
    upn = str(upn)
    if not is_address(upn) or not is_accepted(tenant, upn):
        exo_fail(400, "BadRequest", "ExB3C4DA", EXC_BINDING,
                 f"Cannot process argument transformation on parameter "
                 f"'MicrosoftOnlineServicesID'. The domain of \"{upn}\" "
                 f"is not an accepted domain of the organization.")
    if upn.lower() in taken:
        exo_fail(400, "BadRequest", "Ex6D1F0C", EXC_OBJECT_EXISTS,
                 f"The object '{upn}' already exists.")
    return upn


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
        upn = checked_upn(tenant, upn, taken)
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
    return [mail_user_fields(user, user_recipient(user, tenant))], []


EXC_NOT_ACCEPTED = ("Microsoft.Exchange.Configuration.ObjectModel."
                    "NotAcceptedDomainException")
# Observed (EXO module output) with an empty error id.
EXC_INVALID_OPERATION = "System.InvalidOperationException"


def current_addresses(obj, is_user):
    """EmailAddresses as Exchange holds them: the directory's proxy
    addresses (or the mail address) and, for users, the X500 ones."""
    props = obj.props
    addresses = list(props.get("proxyAddresses") or []) or \
        ([f"SMTP:{props['mail']}"] if props.get("mail") else [])
    return addresses + (x500s(obj) if is_user else [])


def added_entries(before, after):
    """Entries of `after` whose value `before` does not hold
    (case-insensitive)."""
    held = {a.split(":", 1)[-1].lower() for a in before}
    return [a for a in after if a.split(":", 1)[-1].lower() not in held]


def check_domains_accepted(tenant, added):
    """Set-MailUser -EmailAddresses: an added SMTP address must be in one
    of the tenant's accepted domains (the text is the one Microsoft
    documents for NotAcceptedDomainException)."""
    for value in added:
        if value[:5].lower() == "smtp:" and not is_accepted(tenant, value):
            exo_fail(400, "BadRequest", "Ex3D9F21", EXC_NOT_ACCEPTED,
                     "You can't use the domain because it's not an accepted "
                     "domain for your organization.")


def address_changes(tenant, obj, p, is_user):
    """ExternalEmailAddress and EmailAddresses checked: (directory
    changes, the user's new X500 list or None, the external address or
    None)."""
    current = current_addresses(obj, is_user)
    new_addresses = None
    external = None
    if "externalemailaddress" in p:
        external = exo_address("ExternalEmailAddress",
                               p["externalemailaddress"])
        new_addresses = set_external_address(current, external)
    if "emailaddresses" in p:
        edited = apply_email_addresses(
            new_addresses if new_addresses is not None else current,
            p["emailaddresses"])
        if is_user:
            check_domains_accepted(tenant, added_entries(current, edited))
        new_addresses = edited
    if new_addresses is None:
        return {}, None, external
    check_addresses_free(tenant, new_addresses, exclude=obj.id)
    check_x500_free(tenant, added_entries(current, new_addresses),
                    exclude=obj.id)
    x500 = None
    if is_user:
        x500 = list(x500_values(new_addresses).values())
        new_addresses = [a for a in new_addresses if a not in x500]
    return ({"proxyAddresses": new_addresses,
             "mail": primary_smtp(new_addresses)}, x500, external)


def guid_changes(tenant, user, p):
    """Set-MailUser -ExchangeGuid / -ArchiveGuid (already parsed):
    {property: GUID}, each unique in the tenant."""
    changes = {}
    for key, name in (("exchangeguid", "ExchangeGuid"),
                      ("archiveguid", "ArchiveGuid")):
        if key in p:
            check_guid_free(tenant, name, p[key], exclude=user.id)
            changes[name] = p[key]
    return changes


def check_not_dir_synced(user, view, cmdlet_name, params):
    """An object synchronised from on-premises refuses every change made
    in Exchange Online, with the write-scope text Microsoft's tools show
    (the parameter named is the first one given; guessed for
    Set-MailUser and Set-User, observed for Set-Mailbox)."""
    changed = [k for k in params if k.lower() not in ("identity",
                                                      "confirm")]
    if changed and is_dir_synced(user):
        name = view["Name"]
        exo_fail(400, "BadRequest", "", EXC_INVALID_OPERATION,
                 f"The operation on mailbox \"{name}\" failed because it's "
                 f"out of the current user's write scope. The action "
                 f"'{cmdlet_name}', '{changed[0]}', can't be performed on "
                 f"the object '{name}' because the object is being "
                 f"synchronized from your on-premises organization. This "
                 f"action should be performed on the object in your "
                 f"on-premises organization.")


def other_changes(req, tenant, obj, p):
    """Name, DisplayName, Alias, CustomAttribute1..15 checked: the
    directory changes."""
    props = obj.props
    changes = {}
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
    return changes


def set_common(req, tenant, obj, p, is_user):
    """Set-MailContact / Set-MailUser: HiddenFromAddressListsEnabled,
    CustomAttribute1..15, EmailAddresses, ExternalEmailAddress,
    DisplayName, Name, Alias; Set-MailUser also ExchangeGuid and
    ArchiveGuid.  Every check is made before anything changes."""
    changes, x500, external = address_changes(tenant, obj, p, is_user)
    changes.update(other_changes(req, tenant, obj, p))
    guids = guid_changes(tenant, obj, p) if is_user else {}
    hidden = None
    if "hiddenfromaddresslistsenabled" in p:
        hidden = exo_bool("HiddenFromAddressListsEnabled",
                          p["hiddenfromaddresslistsenabled"])
    if is_user:
        apply_user(tenant, obj, p, changes, hidden, external,
                   (x500, guids))
    else:
        apply_contact(obj, p, changes, hidden, external)


def apply_user(tenant, user, p, changes, hidden, external, exchange_data):
    """Set-MailUser's checked changes applied: the directory's, then
    Exchange's own (Name, ExternalEmailAddress, X500s, GUIDs)."""
    x500, guids = exchange_data
    if hidden is not None:
        changes["showInAddressList"] = not hidden
    tenant.patch_user(user, changes)
    if "name" in p or external is not None:
        user.exo = dict(user.exo or {})
        if "name" in p:
            user.exo["Name"] = str(p["name"])
        if external is not None:
            user.exo["ExternalEmailAddress"] = f"SMTP:{external}"
    if x500 is not None or guids:
        box = writable(user)
        if x500 is not None:
            box["x500"] = x500
        box.update(guids)
        touch(user)


def apply_contact(contact, p, changes, hidden, external):
    """Set-MailContact's checked changes applied."""
    props = contact.props
    props.update(changes)
    if hidden is not None:
        props["hiddenFromAddressListsEnabled"] = hidden
    if "name" in p:
        props["name"] = str(p["name"])
    if external is not None:
        props["externalEmailAddress"] = f"SMTP:{external}"
    touch(contact)


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
    """Set-MailContact's parameters plus -ExchangeGuid and -ArchiveGuid
    (GUIDs; bound before the object is looked up, as PowerShell binds
    parameters first) and -MicrosoftOnlineServicesID (the UPN, in an
    accepted domain, unique in the tenant)."""
    exo_check_params(params, SET_MAIL | {"exchangeguid", "archiveguid",
                                         "microsoftonlineservicesid"})
    p = lowered(params)
    for key, name in (("exchangeguid", "ExchangeGuid"),
                      ("archiveguid", "ArchiveGuid")):
        if key in p:
            p[key] = exo_guid_param(name, p[key])
    user, view = exo_resolve(req, tenant, p.get("identity"), MAIL_USER)
    check_not_dir_synced(user, view, "Set-MailUser", params)
    upn = None
    if p.get("microsoftonlineservicesid"):
        # Cloud only: the user's sign-in name (its UPN).
        taken = {(u.props.get("userPrincipalName") or "").lower()
                 for u in tenant.users.values()
                 if not u.deleted and u is not user}
        upn = checked_upn(tenant, p["microsoftonlineservicesid"], taken)
    set_common(req, tenant, user, p, is_user=True)
    if upn is not None:
        tenant.patch_user(user, {"userPrincipalName": upn})
    return [], []


SET_BOOK = {"identity", "name", "confirm", "manager"} | set(ADDRESS_BOOK)


def manager_change(req, tenant, obj, p):
    """-Manager (Set-Contact.md, Set-User.md: a UserContactIdParameter):
    the user or mail contact it names, or $null to clear; an identity no
    recipient has fails as any unknown identity does."""
    if "manager" not in p:
        return
    value = p["manager"]
    if value in (None, ""):
        tenant.set_manager(obj, None)
        return
    manager, _ = exo_resolve(req, tenant, str(value),
                             ANY_USER | MAIL_CONTACT)
    tenant.set_manager(obj, manager.id)


def manager_name(tenant, obj):
    """Get-Contact and Get-User show Manager as the manager's name."""
    if obj.manager is None:
        return None
    manager = tenant.find_directory_object(obj.manager)
    if manager is None:
        return None
    exo = getattr(manager, "exo", None) or {}
    return (exo.get("Name") or manager.props.get("name")
            or manager.props.get("displayName") or manager.id)


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
    manager_change(req, tenant, contact, p)
    contact.props.update(changes)
    touch(contact)
    return [], []


@cmdlet("Set-User")
def cmd_set_user(req, tenant, params):
    exo_check_params(params, SET_BOOK)
    p = lowered(params)
    user, view = exo_resolve(req, tenant, p.get("identity"), ANY_USER)
    check_not_dir_synced(user, view, "Set-User", params)
    changes = address_book_changes(p)
    if "name" in p:
        check_name_free(req, tenant, str(p["name"]), exclude=user.id)
    manager_change(req, tenant, user, p)
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
