"""fakecloud's manager relationship: users/delta's manager@delta, GET
/users/{id}/manager, PUT and DELETE /users/{id}/manager/$ref (through
$batch too), Set-Contact and Set-User -Manager, and the admin helpers.

Run:  /usr/bin/python3 -m pytest tests/fakecloud/test_managers.py -q
"""

import pytest

from client import EXCHANGE_SCOPE, GRAPH_SCOPE
from fctest import fixture, uid

TENANT = "aaaaaaaa-0000-4000-8000-00000000d001"
DOMAIN = "contoso.onmicrosoft.com"
APP = "bbbbbbbb-0000-4000-8000-00000000d001"
SECRET = "s3cret"
CONTACT = "cccccccc-0000-4000-8000-00000000d001"
JSON = {"Content-Type": "application/json"}


def person(n):
    return {"id": uid(n), "displayName": f"User {n}",
            "mail": f"user{n}@contoso.com"}


@pytest.fixture
def fc(cloud):
    cloud.reset()
    cloud.seed({"tenants": [
        {"id": TENANT, "domain": DOMAIN, "exchange": True,
         "apps": [{"client_id": APP, "secrets": [SECRET]}],
         "users": [person(n) for n in range(1, 5)],
         "contacts": [{"id": CONTACT, "displayName": "Pat Contact",
                       "mail": "pat@partner.example"}]}]})
    return cloud


def call(fc, method, path, body=None, scope=GRAPH_SCOPE):
    tok = fc.access_token(TENANT, APP, SECRET, scope)
    headers = {"Authorization": "Bearer " + tok}
    if body is not None:
        headers.update(JSON)
    return fc.request(method, fc.graph_url + path, headers=headers,
                      json_body=body)


def ref(n):
    return {"@odata.id": f"https://graph.microsoft.com/v1.0/users/{uid(n)}"}


def read_delta(fc, url):
    items = {}
    while True:
        reply = call(fc, "GET", url.replace(fc.graph_url, ""))
        assert reply.status == 200, reply.body
        body = reply.json()
        for item in body["value"]:
            items[item["id"]] = item
        if "@odata.nextLink" in body:
            url = body["@odata.nextLink"]
            continue
        return items, body["@odata.deltaLink"]


def assert_error(reply, status, code):
    assert reply.status == status, reply.body
    error = reply.json()["error"]
    documented = fixture("observed/error-404-request-resourcenotfound.json")
    assert set(error) == set(documented["error"])
    assert error["code"] == code
    return error["message"]


def test_put_get_delete_manager(fc):
    reply = call(fc, "PUT", f"/v1.0/users/{uid(1)}/manager/$ref", ref(2))
    assert reply.status == 204 and not reply.body
    assert fc.manager(TENANT, uid(1)) == uid(2)
    reply = call(fc, "GET", f"/v1.0/users/{uid(1)}/manager")
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["id"] == uid(2)
    assert body["@odata.type"] == "#microsoft.graph.user"
    # A contact may be a manager too (user-post-manager.md).
    reply = call(fc, "PUT", f"/v1.0/users/{uid(1)}/manager/$ref",
                 {"@odata.id": "https://graph.microsoft.com/v1.0/contacts/"
                               + CONTACT})
    assert reply.status == 204, reply.body
    assert call(fc, "GET", f"/v1.0/users/{uid(1)}/manager").json()[
        "@odata.type"] == "#microsoft.graph.orgContact"
    reply = call(fc, "DELETE", f"/v1.0/users/{uid(1)}/manager/$ref")
    assert reply.status == 204 and not reply.body
    assert fc.manager(TENANT, uid(1)) is None
    # none left: GET and DELETE answer 404
    assert_error(call(fc, "GET", f"/v1.0/users/{uid(1)}/manager"), 404,
                 "Request_ResourceNotFound")
    assert_error(call(fc, "DELETE", f"/v1.0/users/{uid(1)}/manager/$ref"),
                 404, "Request_ResourceNotFound")


def test_put_manager_errors(fc):
    unknown = "99999999-0000-4000-8000-000000000000"
    assert "does not exist" in assert_error(
        call(fc, "PUT", f"/v1.0/users/{uid(1)}/manager/$ref",
             {"@odata.id": f"https://graph.microsoft.com/v1.0/users/"
                           f"{unknown}"}),
        404, "Request_ResourceNotFound")
    assert_error(call(fc, "PUT", f"/v1.0/users/{uid(1)}/manager/$ref",
                      {"@odata.id": "not a reference"}),
                 400, "Request_BadRequest")
    assert_error(call(fc, "PUT", f"/v1.0/users/{uid(1)}/manager/$ref",
                      {"odata.id": "x"}), 400, "BadRequest")
    assert_error(call(fc, "PUT", f"/v1.0/users/{unknown}/manager/$ref",
                      ref(2)), 404, "Request_ResourceNotFound")
    assert_error(call(fc, "PUT", f"/v1.0/users/{uid(1)}/manager/$ref",
                      ref(1)), 400, "Request_BadRequest")
    assert fc.manager(TENANT, uid(1)) is None


