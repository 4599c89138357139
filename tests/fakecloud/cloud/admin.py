"""The admin API (plain HTTP, JSON): used by tests to drive and inspect
the cloud.

Seed and reset, tenants, users, groups and contacts, per-tenant stats and
what Exchange lists, the request log, the knobs, TLS handshake counts,
the faults state, moving Graph to a new port, and for mailbox migration:
a user's Exchange-only data (read and set, licences included), accepted
domains, organisation relationships, migration endpoints, the
organisation config and cross-tenant moves; each tenant's cross-tenant
access settings (read, and replaced whole).  It never fails on purpose
(server.dispatch() injects no faults into it).
"""

import time

from .exchange import exo_objects
from .knobs import KNOBS
from .limits import limits_stats
from .mailbox import admin_apply, admin_changes, admin_view, data, user_kind
from .migration import license_user, move_mailbox
from .policy import policy_dump, policy_replace
from .orgconfig import (add_accepted_domain, add_endpoint, add_relationship,
                        domain_view, endpoint_view, flag, org,
                        relationship_view)
from .wire import Response, admin_fail, route


@route("admin", "GET", r"^/admin/tenants/([^/]+)/recipients$")
def admin_list_recipients(req):
    tenant = admin_tenant(req)
    return Response(200, {"value": [v for o, v in exo_objects(req, tenant)]})


def admin_tenant(req):
    tenant = req.cloud.find_tenant(req.group(1))
    if tenant is None:
        admin_fail(404, f"no tenant {req.group(1)}")
    return tenant


def admin_user(req, tenant):
    user = tenant.users.get(req.group(2).lower())
    if user is None:
        admin_fail(404, f"no user {req.group(2)}")
    return user


def admin_group(req, tenant):
    group = tenant.groups.get(req.group(2).lower())
    if group is None:
        admin_fail(404, f"no group {req.group(2)}")
    return group


def admin_object(req):
    body = req.json_body()
    if not isinstance(body, dict):
        admin_fail(400, "body must be a JSON object")
    return body


def admin_views(objects):
    """200 {"value": [...]}: the admin view of each object."""
    return Response(200, {"value": [o.admin_view() for o in objects]})


def admin_create(req, add):
    """201 with the admin view of what add(body) made of the request's
    body: 409 when add raises KeyError (the id is taken), 400 when it
    raises ValueError."""
    try:
        made = add(admin_object(req))
    except KeyError as exc:
        admin_fail(409, str(exc.args[0]))
    except ValueError as exc:
        admin_fail(400, str(exc))
    return Response(201, made.admin_view())


@route("admin", "GET", r"^/admin/health$")
def admin_health(req):
    return Response(200, {"status": "ok"})


@route("admin", "GET", r"^/admin/tls$")
def admin_tls(req):
    cloud = req.cloud
    names = ("login", "graph", "exchange")
    return Response(200, {
        "fault": cloud.tls_fault,
        "handshakes": {name: cloud.tls_handshakes[name] for name in names},
        "handshake_failures": {name: cloud.tls_failures[name]
                               for name in names}})


@route("admin", "POST", r"^/admin/reset$")
def admin_reset(req):
    req.cloud.reset()
    return Response(200, {"status": "ok"})


@route("admin", "POST", r"^/admin/seed$")
def admin_seed(req):
    try:
        ids = req.cloud.load_seed(req.json_body())
    except ValueError as exc:
        admin_fail(400, str(exc))
    return Response(200, {"tenants": ids})


@route("admin", "GET", r"^/admin/tenants$")
def admin_tenants(req):
    return Response(200, {"value": [
        {"id": t.id, "domain": t.domain, "apps": sorted(t.apps),
         "users": len(t.users), "groups": len(t.groups), "seq": t.seq}
        for t in req.cloud.tenants.values()]})


@route("admin", "GET", r"^/admin/tenants/([^/]+)/users$")
def admin_list_users(req):
    return admin_views(admin_tenant(req).users.values())


