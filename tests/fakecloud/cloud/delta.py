"""Graph users/delta: GET /v1.0/users/delta and its rounds.

A round fixes its ids at its start (every user, tombstones too, for an
initial round; since a deltaLink, the users created, deleted, restored or
with a selected property changed since it) and pages them behind
$skiptoken links; its deltaLink carries the tenant seq of its start.  The
knobs delta_page_size, delta_duplicates, delta_empty_pages and
expire_delta_tokens shape the rounds; faults.py may make one endless.
"""

import re
import urllib.parse

from .faults import endless_page
from .graph import (DEFAULT_USER_SELECT, check_params, graph_ok,
                    parse_user_select, select_suffix)
from .wire import graph_fail, route


class DeltaRound:
    """One users/delta round: ids fixed at its start, paged; its deltaLink
    carries the tenant seq of the start, so changes made while the client
    pages come (again) in the next round."""

    def __init__(self, select, filter_ids, since, seq, pages):
        self.select = select
        self.filter_ids = filter_ids
        self.since = since
        self.seq = seq
        self.pages = pages
        self.next_tokens = {}
        self.delta_token = None


FILTER_ID = re.compile(r"^\s*\(?\s*id\s+eq\s+'([^']*)'\s*\)?\s*$", re.I)


def parse_id_filter(req, text):
    """users/delta accepts only id eq '...' terms joined by or, up to 50."""
    ids = []
    for term in re.split(r"\s+or\s+", text.strip(), flags=re.I):
        match = FILTER_ID.match(term)
        if match is None:
            graph_fail(req, 400, "Request_UnsupportedQuery",
                       "Unsupported query.")
        ids.append(match.group(1).lower())
    if not ids or len(ids) > 50:
        graph_fail(req, 400, "Request_UnsupportedQuery",
                   "Unsupported query.")
    return frozenset(ids)


def prefers_minimal(req):
    prefer = ",".join(req.headers.get_all("Prefer") or [])
    return any(p.strip().lower() == "return=minimal"
               for p in prefer.split(","))


def delta_url(cloud, select, filter_ids, token_name, token):
    """A users/delta URL.  The Location of a 410 carries an empty
    $deltatoken ("same as the initial query", delta-query-overview.md);
    its $select/$filter keep what the expired link tracked."""
    query = []
    if select is not None:
        query.append("$select=" + ",".join(select))
    if filter_ids:
        terms = " or ".join(f"id eq '{i}'" for i in sorted(filter_ids))
        query.append("$filter=" + urllib.parse.quote(terms, safe="'"))
    query.append(f"{token_name}={token}")
    return f"{cloud.graph_url}/v1.0/users/delta?" + "&".join(query)


def delta_token_expired(req, link):
    cloud = req.cloud
    mode = cloud.knobs["expire_delta_tokens"]
    if mode == "gone":
        data = link.data
        if isinstance(data, tuple):            # a skiptoken: (round, page)
            select, filter_ids = data[0].select, data[0].filter_ids
        else:
            select, filter_ids = data["select"], data["filter"]
        location = delta_url(cloud, select, filter_ids, "$deltatoken", "")
        graph_fail(req, 410, "resyncRequired",
                   "The delta token is no longer valid, and the app must "
                   "reset the sync state.", {"Location": location})
    if mode == "resyncRequired":
        graph_fail(req, 410, "resyncRequired",
                   "The delta token is no longer valid, and the app must "
                   "reset the sync state.")
    sync_state_not_found(req)


def sync_state_not_found(req):
    # Code and text from errors.md ("syncStateNotFound"); status 400 per
    # MICROSOFT.md for directory objects.
    graph_fail(req, 400, "syncStateNotFound",
               "The sync state generation is not found. The delta token is "
               "expired and data must be synchronized again.")


def delta_link(req, token, kind):
    """The live link of `kind` ("users-skip" or "users-delta") behind a
    $skiptoken or $deltatoken of req's tenant; an unknown or expired one
    answers as the service does."""
    link = req.cloud.get_link(token, kind, req.tenant.id)
    if link is None:
        sync_state_not_found(req)
    if req.cloud.link_expired(link):
        delta_token_expired(req, link)
    return link


def delta_round_ids(tenant, select, filter_ids, since):
    """Ids in a round: everything (tombstones too) for an initial round;
    since a deltaLink, users created, deleted or restored after it or with
    a *selected* property changed after it."""
    out = []
    for user in tenant.users.values():
        if filter_ids is not None and user.id not in filter_ids:
            continue
        if since is None:
            out.append(user.id)
        elif (user.created_seq > since or user.restored_seq > since
              or (user.deleted and user.deleted_seq > since)
              or any(user.prop_seq.get(p, 0) > since for p in select)):
            out.append(user.id)
    return out


def delta_pages(cloud, ids):
    size = cloud.knobs["delta_page_size"]
    pages = [ids[i:i + size] for i in range(0, len(ids), size)] or [[]]
    dups = cloud.knobs["delta_duplicates"]
    if dups and ids:
        # Repeat items on a later page than their first appearance.
        earlier = [i for page in (pages[:-1] if len(pages) > 1 else pages)
                   for i in page]
        picks = cloud.rng.sample(earlier, min(dups, len(earlier)))
        if len(pages) == 1:
            pages.append(picks)
        else:
            pages[-1] = pages[-1] + picks
    return [[] for _ in range(cloud.knobs["delta_empty_pages"])] + pages


def delta_select(req, text):
    """users/delta's $select: the properties, and the `manager`
    navigation property, which delta-query-overview.md lets $select name
    ("$select also supports manager and members")."""
    names = [n.strip() for n in text.split(",")]
    manager = any(n.lower() == "manager" for n in names)
    select = parse_user_select(
        req, ",".join(n for n in names if n.lower() != "manager"))
    return select + ["manager"] if manager else select


