"""Graph users: read, list, update, delete; deleted items; invitations.

GET, PATCH and DELETE /users/{id | userPrincipalName}, GET /users
($filter, $select, $top, $count, $orderby, paging),
/directory/deletedItems (list, get, restore, purge) and POST
/invitations, with the service's validation and conflict answers.
graph_request_kind() names the per-tenant counter a Graph request feeds.
"""

import re
import secrets
import time
import urllib.parse
import uuid

from .directory import is_address, text_length, user_addresses
from .faults import inject_fault
from .filters import (FilterError, FilterParser, advanced_refusal,
                      filter_candidates, filter_match, fold)
from .graph import (DEFAULT_USER_SELECT, EXTENSION_NAMES, USER_PROPERTIES,
                    advanced_params, check_params, graph_no_content, graph_ok,
                    not_found_text, object_view, parse_top, parse_user_select,
                    select_suffix)
from .wire import (Reply, b64url, bad_body, graph_error, graph_fail, iso_ms,
                   route)


USER_KEY = r"^/(v1\.0|beta)/users/([^/]+)$"
DELETED_ITEM = r"^/(v1\.0|beta)/directory/deletedItems/([^/]+)"

# PATCH /users/{id}: writable string properties and their maximum lengths
# (user.md, MICROSOFT.md; None = no limit enforced here).
USER_STRING_LIMITS = {
    "givenName": 64, "surname": 64, "displayName": 256, "jobTitle": 128,
    "department": 64, "companyName": 64, "officeLocation": 128,
    "mobilePhone": 64, "streetAddress": 1024, "city": 128, "state": 128,
    "country": 128, "postalCode": 40, "employeeId": 16,
    "employeeType": None, "faxNumber": None, "preferredLanguage": None,
    "usageLocation": None, "mail": None, "mailNickname": 64,
    "userPrincipalName": None,
}
# Read-only on update: the service answers "Property 'x' is read-only and
# cannot be set." (observed for proxyAddresses).
USER_READ_ONLY = {
    "id", "proxyAddresses", "creationType", "externalUserState",
    "externalUserStateChangeDateTime", "createdDateTime", "deletedDateTime",
    "onPremisesSyncEnabled", "onPremisesLastSyncDateTime",
    "onPremisesProvisioningErrors", "onPremisesDistinguishedName",
    "onPremisesDomainName", "onPremisesSamAccountName",
    "onPremisesUserPrincipalName", "securityIdentifier", "assignedPlans",
    "provisionedPlans", "licenseAssignmentStates", "imAddresses",
    "signInSessionsValidFromDateTime", "lastPasswordChangeDateTime",
    "isResourceAccount",
}


def graph_request_kind(method, path):
    """Which per-tenant counter (GET /admin/tenants/{tid}/stats) a Graph
    request feeds, answered or refused alike; None for none."""
    if method == "GET":
        return "reads"
    if method == "POST":
        if re.match(r"^/(v1\.0|beta)/invitations/?$", path):
            return "invitations"
        if re.match(DELETED_ITEM + r"/(microsoft\.graph\.)?restore$", path):
            return "restores"
    if method == "PATCH" and re.match(USER_KEY, path):
        return "patches"
    if method == "DELETE" and (re.match(USER_KEY, path)
                               or re.match(DELETED_ITEM + "$", path)):
        return "deletes"
    return None


def graph_user(req):
    """The live user named by the URL (id or UPN), after the replication
    and per-user fault checks; 404 like the service otherwise."""
    user = req.tenant.find_user(req.group(2))
    if user is None:
        graph_fail(req, 404, "Request_ResourceNotFound",
                   not_found_text(req.group(2)))
    fault = inject_fault(req, user)
    if fault is not None:
        raise Reply(fault)
    return user


