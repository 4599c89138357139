"""Graph groups/delta: GET /v1.0/groups/delta and its rounds.

As users/delta (delta.py), whose helpers it shares: a round fixes its ids
at its start (every group and every tombstone for an initial round; since
a deltaLink, the groups created, deleted or with a *selected* property
changed since it) and pages them behind $skiptoken links; its deltaLink
carries the tenant seq of its start.  group-delta.md: $select of group
properties, $filter only by id (up to 50 "id eq" terms), $expand only
members; a removed group comes as {"id", "@removed": {"reason"}}, reason
"changed" for a Microsoft 365 group (restorable) and "deleted" for the
others.  members@delta comes only when members is selected or expanded
(delta-query-groups.md), and only on groups that have members: here it
always lists every member (the service may send them in slices over
several pages, or only the changes; a client merges either way).
"""

from .delta import DeltaRound, delta_pages, delta_token_expired, \
    parse_id_filter, sync_state_not_found
from .graph import DEFAULT_GROUP_SELECT, check_params, graph_ok, \
    parse_select, select_suffix
from .objects import group_view
from .wire import graph_fail, route


# Properties of microsoft.graph.group (v1.0) groups/delta may $select;
# anything else is a 400, as the service answers for an unknown property.
GROUP_PROPERTIES = [
    "allowExternalSenders", "assignedLabels", "assignedLicenses",
    "autoSubscribeNewMembers", "classification", "createdDateTime",
    "deletedDateTime", "description", "displayName", "expirationDateTime",
    "groupTypes", "hasMembersWithLicenseErrors", "isAssignableToRole",
    "licenseProcessingState", "mail", "mailEnabled", "mailNickname",
    "membershipRule", "membershipRuleProcessingState",
    "onPremisesDomainName", "onPremisesLastSyncDateTime",
    "onPremisesNetBiosName", "onPremisesProvisioningErrors",
    "onPremisesSamAccountName", "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled", "preferredDataLocation", "preferredLanguage",
    "proxyAddresses", "renewedDateTime", "securityEnabled",
    "securityIdentifier", "theme", "visibility", "members",
]


class GroupRound(DeltaRound):
    """A groups/delta round: a users/delta round's paging, and whether
    members@delta was asked for."""

    def __init__(self, select, members, filter_ids, since, seq, pages):
        super().__init__(select, filter_ids, since, seq, pages)
        self.members = members


def parse_group_select(req, text):
    """$select -> (canonical names without id and members, members?)."""
    names = parse_select(req, text, GROUP_PROPERTIES, "group")
    return [n for n in names if n != "members"], "members" in names


def group_round_ids(tenant, select, members, filter_ids, since):
    out = []
    for gid, group in tenant.groups.items():
        if filter_ids is not None and gid not in filter_ids:
            continue
        if since is None or group.created_seq > since or any(
                group.prop_seq.get(p, 0) > since
                for p in select + (["members"] if members else [])):
            out.append(gid)
    for gid, (_, seq) in tenant.deleted_groups.items():
        if filter_ids is not None and gid not in filter_ids:
            continue
        if since is None or seq > since:
            out.append(gid)
    return out


def group_item(tenant, gid, rnd):
    group = tenant.groups.get(gid)
    if group is None:
        reason = tenant.deleted_groups.get(gid, ("deleted", 0))[0]
        return {"id": gid, "@removed": {"reason": reason}}
    full = group_view(group, "v1.0")
    full["description"] = group.props.get("description")
    item = {}
    for name in rnd.select:
        item[name] = full.get(name, group.props.get(name))
    item["id"] = gid
    if rnd.members and group.members:
        item["members@delta"] = [
            {"@odata.type": "#microsoft.graph.group"
             if m in tenant.groups else "#microsoft.graph.user", "id": m}
            for m in group.members]
    return item


def group_page(req, rnd, index):
    cloud, tenant = req.cloud, req.tenant
    context = f"{cloud.graph_url}/v1.0/$metadata#groups"
    if "select" in req.params:
        context += select_suffix(rnd.select)
    body = {"@odata.context": context}
    base = f"{cloud.graph_url}/v1.0/groups/delta?"
    if index + 1 < len(rnd.pages):
        token = rnd.next_tokens.get(index + 1)
        if token is None:
            token = cloud.new_link("groups-skip", tenant.id, (rnd, index + 1))
            rnd.next_tokens[index + 1] = token
        body["@odata.nextLink"] = f"{base}$skiptoken={token}"
    else:
        if rnd.delta_token is None:
            rnd.delta_token = cloud.new_link(
                "groups-delta", tenant.id,
                {"select": rnd.select, "members": rnd.members,
                 "filter": rnd.filter_ids, "seq": rnd.seq})
        body["@odata.deltaLink"] = f"{base}$deltatoken={rnd.delta_token}"
    body["value"] = [group_item(tenant, gid, rnd)
                     for gid in rnd.pages[index]]
    return graph_ok(req, body)


def group_link(req, token, kind):
    link = req.cloud.get_link(token, kind, req.tenant.id)
    if link is None:
        sync_state_not_found(req)
    if req.cloud.link_expired(link):
        if req.cloud.knobs["expire_delta_tokens"] == "gone":
            # The 410's Location: the initial query again, on groups.
            graph_fail(req, 410, "resyncRequired",
                       "The delta token is no longer valid, and the app "
                       "must reset the sync state.",
                       {"Location": f"{req.cloud.graph_url}/v1.0/groups/"
                                    f"delta?$deltatoken="})
        delta_token_expired(req, link)
    return link


@route("graph", "GET", r"^/v1\.0/groups/(?:microsoft\.graph\.)?delta/?$")
def groups_delta(req):
    cloud, tenant, params = req.cloud, req.tenant, req.params
    check_params(req, {"select", "filter", "deltatoken", "skiptoken", "top",
                       "orderby", "expand"})
    for name in ("top", "orderby"):
        if name in params:
            # delta-query-overview.md: not supported on groups delta.
            graph_fail(req, 400, "Request_UnsupportedQuery",
                       f"The query parameter '${name}' is not supported "
                       f"with delta queries on groups.")
    expand = params.get("expand")
    if expand is not None and expand.strip().lower() != "members":
        # group-delta.md: $expand is supported only for members.
        graph_fail(req, 400, "Request_UnsupportedQuery",
                   "Unsupported query.")

    if "skiptoken" in params:
        if "select" in params or "filter" in params:
            graph_fail(req, 400, "Request_UnsupportedQuery",
                       "Unsupported query.")
        rnd, index = group_link(req, params["skiptoken"], "groups-skip").data
        return group_page(req, rnd, index)

    select, members = (parse_group_select(req, params["select"])
                       if "select" in params else (None, False))
    members = members or expand is not None
    filter_ids = (parse_id_filter(req, params["filter"])
                  if "filter" in params else None)
    since = None
    token = params.get("deltatoken")
    if token:
        link = group_link(req, token, "groups-delta")
        since = link.data["seq"]
        if select is None:
            select, members = link.data["select"], link.data["members"]
        if filter_ids is None:
            filter_ids = link.data["filter"]
    if select is None:
        select = list(DEFAULT_GROUP_SELECT)
    ids = group_round_ids(tenant, select, members, filter_ids, since)
    rnd = GroupRound(select, members, filter_ids, since, tenant.seq,
                     delta_pages(cloud, ids))
    return group_page(req, rnd, 0)
