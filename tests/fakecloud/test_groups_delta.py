"""fakecloud's groups/delta answers as group-delta.md and
delta-query-groups.md document it: $select, paging behind $skiptoken, a
deltaLink that gives what changed, removed groups as @removed, $filter
by id only, members@delta only when members is asked for.

Run:  /usr/bin/python3 -m pytest tests/fakecloud/test_groups_delta.py -q
"""

import pytest

from client import GRAPH_SCOPE
from fctest import fixture, uid

TENANT = "aaaaaaaa-0000-4000-8000-00000000c001"
DOMAIN = "contoso.onmicrosoft.com"
APP = "bbbbbbbb-0000-4000-8000-00000000c001"
SECRET = "s3cret"
SELECT = ("displayName,description,mail,mailEnabled,mailNickname,"
          "securityEnabled,groupTypes,proxyAddresses")


def gid(n):
    return f"00000000-0000-4000-9000-{n:012d}"


def group(n, **props):
    g = {"id": gid(n), "displayName": f"Group {n}",
         "description": f"Group number {n}", "mail": f"group{n}@contoso.com",
         "mailEnabled": True, "securityEnabled": False,
         "mailNickname": f"group{n}", "groupTypes": []}
    g.update(props)
    return g


@pytest.fixture
def fc(cloud):
    cloud.reset()
    cloud.seed({"tenants": [{
        "id": TENANT, "domain": DOMAIN,
        "apps": [{"client_id": APP, "secrets": [SECRET]}],
        "users": [{"id": uid(1), "displayName": "User 1",
                   "mail": "user1@contoso.com"}],
        "groups": [group(1), group(2, groupTypes=["Unified"]),
                   group(3, securityEnabled=True),
                   group(4, mail=None, mailEnabled=False,
                         securityEnabled=True, mailNickname="sec4",
                         members=[uid(1)])]}]})
    return cloud


def token(fc):
    return fc.access_token(TENANT, APP, SECRET, GRAPH_SCOPE)


def get(fc, tok, url):
    if not url.startswith("https://"):
        url = fc.graph_url + url.replace(" ", "%20")
    return fc.request("GET", url, headers={"Authorization": "Bearer " + tok})


def read_round(fc, tok, url):
    pages = []
    while True:
        reply = get(fc, tok, url)
        assert reply.status == 200, reply.body
        body = reply.json()
        pages.append(body)
        assert ("@odata.nextLink" in body) != ("@odata.deltaLink" in body)
        if "@odata.nextLink" in body:
            url = body["@odata.nextLink"]
            continue
        return pages, body["@odata.deltaLink"]


def by_id(pages):
    return {i["id"]: i for p in pages for i in p["value"]}


def graph_error(reply, status, code):
    assert reply.status == status, reply.body
    error = reply.json()["error"]
    assert error["code"] == code
    return error


def test_first_round_pages_selects_and_links(fc):
    fc.set_knobs(delta_page_size=3)
    pages, delta = read_round(fc, token(fc),
                              f"/v1.0/groups/delta?$select={SELECT}")
    assert [len(p["value"]) for p in pages] == [3, 1]
    documented = fixture("groups-delta-page1.json")
    assert list(pages[0]) == list(documented)     # context, nextLink, value
    assert pages[0]["@odata.context"] == \
        f"{fc.graph_url}/v1.0/$metadata#groups({SELECT})"
    assert pages[0]["@odata.nextLink"].startswith(
        f"{fc.graph_url}/v1.0/groups/delta?$skiptoken=")
    assert delta.startswith(f"{fc.graph_url}/v1.0/groups/delta?$deltatoken=")
    got = by_id(pages)
    assert set(got) == {gid(1), gid(2), gid(3), gid(4)}
    for item in got.values():
        # what was selected, id last, and no members@delta: not asked for
        assert list(item) == SELECT.split(",") + ["id"]
    assert got[gid(2)]["groupTypes"] == ["Unified"]
    assert got[gid(3)]["securityEnabled"] is True
    assert got[gid(4)]["mailEnabled"] is False and got[gid(4)]["mail"] is None
    assert got[gid(1)]["proxyAddresses"] == ["SMTP:group1@contoso.com"]


def test_deltalink_gives_changes_and_removals(fc):
    tok = token(fc)
    _, delta = read_round(fc, tok, f"/v1.0/groups/delta?$select={SELECT}")
    assert by_id(read_round(fc, tok, delta)[0]) == {}      # nothing changed
    fc.patch_group(TENANT, gid(1), displayName="Sales (all)")
    fc.patch_group(TENANT, gid(3), visibility="Private")   # not selected
    fc.delete_group(TENANT, gid(2))                        # M365: soft
    fc.delete_group(TENANT, gid(4))                        # security: hard
    fc.create_group(TENANT, group(5))
    pages, delta2 = read_round(fc, tok, delta)
    assert pages[0]["@odata.context"] == \
        f"{fc.graph_url}/v1.0/$metadata#groups"
    got = by_id(pages)
    assert set(got) == {gid(1), gid(2), gid(4), gid(5)}
    assert got[gid(1)]["displayName"] == "Sales (all)"
    assert got[gid(2)] == {"id": gid(2), "@removed": {"reason": "changed"}}
    assert got[gid(4)] == {"id": gid(4), "@removed": {"reason": "deleted"}}
    assert got[gid(5)]["mail"] == "group5@contoso.com"
    assert by_id(read_round(fc, tok, delta2)[0]) == {}
    # A deleted group is gone from the plain list too.
    assert {g["id"] for g in fc.groups(TENANT)} == {gid(1), gid(3), gid(5)}