def user_view(req, user, select, version, odata_type=None):
    """A user as GET returns it.  v1.0 documents showInAddressList as "Do
    not use in Microsoft Graph" and answers null for it (observed:
    microsoft-graph-docs#5380, msgraph-sdk-php#109); beta has the value."""
    props = user.props
    if version == "v1.0" and "showInAddressList" in select:
        props = dict(props, showInAddressList=None)
    if "deletedDateTime" in select and user.deleted_at is not None:
        props = dict(props, deletedDateTime=iso_ms(user.deleted_at)[:-5]
                     + "Z")
    return object_view(props, select, user.id, odata_type)


def user_select(req, user, version):
    """$select of the request, else the default set: v1.0 answers the
    documented default properties; beta answers every property the user
    has (beta returns far more by default)."""
    if "select" in req.params:
        return parse_user_select(req, req.params["select"])
    if version == "beta" and user is not None:
        return list(user.props)
    return DEFAULT_USER_SELECT


@route("graph", "GET", USER_KEY)
def get_user(req):
    check_params(req, {"select"})
    version = req.group(1)
    user = graph_user(req)
    context = f"{req.cloud.graph_url}/{version}/$metadata#users"
    select = user_select(req, user, version)
    if "select" in req.params:
        context += select_suffix(select)
    body = {"@odata.context": context + "/$entity"}
    body.update(user_view(req, user, select, version))
    return graph_ok(req, body)


# -- PATCH ----------------------------------------------------------------

def invalid_value(req, name):
    graph_fail(req, 400, "Request_BadRequest",
               f"Invalid value specified for property '{name}' of resource "
               f"'User'.")


def conflict_fail(req, prop, owner):
    """400 Request_BadRequest with details ObjectConflict +
    ConflictingObjects (observed: microsoft-graph-docs-contrib#8421; the
    second detail's target "User_<id>" as ADSyncTools documents it)."""
    kind, oid = owner
    text = f"Another object with the same value for property {prop} " \
           f"already exists."
    resp = graph_error(req, 400, "Request_BadRequest", text)
    error = resp.body["error"]
    error["details"] = [
        {"code": "ObjectConflict", "message": text, "target": prop},
        {"code": "ConflictingObjects", "message": text,
         "target": f"{kind}_{oid}"},
    ]
    error["innerError"] = error.pop("innerError")   # keep it last
    raise Reply(resp)


