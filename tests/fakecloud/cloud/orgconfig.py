"""A tenant's Exchange organisation settings for mailbox migration.

Accepted domains (the initial *.onmicrosoft.com domain and the mail
domain by default, more through the admin API or the seed), organisation
relationships, migration endpoints and the organisation config's
IsDehydrated, kept on Tenant.org (an Org, made on first use), and the
cmdlets that list them: Get-AcceptedDomain, Get-OrganizationRelationship,
Get-MigrationEndpoint, Get-OrganizationConfig.  Adding goes through the
admin API only (New-MigrationEndpoint and New-OrganizationRelationship
are one-time admin steps galbridge checks and never makes).
"""

import uuid

from .exchange import (cmdlet, exo_check_params, exo_not_found,
                       exo_result_size, lowered)
from .mailbox import NAMESPACE


CAPABILITIES = ("Inbound", "Outbound", "RemoteInbound", "RemoteOutbound")
LIST = "#Collection(String)"


def mail_domain(tenant_domain):
    """contoso.onmicrosoft.com -> contoso.com: the mail domain a tenant
    is given by default (seed_demo.py names its people's addresses by the
    same rule)."""
    if tenant_domain.lower().endswith(".onmicrosoft.com"):
        return tenant_domain[:-len(".onmicrosoft.com")] + ".com"
    return tenant_domain


class Org:
    """accepted: [{"DomainName", "Default", "InitialDomain"}];
    relationships and endpoints: their views' fields; dehydrated:
    Get-OrganizationConfig's IsDehydrated."""

    def __init__(self, domain):
        mail = mail_domain(domain)
        self.accepted = [{"DomainName": domain, "Default": mail == domain,
                          "InitialDomain": True}]
        if mail != domain:
            self.accepted.append({"DomainName": mail, "Default": True,
                                  "InitialDomain": False})
        self.relationships = []
        self.endpoints = []
        self.dehydrated = False


def org(tenant):
    """The tenant's Org (made with the defaults on first use)."""
    if tenant.org is None:
        tenant.org = Org(tenant.domain)
    return tenant.org


def accepted_names(tenant):
    """Lower-case names of the tenant's accepted domains."""
    return {d["DomainName"].lower() for d in org(tenant).accepted}


def is_accepted(tenant, address):
    """True if an address's domain is one of the tenant's accepted
    domains (authoritative ones: subdomains do not count)."""
    domain = str(address).rsplit("@", 1)[-1].lower()
    return domain in accepted_names(tenant)


def stable_guid(tenant, kind, name):
    """A Guid that stays the same across restarts and seeds."""
    return str(uuid.uuid5(NAMESPACE, f"{kind}:{tenant.id}:{name.lower()}"))


def text_list(value, name):
    """A list of strings (a lone string is a list of one); ValueError."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str)
                                              for v in value):
        raise ValueError(f"'{name}' must be a list of strings")
    return list(value)


def flag(value, name):
    """A boolean admin field; ValueError otherwise."""
    if not isinstance(value, bool):
        raise ValueError(f"'{name}' must be true or false")
    return value


def add_accepted_domain(tenant, data):
    """{"DomainName", "Default"?} added; a new default takes the flag
    from the old one.  KeyError if the tenant has it, ValueError if the
    body is bad."""
    if not isinstance(data, dict) or not isinstance(data.get("DomainName"),
                                                    str):
        raise ValueError("an accepted domain needs a DomainName")
    name = data["DomainName"].strip()
    if "." not in name or "@" in name or " " in name:
        raise ValueError(f"'{name}' is not a domain name")
    if name.lower() in accepted_names(tenant):
        raise KeyError(f"accepted domain {name} already exists")
    default = flag(data.get("Default", False), "Default")
    if default:
        for domain in org(tenant).accepted:
            domain["Default"] = False
    entry = {"DomainName": name, "Default": default,
             "InitialDomain": False}
    org(tenant).accepted.append(entry)
    return entry


def capability_text(value):
    """MailboxMoveCapability as Exchange writes the flags: the names in
    declaration order joined by ", " ("None" for none).  ValueError for
    an unknown name."""
    names = text_list(value, "MailboxMoveCapability") \
        if not isinstance(value, str) else value.split(",")
    wanted = {n.strip().lower() for n in names if n.strip()}
    unknown = wanted - {c.lower() for c in CAPABILITIES} - {"none"}
    if unknown:
        raise ValueError(f"unknown MailboxMoveCapability {sorted(unknown)}")
    chosen = [c for c in CAPABILITIES if c.lower() in wanted]
    return ", ".join(chosen) or "None"


def capabilities(relationship):
    """The set of a relationship's MailboxMoveCapability names."""
    return {c.strip() for c in relationship["MailboxMoveCapability"]
            .split(",")} - {"None"}


def new_name(data, items, key, what):
    """The "Name" of an admin body for a new `what`: ValueError if there
    is none, KeyError if an item's `key` already has it."""
    if not isinstance(data, dict) or not isinstance(data.get("Name"), str) \
            or not data["Name"].strip():
        raise ValueError(f"a {what} needs a Name")
    name = data["Name"].strip()
    if find_named(items, key, name):
        raise KeyError(f"{what} {name} already exists")
    return name


