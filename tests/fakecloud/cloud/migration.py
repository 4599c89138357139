"""Cross-tenant mailbox moves and licences, as MRS and licensing do them.

move_problem() is what the Mailbox Replication Service checks before a
cross-tenant move from a source mailbox to a target mail user (the
cross-tenant mailbox migration doc's prerequisites and its "Migration
failures" list, Microsoft's validation script): the first problem found,
as (exception name, text), or None.  move_mailbox() does the move the
admin API asks for; license_user() what assigning an Exchange licence
(SKUAssigned) does to a mail user or mailbox.  Test-MigrationServerAvailability
runs the same checks from the target tenant, through an endpoint.
"""

import uuid

from .directory import User
from .exchange import (cmdlet, exo_check_params, exo_not_found, exo_required,
                       exo_resolve, lowered, primary_smtp)
from .mailbox import (LEGACY_DN_PREFIX, ZERO_GUID, alias_of, archive_guid,
                      exchange_guid, has_move_licence, legacy_dn, on_hold,
                      stable_guid, touch, user_kind, writable, x500s)
from .orgconfig import capabilities, is_accepted, org


# -- what MRS checks -----------------------------------------------------------

def relationship_with(tenant, partner_id, capability, app_id=None):
    """The tenant's enabled, move-enabled organisation relationship whose
    DomainNames holds the partner tenant's id and whose
    MailboxMoveCapability has `capability` (and, if app_id is given,
    whose OAuthApplicationId is it), or None."""
    for rel in org(tenant).relationships:
        if rel["Enabled"] and rel["MailboxMoveEnabled"] and \
                capability in capabilities(rel) and \
                partner_id.lower() in (d.lower() for d in rel["DomainNames"]) \
                and (app_id is None or str(rel["OAuthApplicationId"] or "")
                     .lower() == app_id.lower()):
            return rel
    return None


def in_published_scope(tenant, rel, user):
    """True if the user is a member (nested groups count, as the doc
    allows) of a group named in MailboxMovePublishedScopes."""
    for scope in rel["MailboxMovePublishedScopes"]:
        key = scope.lower()
        for group in tenant.groups.values():
            names = {group.id, str(group.props.get("displayName") or ""),
                     str(group.props.get("mail") or ""),
                     str(group.props.get("mailNickname") or "")}
            if key in {n.lower() for n in names} and \
                    ("user", user.id) in tenant.transitive_members(group.id):
                return True
    return False


def setup_problem(source, user, target, target_user, app_id):
    """Licence and organisation set-up, or None."""
    if not (has_move_licence(user) or has_move_licence(target_user)):
        return ("CrossTenantMigrationWithoutLicensePermanentException",
                f"No license was found for the source recipient, "
                f"'{exchange_guid(user)}', or the target recipient, "
                f"'{exchange_guid(target_user)}'. A Cross-tenant User Data "
                f"Migration license is required to move a mailbox between "
                f"tenants.")
    rel = relationship_with(source, target.id, "RemoteOutbound", app_id)
    if rel is None or not in_published_scope(source, rel, user):
        return ("MailboxNotInCrossTenantMigrationScopeException",
                f"The mailbox '{user.id}' isn't in the migration scope of "
                f"the organization relationship with tenant '{target.id}'.")
    if relationship_with(target, source.id, "Inbound") is None:
        return ("CrossTenantMigrationNotAuthorizedPermanentException",
                f"The target organization has no organization relationship "
                f"that allows inbound mailbox moves from tenant "
                f"'{source.id}'.")
    return None