def validate_user_patch(req, user, body, version):
    """Checks a PATCH body as the service does; returns the changes to
    apply (showInAddressList dropped on v1.0)."""
    tenant = req.tenant
    known = {p.lower(): p for p in USER_PROPERTIES + ["id"]}
    changes = {}
    for raw, value in body.items():
        name = known.get(raw.lower())
        if name is None:
            graph_fail(req, 400, "Request_BadRequest",
                       f"Invalid property '{raw}'.")
        if name in USER_READ_ONLY:
            graph_fail(req, 400, "Request_BadRequest",
                       f"Property '{name}' is read-only and cannot be set.")
        if name in USER_STRING_LIMITS:
            limit = USER_STRING_LIMITS[name]
            if value is None:
                if name in ("displayName", "userPrincipalName",
                            "mailNickname"):
                    invalid_value(req, name)        # cannot be cleared
            elif not isinstance(value, str) or \
                    (limit is not None and text_length(value) > limit) or \
                    (name == "displayName" and not value.strip()):
                invalid_value(req, name)
            elif name == "mail" and not is_address(value):
                invalid_value(req, name)
            elif name == "usageLocation" and \
                    not re.fullmatch(r"[A-Za-z]{2}", value):
                invalid_value(req, name)
        elif name in ("businessPhones", "otherMails"):
            if not isinstance(value, list) or \
                    not all(isinstance(v, str) for v in value):
                invalid_value(req, name)
            if name == "businessPhones" and len(value) > 1:
                # user.md: "Only one number can be set for this property."
                invalid_value(req, name)
        elif name == "accountEnabled":
            if not isinstance(value, bool):
                invalid_value(req, name)
        elif name == "userType":
            if value not in ("Member", "Guest"):
                invalid_value(req, name)
        elif name == "showInAddressList":
            if not isinstance(value, bool):
                invalid_value(req, name)
            if version == "v1.0":
                continue          # accepted, not applied (see README)
        elif name == "onPremisesExtensionAttributes":
            if not isinstance(value, dict):
                invalid_value(req, name)
            for key, item in value.items():
                if key not in EXTENSION_NAMES:
                    graph_fail(req, 400, "Request_BadRequest",
                               f"Invalid property '{key}'.")
                if item is not None and (not isinstance(item, str)
                                         or text_length(item) > 1024):
                    invalid_value(req, name)
        changes[name] = value

    if "userPrincipalName" in changes:
        upn = changes["userPrincipalName"]
        local, _, domain = upn.rpartition("@")
        if not local or domain.lower() != tenant.domain.lower():
            resp = graph_error(req, 400, "Request_BadRequest",
                               "Property userPrincipalName is invalid.")
            error = resp.body["error"]
            error["details"] = [{"target": "userPrincipalName",
                                 "code": "InvalidValue"}]
            error["innerError"] = error.pop("innerError")
            raise Reply(resp)
        for other in tenant.users.values():
            if other.id != user.id and other.deleted != "hard" and \
                    (other.props.get("userPrincipalName") or "").lower() \
                    == upn.lower():
                conflict_fail(req, "userPrincipalName", ("User", other.id))
    if changes.get("mail"):
        owner = tenant.address_owner(changes["mail"], exclude=user.id)
        if owner is not None:
            conflict_fail(req, "proxyAddresses", owner)
    if "mail" in changes:
        # The primary SMTP address follows mail (guess: the old primary is
        # dropped, secondary addresses kept).
        old = [p for p in user.props.get("proxyAddresses") or []
               if isinstance(p, str) and not p.startswith("SMTP:")]
        new = changes["mail"]
        if new:
            old = [p for p in old if p.lower() != "smtp:" + new.lower()]
            changes["proxyAddresses"] = [f"SMTP:{new}"] + old
        elif "proxyAddresses" in user.props:
            changes["proxyAddresses"] = old
    return changes


@route("graph", "PATCH", USER_KEY)
def patch_user(req):
    version = req.group(1)
    user = graph_user(req)
    body = req.json_body()
    if not isinstance(body, dict):
        raise Reply(bad_body(req))
    changes = validate_user_patch(req, user, body, version)
    req.tenant.patch_user(user, changes)
    return graph_no_content()


@route("graph", "DELETE", USER_KEY)
def delete_user(req):
    user = graph_user(req)
    req.tenant.delete_user(user, hard=False)
    return graph_no_content()


# -- GET /users: $filter, $select, $top, $count, $orderby, paging ------------

def parse_orderby(req, advanced):
    """$orderby on displayName or userPrincipalName (default support);
    with $filter it needs the advanced query parameters."""
    text = req.params.get("orderby")
    if text is None:
        return None
    match = re.fullmatch(r"\s*(displayName|userPrincipalName)"
                         r"(?:\s+(asc|desc))?\s*", text, re.I)
    if match is None:
        graph_fail(req, 400, "Request_UnsupportedQuery",
                   "Sorting not supported for current query.")
    if "filter" in req.params and not advanced:
        graph_fail(req, 400, "Request_UnsupportedQuery",
                   "Sorting not supported for current query.")
    prop = {"displayname": "displayName",
            "userprincipalname": "userPrincipalName"}[match.group(1).lower()]
    return prop, (match.group(2) or "asc").lower() == "desc"


def list_page(req, kind, state, url_path):
    """One page of a listed collection (ids fixed at the first page):
    state = {"ids", "select", "top", "offset", "count", "version",
    "context", "odata_type"}."""
    cloud, tenant = req.cloud, req.tenant
    ids = state["ids"]
    end = state["offset"] + state["top"]
    body = {"@odata.context": state["context"]}
    if state["count"] is not None:
        body["@odata.count"] = state["count"]
    if end < len(ids):
        token = cloud.new_link(kind, tenant.id, dict(state, offset=end))
        body["@odata.nextLink"] = (f"{cloud.graph_url}/{state['version']}"
                                   f"{url_path}?$skiptoken={token}")
    value = []
    for uid in ids[state["offset"]:end]:
        user = tenant.users.get(uid)
        if user is None:
            continue
        value.append(user_view(req, user, state["select"]
                               or list(user.props), state["version"],
                               state["odata_type"]))
    body["value"] = value
    return graph_ok(req, body)