@route("admin", "POST", r"^/admin/tenants/([^/]+)/users$")
def admin_create_user(req):
    return admin_create(req, admin_tenant(req).add_user)


@route("admin", "GET", r"^/admin/tenants/([^/]+)/users/([^/]+)$")
def admin_get_user(req):
    return Response(200, admin_user(req, admin_tenant(req)).admin_view())


@route("admin", "PATCH", r"^/admin/tenants/([^/]+)/users/([^/]+)$")
def admin_patch_user(req):
    tenant = admin_tenant(req)
    user = admin_user(req, tenant)
    if user.deleted:
        admin_fail(404, f"user {user.id} is deleted")
    try:
        tenant.patch_user(user, admin_object(req))
    except ValueError as exc:
        admin_fail(400, str(exc))
    return Response(200, user.admin_view())


@route("admin", "DELETE", r"^/admin/tenants/([^/]+)/users/([^/]+)$")
def admin_delete_user(req):
    tenant = admin_tenant(req)
    user = admin_user(req, tenant)
    hard = req.params.get("hard", "").lower() in ("1", "true", "yes")
    if user.deleted == "hard" or (user.deleted == "soft" and not hard):
        admin_fail(404, f"user {user.id} is already deleted")
    tenant.delete_user(user, hard)
    return Response(204)


@route("admin", "POST", r"^/admin/tenants/([^/]+)/users/([^/]+)/restore$")
def admin_restore_user(req):
    tenant = admin_tenant(req)
    user = admin_user(req, tenant)
    if user.deleted != "soft":
        admin_fail(400, f"user {user.id} is not soft-deleted")
    tenant.restore_user(user)
    return Response(200, user.admin_view())


@route("admin", "GET", r"^/admin/tenants/([^/]+)/groups$")
def admin_list_groups(req):
    return admin_views(admin_tenant(req).groups.values())


@route("admin", "POST", r"^/admin/tenants/([^/]+)/groups$")
def admin_create_group(req):
    tenant = admin_tenant(req)
    body = admin_object(req)
    try:
        tenant.check_members([str(m).lower()
                              for m in body.get("members", [])])
        group = req.cloud.add_group(tenant, body)
    except ValueError as exc:
        admin_fail(400, str(exc))
    return Response(201, group.admin_view())


@route("admin", "GET", r"^/admin/tenants/([^/]+)/groups/([^/]+)$")
def admin_get_group(req):
    return Response(200, admin_group(req, admin_tenant(req)).admin_view())


@route("admin", "PATCH", r"^/admin/tenants/([^/]+)/groups/([^/]+)$")
def admin_patch_group(req):
    tenant = admin_tenant(req)
    group = admin_group(req, tenant)
    body = admin_object(req)
    lists = {}
    for name in ("members", "add", "remove"):
        if name in body:
            if not isinstance(body[name], list):
                admin_fail(400, f"'{name}' must be a list")
            lists[name] = [str(m).lower() for m in body[name]]
    try:
        tenant.check_members(lists.get("members", []) + lists.get("add", []))
    except ValueError as exc:
        admin_fail(400, str(exc))
    members = lists.get("members", group.members)
    members = members + [m for m in lists.get("add", [])
                         if m not in members]
    removed = set(lists.get("remove", []))
    members = [m for m in dict.fromkeys(members) if m not in removed]
    changed = {name: value for name, value in body.items()
               if name not in ("id", "members", "add", "remove")
               and (name not in group.props or group.props[name] != value)}
    if changed or members != group.members:
        seq = tenant.bump()             # what groups/delta sees change
        if members != group.members:
            group.prop_seq["members"] = seq
        for name in changed:
            group.prop_seq[name] = seq
    group.members = members
    group.props.update(changed)
    return Response(200, group.admin_view())