def test_manager_through_batch(fc):
    reply = call(fc, "POST", "/v1.0/$batch", {"requests": [
        {"id": "1", "method": "PUT", "url": f"/users/{uid(3)}/manager/$ref",
         "headers": dict(JSON), "body": ref(4)}]})
    assert reply.status == 200, reply.body
    assert reply.json()["responses"][0]["status"] == 204
    assert fc.manager(TENANT, uid(3)) == uid(4)


def test_delta_manager(fc):
    fc.set_manager(TENANT, uid(1), uid(2))
    url = "/v1.0/users/delta?$select=displayName,manager"
    items, link = read_delta(fc, url)
    assert items[uid(1)]["manager@delta"] == [
        {"@odata.type": "#microsoft.graph.user", "id": uid(2)}]
    assert "manager@delta" not in items[uid(3)]
    # Without manager in $select, no relationship is shown.
    plain, _ = read_delta(fc, "/v1.0/users/delta?$select=displayName")
    assert "manager@delta" not in plain[uid(1)]

    # A change of manager alone brings the user into the next round.
    fc.set_manager(TENANT, uid(1), uid(3))
    items, link = read_delta(fc, link)
    assert set(items) == {uid(1)}
    assert items[uid(1)]["manager@delta"] == [
        {"@odata.type": "#microsoft.graph.user", "id": uid(3)}]

    # Removed: the old reference with @removed.
    fc.set_manager(TENANT, uid(1), None)
    items, link = read_delta(fc, link)
    assert items[uid(1)]["manager@delta"] == [
        {"@odata.type": "#microsoft.graph.user", "id": uid(3),
         "@removed": {"reason": "deleted"}}]
    items, _ = read_delta(fc, link)
    assert items == {}


def test_delta_manager_shape_matches_fixture(fc):
    documented = fixture("users-delta-manager-removed.json")["value"][0]
    fc.set_manager(TENANT, uid(1), uid(2))
    items, _ = read_delta(fc, "/v1.0/users/delta?$select=manager")
    got = items[uid(1)]["manager@delta"]
    assert [set(r) for r in got] == [set(r) for r in
                                     documented["manager@delta"]]


def invoke(fc, name, params):
    tok = fc.access_token(TENANT, APP, SECRET, EXCHANGE_SCOPE)
    url = f"{fc.exchange_url}/adminapi/beta/{TENANT}/InvokeCommand"
    body = {"CmdletInput": {"CmdletName": name, "Parameters": params}}
    return fc.request("POST", url, json_body=body, headers={
        "Authorization": "Bearer " + tok, "X-ResponseFormat": "json",
        "X-AnchorMailbox": "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-"
                           f"d53741dc928c}}@{TENANT}"})


def test_set_contact_and_user_manager(fc):
    reply = invoke(fc, "Set-Contact", {"Identity": CONTACT,
                                       "Manager": uid(2)})
    assert reply.status == 200, reply.body
    assert fc.manager(TENANT, CONTACT, kind="contacts") == uid(2)
    reply = invoke(fc, "Get-Contact", {"Identity": CONTACT})
    assert reply.status == 200, reply.body
    assert reply.json()["value"][0]["Manager"] is not None
    reply = invoke(fc, "Set-Contact", {"Identity": CONTACT, "Manager": None})
    assert reply.status == 200, reply.body
    assert fc.manager(TENANT, CONTACT, kind="contacts") is None
    assert invoke(fc, "Get-Contact", {"Identity": CONTACT}).json()[
        "value"][0]["Manager"] is None

    # Set-User -Manager: the same relationship users/delta shows.
    reply = invoke(fc, "Set-User", {"Identity": uid(3), "Manager": CONTACT})
    assert reply.status == 200, reply.body
    assert fc.manager(TENANT, uid(3)) == CONTACT


def test_set_contact_unknown_manager(fc):
    reply = invoke(fc, "Set-Contact", {"Identity": CONTACT,
                                       "Manager": "nobody@nowhere"})
    assert reply.status == 404, reply.body
    message = reply.json()["error"]["details"][0]["message"]
    assert "ManagementObjectNotFoundException" in message
    assert fc.manager(TENANT, CONTACT, kind="contacts") is None