@route("graph", "GET", r"^/(v1\.0|beta)/users/?$")
def list_users(req):
    cloud, tenant, params = req.cloud, req.tenant, req.params
    version = req.group(1)
    check_params(req, {"select", "filter", "top", "count", "skiptoken",
                       "orderby"})
    if "skiptoken" in params:
        link = cloud.get_link(params["skiptoken"], "users-list", tenant.id)
        if link is None:
            graph_fail(req, 400, "Request_BadRequest",
                       "Invalid paging token.")
        return list_page(req, "users-list", link.data, "/users")
    eventual, count = advanced_params(req)
    advanced = eventual and count
    top = parse_top(req)
    select = None
    context = f"{cloud.graph_url}/{version}/$metadata#users"
    if "select" in params:
        select = parse_user_select(req, params["select"])
        context += select_suffix(select)
    elif version == "v1.0":
        select = DEFAULT_USER_SELECT
    tree = None
    if "filter" in params:
        try:
            parser = FilterParser(params["filter"])
            tree = parser.parse()
            if parser.advanced and not advanced:
                raise advanced_refusal(parser.advanced[0])
        except FilterError as exc:
            graph_fail(req, exc.status, exc.code, exc.message)
    order = parse_orderby(req, advanced)
    users = [u for u in filter_candidates(tenant, tree)
             if u.deleted is None and (tree is None or filter_match(tree, u))]
    if order is not None:
        prop, desc = order
        users.sort(key=lambda u: (fold(u.props.get(prop)) or ""),
                   reverse=desc)
    # $count=true without ConsistencyLevel is silently ignored
    # (aad-advanced-queries.md, "Error handling").
    state = {"ids": [u.id for u in users], "select": select, "top": top,
             "offset": 0, "count": len(users) if advanced else None,
             "version": version, "context": context, "odata_type": None}
    return list_page(req, "users-list", state, "/users")


# -- deleted items ----------------------------------------------------------

def deleted_user(req):
    user = req.tenant.users.get(req.group(2).lower())
    if user is None or user.deleted != "soft":
        graph_fail(req, 404, "Request_ResourceNotFound",
                   not_found_text(req.group(2)))
    return user


@route("graph", "GET", r"^/(v1\.0|beta)/directory/deletedItems/"
                       r"microsoft\.graph\.user/?$")
def list_deleted_users(req):
    cloud, tenant, params = req.cloud, req.tenant, req.params
    version = req.group(1)
    check_params(req, {"select", "top", "skiptoken", "count"})
    if "skiptoken" in params:
        link = cloud.get_link(params["skiptoken"], "deleted-list", tenant.id)
        if link is None:
            graph_fail(req, 400, "Request_BadRequest",
                       "Invalid paging token.")
        return list_page(req, "deleted-list", link.data,
                         "/directory/deletedItems/microsoft.graph.user")
    eventual, count = advanced_params(req)
    context = f"{cloud.graph_url}/{version}/$metadata#users"
    select = DEFAULT_USER_SELECT
    if "select" in params:
        select = parse_user_select(req, params["select"])
        context += select_suffix(select)
    ids = [u.id for u in tenant.users.values() if u.deleted == "soft"]
    state = {"ids": ids, "select": select, "top": parse_top(req),
             "offset": 0, "count": len(ids) if eventual and count else None,
             "version": version, "context": context, "odata_type": None}
    return list_page(req, "deleted-list", state,
                     "/directory/deletedItems/microsoft.graph.user")