@route("admin", "DELETE", r"^/admin/tenants/([^/]+)/groups/([^/]+)$")
def admin_delete_group(req):
    """Delete a group: gone from every list at once; groups/delta reports
    it removed, reason "changed" for a Microsoft 365 group (restorable
    for 30 days) and "deleted" for the others (deleted for good), as
    delta-query-overview.md describes the two reasons."""
    tenant = admin_tenant(req)
    group = admin_group(req, tenant)
    unified = "Unified" in (group.props.get("groupTypes") or [])
    del tenant.groups[group.id]
    for other in tenant.groups.values():
        if group.id in other.members:
            other.members.remove(group.id)
    tenant.deleted_groups[group.id] = ("changed" if unified else "deleted",
                                       tenant.bump())
    return Response(204)


@route("admin", "GET", r"^/admin/tenants/([^/]+)/contacts$")
def admin_list_contacts(req):
    return admin_views(admin_tenant(req).contacts.values())


@route("admin", "POST", r"^/admin/tenants/([^/]+)/contacts$")
def admin_create_contact(req):
    return admin_create(req, admin_tenant(req).add_contact)


@route("admin", "DELETE", r"^/admin/tenants/([^/]+)/contacts/([^/]+)$")
def admin_delete_contact(req):
    tenant = admin_tenant(req)
    if tenant.contacts.pop(req.group(2).lower(), None) is None:
        admin_fail(404, f"no contact {req.group(2)}")
    return Response(204)


@route("admin", "GET", r"^/admin/tenants/([^/]+)/stats$")
def admin_stats(req):
    tenant = admin_tenant(req)
    stats = dict(tenant.stats)
    stats["exchange"] = dict(stats["exchange"])
    stats["exchange_in_progress"] = tenant.exo_in_progress
    stats["limits"] = limits_stats(tenant)
    return Response(200, stats)


@route("admin", "GET", r"^/admin/log$")
def admin_get_log(req):
    service = req.params.get("service")
    try:
        since = int(req.params.get("since", "0") or 0)
    except ValueError:
        admin_fail(400, "since must be an integer")
    return Response(200, {"value": [
        entry for entry in req.cloud.log
        if entry["seq"] > since and (not service
                                     or entry["service"] == service)]})


@route("admin", "DELETE", r"^/admin/log$")
def admin_clear_log(req):
    req.cloud.log.clear()
    return Response(204)


@route("admin", "GET", r"^/admin/knobs$")
def admin_get_knobs(req):
    return Response(200, dict(req.cloud.knobs))


@route("admin", "POST", r"^/admin/knobs$")
def admin_set_knobs(req):
    cloud = req.cloud
    body = admin_object(req)
    for name, value in body.items():
        knob = KNOBS.get(name)
        if knob is None:
            admin_fail(400, f"unknown knob '{name}'; known: "
                            f"{', '.join(sorted(KNOBS))}")
        if not knob.check(value):
            admin_fail(400, f"bad value for knob '{name}': {value!r} "
                            f"({knob.doc})")
    for name, value in body.items():
        cloud.knobs[name] = value
        if KNOBS[name].on_set is not None:
            KNOBS[name].on_set(cloud, value)
    return Response(200, dict(cloud.knobs))


@route("admin", "GET", r"^/admin/faults$")
def admin_faults(req):
    state = req.cloud.fault_state
    return Response(200, {
        "rules": [{k: v for k, v in rule.items()} for rule in state.rules],
        "foreign_requests": list(state.foreign),
        "foreign_url": "https://" + getattr(req.cloud, "foreign_netloc",
                                           "localhost:1"),
        "login_down_ms": max(0, int(1000 * (state.login_down_until
                                            - time.monotonic())))})


@route("admin", "POST", r"^/admin/graph/move$")
def admin_move_graph(req):
    """Graph moves to a new port, as a service does when its base URL
    changes: a new listener opens, the old one closes, and every link
    issued from now on names the new URL (links issued before keep their
    old URL, and still work on the new one: tokens and paging state are
    the cloud's).  Answers {"graph_url"}."""
    move = getattr(req.cloud, "move_graph", None)
    if move is None:
        admin_fail(409, "no listeners to move (not started by main())")
    return Response(200, {"graph_url": move()})