def add_relationship(tenant, data):
    """An organisation relationship from {"Name", "DomainNames",
    "Enabled"?, "MailboxMoveEnabled"?, "MailboxMoveCapability"?,
    "OAuthApplicationId"?, "MailboxMovePublishedScopes"?}.  KeyError if
    the name is taken, ValueError if the body is bad."""
    name = new_name(data, org(tenant).relationships, "Name",
                    "organization relationship")
    app = data.get("OAuthApplicationId")
    if app is not None and not isinstance(app, str):
        raise ValueError("'OAuthApplicationId' must be a string")
    entry = {
        "Name": name,
        "DomainNames": text_list(data.get("DomainNames", []),
                                 "DomainNames"),
        "Enabled": flag(data.get("Enabled", True), "Enabled"),
        "MailboxMoveEnabled": flag(data.get("MailboxMoveEnabled", False),
                                   "MailboxMoveEnabled"),
        "MailboxMoveCapability": capability_text(
            data.get("MailboxMoveCapability", "None")),
        "OAuthApplicationId": app,
        "MailboxMovePublishedScopes": text_list(
            data.get("MailboxMovePublishedScopes", []),
            "MailboxMovePublishedScopes"),
    }
    org(tenant).relationships.append(entry)
    return entry


def add_endpoint(tenant, data):
    """A migration endpoint from {"Name", "RemoteTenant",
    "ApplicationId", "RemoteServer"? (outlook.office.com),
    "EndpointType"? (ExchangeRemoteMove)}.  KeyError if the name is
    taken, ValueError if the body is bad."""
    name = new_name(data, org(tenant).endpoints, "Identity",
                    "migration endpoint")
    entry = {"Identity": name}
    for field, default in (("RemoteServer", "outlook.office.com"),
                           ("RemoteTenant", None), ("ApplicationId", None),
                           ("EndpointType", "ExchangeRemoteMove")):
        value = data.get(field, default)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"'{field}' must be a string")
        entry[field] = value
    org(tenant).endpoints.append(entry)
    return entry


def seed_org(tenant, spec):
    """A seed's tenant keys "acceptedDomains" (names or objects),
    "organizationRelationships" and "migrationEndpoints"; ValueError."""
    for domain in spec.get("acceptedDomains", []):
        if isinstance(domain, str):
            domain = {"DomainName": domain}
        try:
            add_accepted_domain(tenant, domain)
        except KeyError:
            pass                    # the defaults may be listed again
    for add, key in ((add_relationship, "organizationRelationships"),
                     (add_endpoint, "migrationEndpoints")):
        for data in spec.get(key, []):
            try:
                add(tenant, data)
            except KeyError as exc:
                raise ValueError(str(exc.args[0])) from None


# -- views and cmdlets -------------------------------------------------------

def domain_view(tenant, domain):
    """An accepted domain as Get-AcceptedDomain lists it (the property
    names of Exchange's AcceptedDomain object)."""
    name = domain["DomainName"]
    return {"Identity": name, "Name": name, "DomainName": name,
            "DomainType": "Authoritative", "Default": domain["Default"],
            "InitialDomain": domain["InitialDomain"],
            "MatchSubDomains": False, "AddressBookEnabled": True,
            "PendingRemoval": False,
            "Guid": stable_guid(tenant, "domain", name)}


def relationship_view(tenant, rel):
    """An organisation relationship as Get-OrganizationRelationship
    lists it."""
    view = {"Identity": rel["Name"]}
    view.update(rel)
    view["DomainNames@odata.type"] = LIST
    view["MailboxMovePublishedScopes@odata.type"] = LIST
    view["Guid"] = stable_guid(tenant, "orgrel", rel["Name"])
    return view


def endpoint_view(tenant, endpoint):
    """A migration endpoint as Get-MigrationEndpoint lists it
    (MigrationEndpoint has no Name: Identity is the name given)."""
    view = dict(endpoint)
    view.update({"Username": endpoint["ApplicationId"],
                 "AppSecretKeyVaultUrl": None, "IsRemote": True,
                 "Guid": stable_guid(tenant, "endpoint",
                                     endpoint["Identity"])})
    return view


def find_named(items, key, identity):
    """The items whose `key` is identity (case-insensitive)."""
    want = str(identity).strip().lower()
    return [i for i in items if str(i[key]).lower() == want]


def list_or_one(tenant, params, attr, key, view):
    """A Get- cmdlet over one of the tenant's Org lists (`attr`), with an
    optional -Identity matched on `key`: every item, or the one named
    (ManagementObjectNotFoundException if none); each as view(tenant,
    item) shows it."""
    exo_check_params(params, {"identity", "resultsize"})
    p = lowered(params)
    items = getattr(org(tenant), attr)
    identity = p.get("identity")
    if identity not in (None, ""):
        items = find_named(items, key, identity)
        if not items:
            exo_not_found(identity)
    return exo_result_size(p, [view(tenant, i) for i in items])


@cmdlet("Get-AcceptedDomain")
def cmd_get_accepted_domain(req, tenant, params):
    """The tenant's accepted domains, or the one -Identity names."""
    return list_or_one(tenant, params, "accepted", "DomainName", domain_view)


@cmdlet("Get-OrganizationRelationship")
def cmd_get_organization_relationship(req, tenant, params):
    """The tenant's organisation relationships, or the one named."""
    return list_or_one(tenant, params, "relationships", "Name",
                       relationship_view)


@cmdlet("Get-MigrationEndpoint")
def cmd_get_migration_endpoint(req, tenant, params):
    """The tenant's migration endpoints, or the one named."""
    return list_or_one(tenant, params, "endpoints", "Identity",
                       endpoint_view)


@cmdlet("Get-OrganizationConfig")
def cmd_get_organization_config(req, tenant, params):
    """The organisation config (only what migration needs)."""
    exo_check_params(params, {"identity"})
    return [{"Identity": tenant.domain, "Name": tenant.domain,
             "IsDehydrated": org(tenant).dehydrated,
             "Guid": stable_guid(tenant, "org", tenant.domain)}], []