@route("graph", "GET", DELETED_ITEM + "$")
def get_deleted_item(req):
    check_params(req, {"select"})
    version = req.group(1)
    user = deleted_user(req)
    select = DEFAULT_USER_SELECT
    context = f"{req.cloud.graph_url}/{version}/$metadata#directoryObjects"
    if "select" in req.params:
        select = parse_user_select(req, req.params["select"])
        context += select_suffix(select)
    body = {"@odata.context": context + "/$entity"}
    body.update(user_view(req, user, select, version,
                          "#microsoft.graph.user"))
    return graph_ok(req, body)


@route("graph", "POST", DELETED_ITEM + r"/(?:microsoft\.graph\.)?restore$")
def restore_deleted_item(req):
    """200 with the restored user (deleteditems-restore-response.json
    shape, @odata.type #microsoft.graph.user).  An address now held by a
    live object blocks the restore with ObjectConflict unless the body
    says {"autoReconcileProxyConflict": true}, which drops those
    addresses (Restore-MsolUser -AutoReconcileProxyConflicts)."""
    tenant, version = req.tenant, req.group(1)
    user = deleted_user(req)
    body = req.json_body() if req.body.strip() else None
    reconcile = isinstance(body, dict) and \
        body.get("autoReconcileProxyConflict") is True
    taken = {}
    for address in user_addresses(user.props):
        owner = tenant.address_owner(address, exclude=user.id)
        if owner is not None:
            taken[address] = owner
    if taken and not reconcile:
        conflict_fail(req, "proxyAddresses", next(iter(taken.values())))
    tenant.restore_user(user)
    if taken:
        changes = {"proxyAddresses": [
            p for p in user.props.get("proxyAddresses") or []
            if not (isinstance(p, str) and p[:5].lower() == "smtp:"
                    and p[5:].lower() in taken)]}
        if (user.props.get("mail") or "").lower() in taken:
            changes["mail"] = None
        tenant.patch_user(user, changes)
    body = {"@odata.context": f"{req.cloud.graph_url}/{version}/$metadata"
                              f"#directoryObjects/$entity"}
    body.update(user_view(req, user, DEFAULT_USER_SELECT, version,
                          "#microsoft.graph.user"))
    return graph_ok(req, body)


@route("graph", "DELETE", DELETED_ITEM + "$")
def purge_deleted_item(req):
    user = deleted_user(req)
    req.tenant.delete_user(user, hard=True)
    return graph_no_content()


# -- invitations ------------------------------------------------------------

def guest_upn(tenant, address):
    """local_domain#EXT#@tenant domain (user-properties.md); a number is
    appended when taken (guess)."""
    local, _, domain = address.partition("@")
    base = re.sub(r"[^A-Za-z0-9._'-]", "", f"{local}_{domain}") or "guest"
    def taken(upn):
        return any((u.props.get("userPrincipalName") or "").lower()
                   == upn.lower() and u.deleted != "hard"
                   for u in tenant.indexed("userPrincipalName", upn))
    candidate, n = f"{base}#EXT#@{tenant.domain}", 1
    while taken(candidate):
        candidate = f"{base}{n}#EXT#@{tenant.domain}"
        n += 1
    return candidate


def is_invited(user):
    return user.props.get("userType") == "Guest" or \
        user.props.get("creationType") == "Invitation"