def test_initial_round_reports_removed_groups(fc):
    fc.delete_group(TENANT, gid(1))
    got = by_id(read_round(fc, token(fc),
                           "/v1.0/groups/delta?$select=displayName")[0])
    assert got[gid(1)] == {"id": gid(1), "@removed": {"reason": "deleted"}}
    assert got[gid(2)] == {"displayName": "Group 2", "id": gid(2)}


def test_members_only_when_asked(fc):
    tok = token(fc)
    plain = by_id(read_round(fc, tok,
                             "/v1.0/groups/delta?$select=displayName")[0])
    assert all("members@delta" not in i for i in plain.values())
    pages, _ = read_round(
        fc, tok, "/v1.0/groups/delta?$select=displayName,description"
                 "&$expand=members")
    got = by_id(pages)
    documented = fixture("groups-delta-page1.json")["value"]
    # A group with members has members@delta; one without has no key.
    assert set(got[gid(4)]) == set(documented[0])
    assert got[gid(4)]["members@delta"] == [
        {"@odata.type": "#microsoft.graph.user", "id": uid(1)}]
    assert set(got[gid(1)]) == set(documented[1])


def test_default_properties_without_select(fc):
    pages, _ = read_round(fc, token(fc), "/v1.0/groups/delta")
    item = by_id(pages)[gid(1)]
    assert pages[0]["@odata.context"] == \
        f"{fc.graph_url}/v1.0/$metadata#groups"
    assert "displayName" in item and "mail" in item
    assert "proxyAddresses" not in item


def test_filter_by_id_only(fc):
    tok = token(fc)
    pages, _ = read_round(
        fc, tok, f"/v1.0/groups/delta?$select=displayName"
                 f"&$filter=id eq '{gid(2)}' or id eq '{gid(3)}'")
    assert set(by_id(pages)) == {gid(2), gid(3)}
    graph_error(get(fc, tok, "/v1.0/groups/delta?$filter=mailEnabled eq "
                             "true"),
                400, "Request_UnsupportedQuery")
    graph_error(get(fc, tok, "/v1.0/groups/delta?$filter=startswith("
                             "displayName,'G')"),
                400, "Request_UnsupportedQuery")


def test_bad_queries_answer_as_graph(fc):
    tok = token(fc)
    error = graph_error(get(fc, tok, "/v1.0/groups/delta?$select=nope"),
                        400, "BadRequest")
    assert "'nope'" in error["message"] and "microsoft.graph.group" in \
        error["message"]
    # A user property is no group property.
    graph_error(get(fc, tok, "/v1.0/groups/delta?$select=givenName"),
                400, "BadRequest")
    graph_error(get(fc, tok, "/v1.0/groups/delta?$top=2"), 400,
                "Request_UnsupportedQuery")
    graph_error(get(fc, tok, "/v1.0/groups/delta?$expand=owners"), 400,
                "Request_UnsupportedQuery")
    graph_error(get(fc, tok, "/v1.0/groups/delta?$deltatoken=bogus"), 400,
                "syncStateNotFound")
    graph_error(get(fc, tok, "/v1.0/groups/delta?$skiptoken=bogus"), 400,
                "syncStateNotFound")


def test_users_and_groups_links_do_not_mix(fc):
    tok = token(fc)
    _, users_delta = read_round(fc, tok, "/v1.0/users/delta?$select=mail")
    token_part = users_delta.split("$deltatoken=")[1]
    graph_error(get(fc, tok, f"/v1.0/groups/delta?$deltatoken={token_part}"),
                400, "syncStateNotFound")
    _, groups_delta = read_round(fc, tok, "/v1.0/groups/delta?$select=mail")
    token_part = groups_delta.split("$deltatoken=")[1]
    graph_error(get(fc, tok, f"/v1.0/users/delta?$deltatoken={token_part}"),
                400, "syncStateNotFound")


def test_expired_token_is_a_resync(fc):
    tok = token(fc)
    _, delta = read_round(fc, tok, "/v1.0/groups/delta?$select=mail")
    fc.set_knobs(expire_delta_tokens="gone")
    reply = get(fc, tok, delta)
    graph_error(reply, 410, "resyncRequired")
    assert reply.header("Location") == \
        f"{fc.graph_url}/v1.0/groups/delta?$deltatoken="
