"""Graph groups and org contacts: GET /groups/{id}/transitiveMembers,
GET /groups, GET /contacts and GET /contacts/{id}.

Read-only here (org contacts are Exchange's mail contacts, made by
New-MailContact or the admin API); lists take $filter, $select, $top and
$count as the service does.
"""

from .filters import FilterError, FilterParser, filter_match, unsupported
from .graph import (DEFAULT_GROUP_SELECT, DEFAULT_USER_SELECT, advanced_params,
                    check_params, graph_ok, not_found_text, object_view,
                    parse_top)
from .wire import graph_fail, route


def member_view(tenant, kind, oid, select):
    if kind == "user":
        user = tenant.users[oid]
        return object_view(user.props, DEFAULT_USER_SELECT
                           if select is None else select, oid,
                           "#microsoft.graph.user")
    group = tenant.groups[oid]
    return object_view(group.props, DEFAULT_GROUP_SELECT
                       if select is None else select, oid,
                       "#microsoft.graph.group")


@route("graph", "GET", r"^/v1\.0/groups/([^/]+)/transitiveMembers/?$")
def group_transitive_members(req):
    cloud, tenant, params = req.cloud, req.tenant, req.params
    check_params(req, {"select", "top", "skiptoken"})
    gid = req.group(1).lower()
    if "skiptoken" in params:
        link = cloud.get_link(params["skiptoken"], "members", tenant.id)
        if link is None or link.data["group"] != gid:
            graph_fail(req, 400, "Request_BadRequest",
                       "Invalid paging token.")
        state = link.data
    else:
        if gid not in tenant.groups:
            graph_fail(req, 404, "Request_ResourceNotFound",
                       not_found_text(req.group(1)))
        top = parse_top(req)
        select = None
        if "select" in params:
            select = [s.strip() for s in params["select"].split(",")
                      if s.strip() and s.strip().lower() != "id"]
        state = {"group": gid, "select": select, "top": top,
                 "offset": 0, "members": tenant.transitive_members(gid)}
    members = state["members"][state["offset"]:
                               state["offset"] + state["top"]]
    body = {"@odata.context":
            f"{cloud.graph_url}/v1.0/$metadata#directoryObjects"}
    end = state["offset"] + state["top"]
    if end < len(state["members"]):
        token = cloud.new_link("members", tenant.id,
                               dict(state, offset=end))
        body["@odata.nextLink"] = (
            f"{cloud.graph_url}/v1.0/groups/{gid}/transitiveMembers?"
            f"$skiptoken={token}")
    body["value"] = [member_view(tenant, kind, oid, state["select"])
                     for kind, oid in members]
    return graph_ok(req, body)


def org_contact_view(contact, version):
    props = contact.props
    phones = []
    for value in props.get("businessPhones") or []:
        phones.append({"type": "business", "number": value})
    if props.get("mobilePhone"):
        phones.append({"type": "mobile", "number": props["mobilePhone"]})
    if props.get("faxNumber"):
        phones.append({"type": "businessFax", "number": props["faxNumber"]})
    return {
        "id": contact.id,
        "deletedDateTime": None,
        "companyName": props.get("companyName"),
        "department": props.get("department"),
        "displayName": props.get("displayName"),
        "givenName": props.get("givenName"),
        "jobTitle": props.get("jobTitle"),
        "mail": props.get("mail"),
        "mailNickname": props.get("mailNickname"),
        "onPremisesLastSyncDateTime": None,
        "onPremisesSyncEnabled": None,
        "surname": props.get("surname"),
        "addresses": [{
            "city": props.get("city"),
            "countryOrRegion": props.get("country"),
            "officeLocation": props.get("officeLocation"),
            "postalCode": props.get("postalCode"),
            "state": props.get("state"),
            "street": props.get("streetAddress")}],
        "onPremisesProvisioningErrors": [],
        "phones": phones,
        "proxyAddresses": list(props.get("proxyAddresses") or []),
    }