@route("graph", "POST", r"^/(v1\.0|beta)/invitations/?$")
def create_invitation(req):
    cloud, tenant = req.cloud, req.tenant
    version = req.group(1)
    body = req.json_body()
    if not isinstance(body, dict):
        raise Reply(bad_body(req))
    address = body.get("invitedUserEmailAddress")
    redirect = body.get("inviteRedirectUrl")
    for name, value in (("invitedUserEmailAddress", address),
                        ("inviteRedirectUrl", redirect)):
        if value is None or value == "":
            graph_fail(req, 400, "BadRequest",
                       f"The request is missing the required property "
                       f"'{name}'.")
    if not is_address(address):
        graph_fail(req, 400, "BadRequest",
                   "The specified email address is not valid.")
    if not isinstance(redirect, str):
        graph_fail(req, 400, "BadRequest",
                   "The specified inviteRedirectUrl is not valid.")
    display = body.get("invitedUserDisplayName")
    user_type = body.get("invitedUserType") or "Guest"
    send = body.get("sendInvitationMessage", False)
    if not isinstance(user_type, str) or \
            user_type.lower() not in ("guest", "member") or \
            not isinstance(send, bool) or \
            (display is not None and not isinstance(display, str)) or \
            (display is not None and text_length(display) > 256):
        graph_fail(req, 400, "BadRequest",
                   "The invitation request has an invalid property value.")
    user_type = user_type.capitalize()

    key = address.lower()
    user = None
    # Only users the index names can hold the address (or have it as
    # their UPN); in creation order, as a scan of the tenant would meet
    # them.
    nominated = {u.id: u for u in tenant.indexed("@", key)}
    nominated.update((u.id, u) for u in tenant.indexed("userPrincipalName",
                                                          key))
    for candidate in sorted(nominated.values(), key=lambda u: u.created_seq):
        if candidate.deleted is not None:
            continue
        invited = is_invited(candidate)
        held = user_addresses(candidate.props, other_mails=invited)
        if not invited:
            held.add((candidate.props.get("userPrincipalName") or "").lower())
        if key not in held:
            continue
        if invited:
            user = candidate                    # re-invite: same user
            break
        # Observed text (public callers parse the id out of it); the
        # code is a guess.
        graph_fail(req, 400, "BadRequest",
                   f"The invited user already exists in the directory as "
                   f"object ID: {candidate.id}.")
    if user is None:
        owner = tenant.address_owner(address)
        # A contact or group holding the address: the guest is created
        # without that mail address (observed, MICROSOFT.md).
        free = owner is None
        upn = guest_upn(tenant, address)
        props = {
            "displayName": display or address,
            "mail": address if free else None,
            "otherMails": [address],
            "proxyAddresses": [f"SMTP:{address}"] if free else [],
            "userPrincipalName": upn,
            "mailNickname": upn.split("@")[0],
            "userType": user_type,
            "creationType": "Invitation",
            "externalUserState": "PendingAcceptance",
            "externalUserStateChangeDateTime": iso_ms(time.time()),
            "accountEnabled": True,
            "showInAddressList": False,       # hidden from the GAL
            "createdDateTime": iso_ms(time.time())[:-5] + "Z",
        }
        user = tenant.add_user(props)
        user.invited_at = time.monotonic()     # replication_lag_ms

    invitation_id = str(uuid.uuid4())
    ticket = urllib.parse.quote(b64url(secrets.token_bytes(24)), safe="")
    redeem = ("https://login.microsoftonline.com/redeem?rd=https%3a%2f%2f"
              "invitations.microsoft.com%2fredeem%2f%3ftenant%3d"
              f"{tenant.id}%26user%3d{invitation_id}%26ticket%3d{ticket}"
              "%26ver%3d2.0")
    state = user.props.get("externalUserState")
    info = body.get("invitedUserMessageInfo")
    if not isinstance(info, dict):
        info = {"messageLanguage": None, "customizedMessageBody": None,
                "ccRecipients": [{"emailAddress": {"name": None,
                                                   "address": None}}]}
    answer = {
        "@odata.context": f"{cloud.graph_url}/{version}/$metadata"
                          f"#invitations/$entity",
        "id": invitation_id,
        "inviteRedeemUrl": redeem,
        "invitedUserDisplayName": display,
        "invitedUserType": user_type,
        "invitedUserEmailAddress": address,
        "sendInvitationMessage": send,
        "resetRedemption": body.get("resetRedemption") is True,
        "inviteRedirectUrl": redirect,
        "status": "Completed" if state == "Accepted"
        else "PendingAcceptance",
        "invitedUserMessageInfo": info,
        "invitedUser": {"id": user.id},
    }
    resp = graph_ok(req, answer)
    resp.status = 201
    return resp