def manager_delta(tenant, user, changed):
    """users/delta's "manager@delta" for a user whose manager is tracked:
    the manager as {"@odata.type", "id"}; a manager removed since the
    round's link, as that reference with "@removed" (the members@delta
    shape, groups delta fixtures); None when there is nothing to say."""
    if user.manager is not None:
        obj = tenant.find_directory_object(user.manager)
        kind = ("#microsoft.graph.orgContact"
                if obj is not None and obj in tenant.contacts.values()
                else "#microsoft.graph.user")
        return [{"@odata.type": kind, "id": user.manager}]
    if changed and user.manager_removed is not None:
        return [{"@odata.type": "#microsoft.graph.user",
                 "id": user.manager_removed,
                 "@removed": {"reason": "deleted"}}]
    return None


def delta_item(tenant, uid, rnd, minimal):
    user = tenant.users.get(uid)
    if user is None or user.deleted:
        reason = "changed" if user is not None and \
            user.deleted == "soft" else "deleted"
        return {"id": uid, "@removed": {"reason": reason}}
    since = rnd.since
    only_changed = (minimal and since is not None
                    and user.created_seq <= since
                    and user.restored_seq <= since)
    item = {}
    for name in rnd.select:
        if name == "manager":
            changed = (since is None
                       or user.prop_seq.get("manager", 0) > since)
            refs = (manager_delta(tenant, user,
                                  changed and since is not None)
                    if changed or not only_changed else None)
            if refs is not None:
                item["manager@delta"] = refs
            continue
        if name not in user.props:
            continue                  # never set: absent
        if only_changed and user.prop_seq.get(name, 0) <= since:
            continue
        item[name] = user.props[name]
    item["id"] = user.id
    return item


def delta_page(req, rnd, index):
    cloud, tenant = req.cloud, req.tenant
    minimal = prefers_minimal(req)
    context = f"{cloud.graph_url}/v1.0/$metadata#users"
    if "select" in req.params:       # like the fixtures: only when the URL
        context += select_suffix(rnd.select)             # carries $select
    body = {"@odata.context": context}
    if index + 1 < len(rnd.pages):
        token = rnd.next_tokens.get(index + 1)
        if token is None:
            token = cloud.new_link("users-skip", tenant.id, (rnd, index + 1))
            rnd.next_tokens[index + 1] = token
        body["@odata.nextLink"] = (f"{cloud.graph_url}/v1.0/users/delta?"
                                   f"$skiptoken={token}")
    else:
        if rnd.delta_token is None:
            rnd.delta_token = cloud.new_link(
                "users-delta", tenant.id,
                {"select": rnd.select, "filter": rnd.filter_ids,
                 "seq": rnd.seq})
        body["@odata.deltaLink"] = (f"{cloud.graph_url}/v1.0/users/delta?"
                                    f"$deltatoken={rnd.delta_token}")
    body["value"] = [delta_item(tenant, uid, rnd, minimal)
                     for uid in rnd.pages[index]]
    headers = {"Preference-Applied": "return=minimal"} if minimal else None
    return graph_ok(req, body, headers)


@route("graph", "GET", r"^/v1\.0/users/(?:microsoft\.graph\.)?delta/?$")
def users_delta(req):
    cloud, tenant, params = req.cloud, req.tenant, req.params
    check_params(req, {"select", "filter", "deltatoken", "skiptoken", "top",
                       "orderby", "expand"})
    for name in ("top", "orderby", "expand"):
        if name in params:
            # delta-query-overview.md: not supported for users.
            graph_fail(req, 400, "Request_UnsupportedQuery",
                       f"The query parameter '${name}' is not supported "
                       f"with delta queries on users.")

    if "skiptoken" in params:
        if "select" in params or "filter" in params:
            graph_fail(req, 400, "Request_UnsupportedQuery",
                       "Unsupported query.")
        endless = cloud.get_link(params["skiptoken"], "users-endless",
                                 tenant.id)
        if endless is not None:
            return endless_page(req, endless)
        link = delta_link(req, params["skiptoken"], "users-skip")
        rnd, index = link.data
        return delta_page(req, rnd, index)

    select = (delta_select(req, params["select"])
              if "select" in params else None)
    filter_ids = (parse_id_filter(req, params["filter"])
                  if "filter" in params else None)
    since = None
    token = params.get("deltatoken")
    if token == "latest":
        link_token = cloud.new_link(
            "users-delta", tenant.id,
            {"select": DEFAULT_USER_SELECT if select is None else select,
             "filter": filter_ids, "seq": tenant.seq})
        context = f"{cloud.graph_url}/v1.0/$metadata#users"
        if select is not None:
            context += select_suffix(select)
        return graph_ok(req, {
            "@odata.context": context,
            "@odata.deltaLink": (f"{cloud.graph_url}/v1.0/users/delta?"
                                 f"$deltatoken={link_token}"),
            "value": []})
    if token:
        link = delta_link(req, token, "users-delta")
        since = link.data["seq"]
        # A $select on a deltaLink changes what is tracked from now on.
        if select is None:
            select = link.data["select"]
        if filter_ids is None:
            filter_ids = link.data["filter"]
    if select is None:
        select = DEFAULT_USER_SELECT
    ids = delta_round_ids(tenant, select, filter_ids, since)
    rnd = DeltaRound(select, filter_ids, since, tenant.seq,
                     delta_pages(cloud, ids))
    return delta_page(req, rnd, 0)