@route("admin", "GET", r"^/admin/tenants/([^/]+)/faults$")
def admin_tenant_faults(req):
    """Throttling counters of a tenant (all its clients and services):
    requests (Graph requests with a live token, $batch inner requests
    counted one by one), throttled (429/503 sent), early (sent before a
    Retry-After given to that client had elapsed, past the grace),
    connection_early (requests of that client that came on a connection
    after a throttled answer to it had been written there, before its
    Retry-After had passed: no grace, see "Throttling per connection" in
    limits.py)."""
    tenant = admin_tenant(req)
    state = req.cloud.fault_state
    counts = dict(state.tenant_counts(tenant.id))
    counts["grace_ms"] = req.cloud.knobs["throttle_grace_ms"]
    counts["early_examples"] = list(state.early_examples.get(tenant.id, []))
    counts["connection_early_examples"] = list(
        state.connection_examples.get(tenant.id, []))
    return Response(200, counts)


# -- mailbox migration ---------------------------------------------------------

def admin_live_user(tenant, key):
    """A live user of the tenant by id or userPrincipalName, else 404."""
    user = tenant.find_user(str(key))
    if user is None:
        admin_fail(404, f"no live user {key} in tenant {tenant.id}")
    return user


@route("admin", "GET", r"^/admin/tenants/([^/]+)/mailboxes/([^/]+)$")
def admin_get_mailbox(req):
    """A user's Exchange-only data (mailbox.admin_view)."""
    tenant = admin_tenant(req)
    return Response(200, admin_view(admin_live_user(tenant, req.group(2))))


@route("admin", "PATCH", r"^/admin/tenants/([^/]+)/mailboxes/([^/]+)$")
def admin_patch_mailbox(req):
    """Set archive, x500, the hold flags, InPlaceHolds,
    PersistedCapabilities, IsDirSynced, PreviousRecipientTypeDetails,
    SKUAssigned (true licenses: migration.license_user), WhenChangedUTC
    (last).  200 with the data."""
    tenant = admin_tenant(req)
    user = admin_live_user(tenant, req.group(2))
    try:
        changes = admin_changes(admin_object(req))
    except ValueError as exc:
        admin_fail(400, str(exc))
    kind, licensed = user_kind(user), data(user).get("SKUAssigned")
    admin_apply(user, changes)
    if changes.get("SKUAssigned") is True and not licensed:
        license_user(tenant, user, kind)
    if "WhenChangedUTC" in changes:
        user.changed_at = changes["WhenChangedUTC"]
    return Response(200, admin_view(user))


@route("admin", "POST", r"^/admin/move-mailbox$")
def admin_move_mailbox(req):
    """{"source_tenant", "source_user", "target_tenant", "target_user"}
    (tenant ids or domains, user ids or UPNs): 200 {"source", "target"}
    (their Exchange-only data after the move), or 409 {"error",
    "exception", "message"} with what MRS would have refused."""
    body = admin_object(req)
    for key in ("source_tenant", "source_user", "target_tenant",
                "target_user"):
        if not isinstance(body.get(key), str) or not body[key]:
            admin_fail(400, f"'{key}' is required")
    tenants = []
    for key in ("source_tenant", "target_tenant"):
        tenant = req.cloud.find_tenant(body[key])
        if tenant is None:
            admin_fail(404, f"no tenant {body[key]}")
        tenants.append(tenant)
    source, target = tenants
    if source is target:
        admin_fail(400, "a cross-tenant move needs two tenants")
    user = admin_live_user(source, body["source_user"])
    target_user = admin_live_user(target, body["target_user"])
    problem = move_mailbox(source, user, target, target_user)
    if problem is not None:
        return Response(409, {"error": f"{problem[0]}: {problem[1]}",
                              "exception": problem[0],
                              "message": problem[1]})
    return Response(200, {"source": admin_view(user),
                          "target": admin_view(target_user)})