def object_problem(target, user, target_user):
    """What the source mailbox and the target mail user must hold, or
    None."""
    name = target_user.props.get("userPrincipalName") or target_user.id
    if on_hold(user):
        return ("SourceMailboxOnHoldPermanentException",
                f"The source mailbox '{user.id}' is on hold and can't be "
                f"moved to another tenant.")
    if exchange_guid(target_user) != exchange_guid(user):
        return ("MissingExchangeGuidException",
                f"The target mail user '{name}' is missing the correct "
                f"ExchangeGuid value '{exchange_guid(user)}'.")
    if archive_guid(user) != ZERO_GUID and \
            archive_guid(target_user) != archive_guid(user):
        return ("MissingArchiveGuidPermanentException",
                f"The target mail user '{name}' is missing the correct "
                f"ArchiveGuid value '{archive_guid(user)}'.")
    held = {a.lower() for a in x500s(target_user)}
    for wanted in ["X500:" + legacy_dn(user)] + x500s(user):
        if "x500:" + wanted.split(":", 1)[1].lower() not in held:
            return ("MissingX500ProxyAddressPermanentException",
                    f"The target mail user '{name}' doesn't have the proxy "
                    f"address '{wanted}' of the source mailbox.")
    for value in target_user.props.get("proxyAddresses") or []:
        if value[:5].lower() == "smtp:" and not is_accepted(target, value):
            return ("NotAcceptedDomainException",
                    "You can't use the domain because it's not an accepted "
                    "domain for your organization.")
    return None


def move_problem(source, user, target, target_user, app_id=None):
    """The first reason MRS would refuse to move `user` (source) to
    `target_user`, as (exception, text), or None.  app_id: the
    endpoint's application, which the source's relationship must name
    (Test-MigrationServerAvailability)."""
    if user_kind(user) != "UserMailbox":
        return ("RecipientNotMailboxPermanentException",
                f"The source recipient '{user.id}' isn't a mailbox.")
    if user_kind(target_user) != "MailUser":
        return ("UnsupportedRecipientTypePermanentException",
                f"The target recipient '{target_user.id}' isn't a mail "
                f"user.")
    return setup_problem(source, user, target, target_user, app_id) or \
        object_problem(target, user, target_user)


# -- the move ------------------------------------------------------------------

def routing_address(target, target_user):
    """The target's address in its initial domain, which the source mail
    user's ExternalEmailAddress takes (the doc's TargetDeliveryDomain
    match); its UPN when no proxy address is there (Entra stamps the UPN's
    name @ the initial domain on cloud users: a guess that it counts)."""
    domain = "@" + target.domain.lower()
    for value in target_user.props.get("proxyAddresses") or []:
        if value[:5].lower() == "smtp:" and value.lower().endswith(domain):
            return value[5:]
    upn = target_user.props.get("userPrincipalName") or ""
    return upn if upn.lower().endswith(domain) else None


def become_mailbox(user):
    """A mail user turned into a user mailbox (it keeps its GUIDs, its
    Name and its addresses; the external address goes)."""
    box = writable(user)
    box["ExchangeGuid"] = exchange_guid(user)
    user.exo = {"Name": user.exo["Name"]} if user.exo and \
        user.exo.get("Name") else None
    touch(user)


def become_mail_user(user, routing):
    """The moved source mailbox as a mail user pointing at its new home:
    its GUIDs stay, PreviousRecipientTypeDetails says it was a mailbox,
    it gets a new LegacyExchangeDN and keeps the old one as an X500
    (guessed, like a mailbox converted on-premises)."""
    old_dn = legacy_dn(user)
    box = writable(user)
    box["ExchangeGuid"] = exchange_guid(user, "UserMailbox")
    box["PreviousRecipientTypeDetails"] = "UserMailbox"
    box["LegacyExchangeDN"] = (
        LEGACY_DN_PREFIX + uuid.UUID(stable_guid("dn-moved:", user.id)).hex
        + "-" + alias_of(user))
    box["x500"] = x500s(user) + ["X500:" + old_dn]
    user.exo = {"kind": "MailUser",
                "Name": (user.exo or {}).get("Name") or user.id,
                "ExternalEmailAddress": f"SMTP:{routing}"}
    touch(user)


def move_mailbox(source, user, target, target_user):
    """Move the mailbox, or say why not: (exception, text) or None."""
    problem = move_problem(source, user, target, target_user)
    if problem is not None:
        return problem
    routing = routing_address(target, target_user)
    if routing is None:
        return ("TargetDeliveryDomainMismatchPermanentException",
                f"The target mail user '{target_user.id}' has no proxy "
                f"address in the target delivery domain '{target.domain}'.")
    become_mailbox(target_user)
    become_mail_user(user, routing)
    return None


# -- licences --------------------------------------------------------------