class ObjectFilterParser(FilterParser):
    """$filter on org contacts and groups: eq and startswith on their
    string properties, any() on proxyAddresses, and/or/not. The address
    clauses galbridge sends are also accepted as advanced queries
    (orgcontact.md: "Specific usage of $filter ... is supported only when
    you use the ConsistencyLevel header set to eventual and $count")."""

    def __init__(self, text, resource, props):
        super().__init__(text)
        self.resource = resource
        self.props = {p.lower(): p for p in props}

    def property(self, name):
        prop = self.props.get(name.lower())
        if prop is None:
            raise unsupported(f"Property '{name.split('/')[-1]}' does not "
                              f"exist as a declared property or extension "
                              f"property.")
        return prop


ORG_CONTACT_FILTER = ["id", "displayName", "mail", "mailNickname",
                      "givenName", "surname", "companyName", "department",
                      "jobTitle", "proxyAddresses"]
GROUP_FILTER = ["id", "displayName", "mail", "mailNickname", "proxyAddresses"]


class _Filtered:
    """What a contact or group shows a filter: its addresses as the
    service derives them (an object with mail has it as its primary SMTP
    proxy address)."""

    def __init__(self, obj):
        self.id = obj.id
        self.props = dict(obj.props)
        mail = self.props.get("mail")
        if mail and not self.props.get("proxyAddresses"):
            self.props["proxyAddresses"] = [f"SMTP:{mail}"]


def filtered_objects(req, objects, resource, props):
    """The objects a $filter takes (all without one), as the users list
    reads it: a bad filter is the service's 400."""
    params = req.params
    if "filter" not in params:
        return list(objects)
    try:
        tree = ObjectFilterParser(params["filter"], resource, props).parse()
    except FilterError as exc:
        graph_fail(req, exc.status, exc.code, exc.message)
    return [o for o in objects if filter_match(tree, _Filtered(o))]


def object_list(req, kind, objects, view):
    """A contacts or groups list: $filter, $select, $top, $count (with
    ConsistencyLevel: eventual), one page."""
    version = req.group(1)
    check_params(req, {"select", "filter", "top", "count"})
    eventual, count = advanced_params(req)
    top = parse_top(req)
    found = filtered_objects(
        req, objects, "OrgContact" if kind == "contacts" else "Group",
        ORG_CONTACT_FILTER if kind == "contacts" else GROUP_FILTER)
    select = None
    if "select" in req.params:
        select = [p.strip() for p in req.params["select"].split(",")
                  if p.strip()]
    body = {"@odata.context": f"https://graph.microsoft.com/{version}/"
                              f"$metadata#{kind}"}
    if eventual and count:
        body["@odata.count"] = len(found)
    value = []
    for obj in found[:top]:
        full = view(obj, version)
        if select is not None:
            full = {k: v for k, v in full.items()
                    if k == "id" or k in select}
        value.append(full)
    body["value"] = value
    return graph_ok(req, body)


@route("graph", "GET", r"^/(v1\.0|beta)/contacts/?$")
def list_org_contacts(req):
    return object_list(req, "contacts", req.tenant.contacts.values(),
                       org_contact_view)


def group_view(group, version):
    props = group.props
    mail = props.get("mail")
    return {
        "id": group.id,
        "displayName": props.get("displayName"),
        "mail": mail,
        "mailEnabled": bool(props.get("mailEnabled", bool(mail))),
        "mailNickname": props.get("mailNickname"),
        "securityEnabled": bool(props.get("securityEnabled", False)),
        "groupTypes": list(props.get("groupTypes") or []),
        "proxyAddresses": list(props.get("proxyAddresses")
                               or ([f"SMTP:{mail}"] if mail else [])),
    }


@route("graph", "GET", r"^/(v1\.0|beta)/groups/?$")
def list_groups(req):
    return object_list(req, "groups", req.tenant.groups.values(), group_view)


@route("graph", "GET", r"^/(v1\.0|beta)/contacts/([^/]+)$")
def get_org_contact(req):
    version = req.group(1)
    contact = req.tenant.contacts.get(req.group(2).lower())
    if contact is None:
        graph_fail(req, 404, "Request_ResourceNotFound",
                   not_found_text(req.group(2)))
    body = {"@odata.context": f"https://graph.microsoft.com/{version}/"
                              f"$metadata#contacts/$entity"}
    body.update(org_contact_view(contact, version))
    return graph_ok(req, body)