def admin_org_list(req, key, view):
    """200 {"value": [...]}: the tenant's org items of that key, shown
    as Exchange lists them."""
    tenant = admin_tenant(req)
    return Response(200, {"value": [view(tenant, item)
                                    for item in getattr(org(tenant), key)]})


def admin_org_add(req, add, view):
    """201 with what add(tenant, body) made, shown as Exchange lists it;
    409 if the name is taken, 400 if the body is bad."""
    tenant = admin_tenant(req)
    try:
        made = add(tenant, admin_object(req))
    except KeyError as exc:
        admin_fail(409, str(exc.args[0]))
    except ValueError as exc:
        admin_fail(400, str(exc))
    return Response(201, view(tenant, made))


@route("admin", "GET", r"^/admin/tenants/([^/]+)/accepted-domains$")
def admin_list_accepted_domains(req):
    """The tenant's accepted domains (Get-AcceptedDomain's shape)."""
    return admin_org_list(req, "accepted", domain_view)


@route("admin", "POST", r"^/admin/tenants/([^/]+)/accepted-domains$")
def admin_add_accepted_domain(req):
    """{"DomainName", "Default"?}: one more accepted domain."""
    return admin_org_add(req, add_accepted_domain, domain_view)


@route("admin", "GET",
       r"^/admin/tenants/([^/]+)/organization-relationships$")
def admin_list_relationships(req):
    """The tenant's organisation relationships."""
    return admin_org_list(req, "relationships", relationship_view)


@route("admin", "POST",
       r"^/admin/tenants/([^/]+)/organization-relationships$")
def admin_add_relationship(req):
    """{"Name", "DomainNames", "Enabled"?, "MailboxMoveEnabled"?,
    "MailboxMoveCapability"?, "OAuthApplicationId"?,
    "MailboxMovePublishedScopes"?}: one more organisation relationship."""
    return admin_org_add(req, add_relationship, relationship_view)


@route("admin", "GET", r"^/admin/tenants/([^/]+)/migration-endpoints$")
def admin_list_endpoints(req):
    """The tenant's migration endpoints."""
    return admin_org_list(req, "endpoints", endpoint_view)


@route("admin", "POST", r"^/admin/tenants/([^/]+)/migration-endpoints$")
def admin_add_endpoint(req):
    """{"Name", "RemoteTenant", "ApplicationId", "RemoteServer"?,
    "EndpointType"?}: one more migration endpoint."""
    return admin_org_add(req, add_endpoint, endpoint_view)


@route("admin", "PATCH", r"^/admin/tenants/([^/]+)/organization-config$")
def admin_patch_org_config(req):
    """{"IsDehydrated": bool}: what Get-OrganizationConfig shows."""
    tenant = admin_tenant(req)
    body = admin_object(req)
    if set(body) - {"IsDehydrated"}:
        admin_fail(400, "only 'IsDehydrated' can be set")
    try:
        org(tenant).dehydrated = flag(body.get(
            "IsDehydrated", org(tenant).dehydrated), "IsDehydrated")
    except ValueError as exc:
        admin_fail(400, str(exc))
    return Response(200, {"IsDehydrated": org(tenant).dehydrated})


@route("admin", "GET", r"^/admin/tenants/([^/]+)/cross-tenant-access$")
def admin_get_cross_tenant_access(req):
    """The tenant's cross-tenant access settings: {"default", "partners":
    [partner + "identitySynchronization" (null if none)]}."""
    return Response(200, policy_dump(admin_tenant(req)))


@route("admin", "PUT", r"^/admin/tenants/([^/]+)/cross-tenant-access$")
def admin_put_cross_tenant_access(req):
    """{"default"?, "partners"?}: the service defaults, then these (as a
    seed's "crossTenantAccess")."""
    tenant = admin_tenant(req)
    try:
        policy_replace(tenant, admin_object(req))
    except (ValueError, TypeError, AttributeError) as exc:
        admin_fail(400, str(exc))
    return Response(200, policy_dump(tenant))