def scrub_addresses(tenant, user):
    """Licensing scrubs every SMTP proxy address outside the tenant's
    verified domains (doc); a primary that goes is replaced by the first
    address left, else by the UPN's name @ the initial domain (guessed:
    the doc only says an internal domain takes its place)."""
    kept = [a for a in user.props.get("proxyAddresses") or []
            if a[:5].lower() != "smtp:" or is_accepted(tenant, a)]
    if not any(a.startswith("SMTP:") for a in kept):
        smtp = [i for i, a in enumerate(kept) if a[:5].lower() == "smtp:"]
        if smtp:
            kept[smtp[0]] = "SMTP:" + kept[smtp[0]][5:]
        else:
            upn = user.props.get("userPrincipalName") or user.id
            kept.insert(0, f"SMTP:{upn.split('@')[0]}@{tenant.domain}")
    tenant.patch_user(user, {"proxyAddresses": kept,
                             "mail": primary_smtp(kept)})


def license_user(tenant, user, before):
    """An Exchange licence was just assigned (SKUAssigned false -> true;
    `before` is the kind the user had).  The doc: a mail user whose
    ExchangeGuid is still zero gets a new mailbox; any licensed user's
    addresses are scrubbed to the verified domains."""
    if before in ("MailUser", "UserMailbox"):
        scrub_addresses(tenant, user)
    if before == "MailUser" and exchange_guid(user) == ZERO_GUID:
        become_mailbox(user)
        writable(user)["ExchangeGuid"] = stable_guid("mbx:", user.id)
    touch(user)


# -- Test-MigrationServerAvailability ----------------------------------------

# Documented (orchestrated migration errors, EXCH-08) for a failed test.
TEST_FAILED = ("The connection to the server '{server}' could not be "
               "completed. Please make sure source mailbox is in the "
               "migration scope, scope identifier is set in Organization "
               "Relationship, and migration setup between source mailbox "
               "and target mail user is correct.")


def test_outcome(result, message="", detail=None):
    """A TestMigrationServerAvailabilityOutcome (its public properties)."""
    return {"Result": result, "Message": message, "ConnectionSettings": None,
            "SupportsCutover": False, "ErrorDetail": detail,
            "IsValid": True}


def source_of(req, endpoint, target_user):
    """(source tenant, source mailbox) the endpoint and the target mail
    user's ExternalEmailAddress name, or (tenant or None, None)."""
    source = req.cloud.find_tenant(endpoint["RemoteTenant"] or "")
    external = (target_user.exo or {}).get("ExternalEmailAddress") or ""
    if source is None or not external:
        return source, None
    owner = source.address_owner(external.split(":", 1)[-1])
    if owner is None or owner[0] != "User":
        return source, None
    return source, source.users[owner[1]]


def find_endpoint(tenant, name):
    """The tenant's migration endpoint of that name, else not found."""
    for endpoint in org(tenant).endpoints:
        if endpoint["Identity"].lower() == str(name).strip().lower():
            return endpoint
    exo_not_found(name)


@cmdlet("Test-MigrationServerAvailability")
def cmd_test_migration_server_availability(req, tenant, params):
    """-Endpoint NAME -TestMailbox ADDRESS (a mail user of this tenant):
    the move checks from the source named by the endpoint's RemoteTenant
    and the mail user's ExternalEmailAddress."""
    exo_check_params(params, {"endpoint", "testmailbox", "confirm"})
    p = lowered(params)
    exo_required(p, "Endpoint", "TestMailbox")
    endpoint = find_endpoint(tenant, p["endpoint"])
    # A recipient of this tenant (the source's address is not found here).
    target_user, _ = exo_resolve(req, tenant, p["testmailbox"], None)
    failed = TEST_FAILED.format(server=endpoint["RemoteServer"])
    if not isinstance(target_user, User) or \
            endpoint["EndpointType"] != "ExchangeRemoteMove":
        return [test_outcome("Failed", failed, "The test mailbox isn't a "
                             "mail user of this organization.")], []
    source, user = source_of(req, endpoint, target_user)
    if user is None:
        return [test_outcome("Failed", failed, "The source mailbox wasn't "
                             "found in the remote tenant.")], []
    problem = move_problem(source, user, tenant, target_user,
                           endpoint["ApplicationId"] or "")
    if problem is not None:
        return [test_outcome("Failed", failed, "%s: %s" % problem)], []
    return [test_outcome("Success")], []
