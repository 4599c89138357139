"""fakecloud models the cross-tenant access settings (galbridge issue 17).

Run:  /usr/bin/python3 -m pytest tests/fakecloud/test_policy.py -q

The policy root, the default configuration (GET, PATCH), partner
configurations (list with $select, $expand and paging, POST, GET, PATCH,
DELETE), identitySynchronization (PUT, GET, PATCH, DELETE), their shapes
against Microsoft's documented bodies (fixtures/xtap-*), the documented
errors and the guessed ones (README.md), the deny fault and the admin
API.  One real fakecloud per module (conftest.py), reset and seeded
before each test.
"""

import pytest

from fctest import fixture

SRC = "aaaaaaaa-0000-4000-8000-00000000c001"
DST = "aaaaaaaa-0000-4000-8000-00000000f001"
OTHER = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551"
APP = "bbbbbbbb-0000-4000-8000-00000000c001"
APP2 = "bbbbbbbb-0000-4000-8000-00000000f001"
SECRET = "s3cret"
BASE = "/v1.0/policies/crossTenantAccessPolicy"


def seed():
    return {"tenants": [
        {"id": SRC, "domain": "contoso.onmicrosoft.com",
         "apps": [{"client_id": APP, "secrets": [SECRET]}]},
        {"id": DST, "domain": "fabrikam.onmicrosoft.com",
         "apps": [{"client_id": APP2, "secrets": [SECRET]}],
         "crossTenantAccess": {"partners": [
             {"tenantId": OTHER,
              "automaticUserConsentSettings": {"inboundAllowed": True},
              "identitySynchronization": {
                  "displayName": "Fabrikam",
                  "userSyncInbound": {"isSyncAllowed": True}}}]}},
    ]}


@pytest.fixture
def fc(cloud):
    cloud.reset()
    cloud.seed(seed())
    return cloud


def call(fc, method, path, body=None, tenant=SRC):
    app = APP if tenant == SRC else APP2
    token = fc.access_token(tenant, app, SECRET)
    return fc.request(method, fc.graph_url + BASE + path,
                      headers={"Authorization": "Bearer " + token},
                      json_body=body)


def ok(reply, status=200):
    assert reply.status == status, reply.body
    return reply.json() if status != 204 else None


def graph_error(reply, status, code, message=None):
    assert reply.status == status, reply.body
    err = reply.json()["error"]
    documented = fixture("xtap-error-directory-objectnotfound.json")
    assert set(err) == set(documented["error"])
    assert set(err["innerError"]) == set(documented["error"]["innerError"])
    assert err["code"] == code
    if message is not None:
        assert err["message"] == message


def without_context(body):
    return {k: v for k, v in body.items() if k != "@odata.context"}


def test_policy_root(fc):
    body = ok(call(fc, "GET", ""))
    assert body["displayName"] == "CrossTenantAccessPolicy"
    assert body["allowedCloudEndpoints"] == []


def test_default_is_the_documented_service_default(fc):
    body = ok(call(fc, "GET", "/default"))
    assert body["@odata.context"].endswith(
        "/v1.0/$metadata#policies/crossTenantAccessPolicy/default/$entity")
    documented = fixture("xtap-default-get-response.json")
    for name, value in documented.items():
        assert body[name] == value, name
    # Always false on the default, and read-only (G-DEF-RES).
    assert body["automaticUserConsentSettings"] == {
        "inboundAllowed": False, "outboundAllowed": False}
    graph_error(call(fc, "PATCH", "/default", {
        "automaticUserConsentSettings": {"inboundAllowed": True}}),
        400, "Request_BadRequest")


def test_default_patch_changes_only_what_it_names(fc):
    blocked = {"usersAndGroups": {"accessType": "blocked", "targets": [
        {"target": "AllUsers", "targetType": "user"}]}}
    assert ok(call(fc, "PATCH", "/default",
                   {"b2bCollaborationInbound": blocked}), 204) is None
    body = ok(call(fc, "GET", "/default"))
    assert body["isServiceDefault"] is False
    assert body["b2bCollaborationInbound"] == blocked
    assert body["b2bCollaborationOutbound"] == \
        fixture("xtap-default-get-response.json")["b2bCollaborationOutbound"]
    # Wrongly cased keys are refused (M365DSC-6065), and bad values.
    graph_error(call(fc, "PATCH", "/default",
                     {"b2BCollaborationInbound": blocked}), 400,
                "Request_BadRequest",
                "Invalid property 'b2BCollaborationInbound'.")
    graph_error(call(fc, "PATCH", "/default", {"b2bCollaborationInbound": {
        "usersAndGroups": {"accessType": "maybe", "targets": []}}}),
        400, "Request_BadRequest")
    assert call(fc, "PATCH", "/default", None).status == 400


def test_post_partner_answers_the_documented_201(fc):
    documented = fixture("xtap-partner-post-response.json")
    request = fixture("xtap-partner-post-request.json")
    assert set(request) == {"tenantId"}
    reply = call(fc, "POST", "/partners", {"tenantId": DST.upper()})
    body = ok(reply, 201)
    assert body["@odata.context"].endswith(
        "/v1.0/$metadata#policies/crossTenantAccessPolicy/partners/$entity")
    for name, value in documented.items():
        if name in ("@odata.context", "tenantId"):
            continue
        assert body[name] == value, name
    assert body["tenantId"] == DST
    # Another one with the same tenantId: the documented conflict.
    graph_error(call(fc, "POST", "/partners", {"tenantId": DST}), 409,
                "Request_MultipleObjectsWithSameKeyValue",
                "Another object with the same value for property tenantId "
                "already exists.")
    # No GUID, or no body: 400.
    graph_error(call(fc, "POST", "/partners", {"tenantId": "contoso.com"}),
                400, "Request_BadRequest")
    graph_error(call(fc, "POST", "/partners", {}), 400,
                "Request_BadRequest")
    graph_error(call(fc, "POST", "/partners", {"tenantID": DST}), 400,
                "Request_BadRequest", "Invalid property 'tenantID'.")


def test_get_partner_shape_and_absent_partner(fc):
    documented = fixture("xtap-partner-get-response.json")
    body = ok(call(fc, "GET", "/partners/" + OTHER, tenant=DST))
    assert set(documented) <= set(body)
    assert body["tenantId"] == OTHER
    assert body["automaticUserConsentSettings"] == {
        "inboundAllowed": True, "outboundAllowed": None}
    assert body["b2bCollaborationInbound"] is None
    assert "identitySynchronization" not in body
    graph_error(call(fc, "GET", "/partners/" + DST), 404,
                "Directory_ObjectNotFound",
                "Unable to read the company information from the "
                "directory.")


def test_list_partners_select_expand_and_paging(fc):
    documented = fixture("xtap-partners-list-expand-response.json")
    body = ok(call(fc, "GET", "/partners?$select=tenantId&"
                   "$expand=identitySynchronization", tenant=DST))
    assert without_context(body) == documented
    for tid in (SRC, "11111111-2222-4333-8444-555555555555"):
        ok(call(fc, "POST", "/partners", {"tenantId": tid}, tenant=DST),
           201)
    body = ok(call(fc, "GET", "/partners?$expand=identitySynchronization",
                   tenant=DST))
    assert [p["tenantId"] for p in body["value"]] == sorted(
        [OTHER, SRC, "11111111-2222-4333-8444-555555555555"])
    without = [p for p in body["value"] if p["tenantId"] != OTHER]
    assert all(p["identitySynchronization"] is None for p in without)
    assert "@odata.nextLink" not in body
    # A page of one: the rest through @odata.nextLink.
    fc.set_knobs(policy_partners_page_size=1)
    seen, url = [], fc.graph_url + BASE + "/partners?$select=tenantId"
    token = fc.access_token(DST, APP2, SECRET)
    while url:
        page = ok(fc.request("GET", url, headers={
            "Authorization": "Bearer " + token}))
        assert len(page["value"]) == 1
        assert set(page["value"][0]) == {"tenantId"}
        seen += [p["tenantId"] for p in page["value"]]
        url = page.get("@odata.nextLink")
    assert len(seen) == 3
    graph_error(call(fc, "GET", "/partners?$expand=manager", tenant=DST),
                400, "BadRequest")


def test_patch_partner(fc):
    ok(call(fc, "POST", "/partners", {"tenantId": DST}), 201)
    assert ok(call(fc, "PATCH", "/partners/" + DST,
                   fixture("xtap-partner-patch-auto-redeem-request.json")),
              204) is None
    body = ok(call(fc, "GET", "/partners/" + DST))
    assert body["automaticUserConsentSettings"] == {
        "inboundAllowed": None, "outboundAllowed": True}
    # A complex value is replaced whole: what it leaves out is null again
    # (the guess README.md names).
    ok(call(fc, "PATCH", "/partners/" + DST, {
        "automaticUserConsentSettings": {"inboundAllowed": True}}), 204)
    body = ok(call(fc, "GET", "/partners/" + DST))
    assert body["automaticUserConsentSettings"] == {
        "inboundAllowed": True, "outboundAllowed": None}
    allowed = {"usersAndGroups": {"accessType": "allowed", "targets": [
        {"target": "AllUsers", "targetType": "user"}]}}
    ok(call(fc, "PATCH", "/partners/" + DST,
            {"b2bCollaborationOutbound": allowed}), 204)
    body = ok(call(fc, "GET", "/partners/" + DST))
    assert body["b2bCollaborationOutbound"] == allowed
    assert body["inboundTrust"] is None
    # Errors: absent partner (documented code), wrong case, read-only key.
    graph_error(call(fc, "PATCH", "/partners/" + OTHER, {
        "automaticUserConsentSettings": {"inboundAllowed": True}}), 404,
        "Directory_ObjectNotFound")
    graph_error(call(fc, "PATCH", "/partners/" + DST, {
        "AutomaticUserConsentSettings": {"inboundAllowed": True}}), 400,
        "Request_BadRequest")
    graph_error(call(fc, "PATCH", "/partners/" + DST, {"tenantId": SRC}),
                400, "Request_BadRequest")
    graph_error(call(fc, "PATCH", "/partners/" + DST, {
        "automaticUserConsentSettings": {"inboundAllowed": "yes"}}), 400,
        "Request_BadRequest")


def test_identity_synchronization(fc):
    path = "/partners/" + OTHER + "/identitySynchronization"
    body = ok(call(fc, "GET", path, tenant=DST))
    assert without_context(body) == \
        fixture("xtap-partners-list-expand-response.json")["value"][0][
            "identitySynchronization"]
    # PUT on an existing one is a 409 (§1.5).
    graph_error(call(fc, "PUT", path, fixture("xtap-sync-put-request.json"),
                     tenant=DST), 409,
                "Request_MultipleObjectsWithSameKeyValue")
    ok(call(fc, "PATCH", path, {"userSyncInbound": {"isSyncAllowed": False}},
            tenant=DST), 204)
    assert ok(call(fc, "GET", path, tenant=DST))["userSyncInbound"] == {
        "isSyncAllowed": False}
    # The partner cannot go while its sync policy is there.
    graph_error(call(fc, "DELETE", "/partners/" + OTHER, tenant=DST), 400,
                "Request_BadRequest")
    ok(call(fc, "DELETE", path, tenant=DST), 204)
    graph_error(call(fc, "GET", path, tenant=DST), 404,
                "Directory_ObjectNotFound")
    graph_error(call(fc, "PATCH", path, {"userSyncInbound": {
        "isSyncAllowed": True}}, tenant=DST), 404, "Directory_ObjectNotFound")
    ok(call(fc, "PUT", path, dict(fixture("xtap-sync-put-request.json"),
                                  displayName="Again"), tenant=DST), 204)
    assert ok(call(fc, "GET", path, tenant=DST))["displayName"] == "Again"
    graph_error(call(fc, "PUT", path, {"userSyncInbound": {
        "isSyncAllowed": "yes"}}, tenant=DST), 400, "Request_BadRequest")
    # No partner: nothing to put a sync policy on.
    graph_error(call(fc, "PUT", "/partners/" + SRC +
                     "/identitySynchronization",
                     fixture("xtap-sync-put-request.json"), tenant=DST),
                404, "Directory_ObjectNotFound")


def test_delete_partner(fc):
    ok(call(fc, "POST", "/partners", {"tenantId": DST}), 201)
    ok(call(fc, "DELETE", "/partners/" + DST), 204)
    graph_error(call(fc, "GET", "/partners/" + DST), 404,
                "Directory_ObjectNotFound")
    graph_error(call(fc, "DELETE", "/partners/" + DST), 404,
                "Directory_ObjectNotFound")


def test_deny_fault_refuses_with_the_documented_error(fc):
    fc.set_faults({"kind": "deny", "method": "PATCH",
                   "path": "crossTenantAccessPolicy", "count": 5})
    ok(call(fc, "POST", "/partners", {"tenantId": DST}), 201)
    graph_error(call(fc, "PATCH", "/partners/" + DST, {
        "automaticUserConsentSettings": {"outboundAllowed": True}}), 403,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.")
    assert fc.partner_policy(SRC, DST)["automaticUserConsentSettings"] == {
        "inboundAllowed": None, "outboundAllowed": None}
    ok(call(fc, "GET", "/partners/" + DST))     # reads still work


def test_admin_api_reads_and_replaces_the_settings(fc):
    dump = fc.cross_tenant_access(DST)
    assert dump["default"]["isServiceDefault"] is True
    [partner] = dump["partners"]
    assert partner["tenantId"] == OTHER
    assert partner["identitySynchronization"]["userSyncInbound"] == {
        "isSyncAllowed": True}
    fc.trust(SRC, DST)
    assert fc.partner_policy(DST, SRC)["automaticUserConsentSettings"] == {
        "inboundAllowed": True, "outboundAllowed": None}
    assert fc.partner_policy(DST, OTHER) is None       # replaced whole
    assert fc.partner_policy(SRC, DST)["automaticUserConsentSettings"] == {
        "inboundAllowed": None, "outboundAllowed": True}
    blocked = {"usersAndGroups": {"accessType": "blocked", "targets": [
        {"target": "AllUsers", "targetType": "user"}]}}
    fc.set_cross_tenant_access(SRC, default={
        "b2bCollaborationOutbound": blocked})
    body = ok(call(fc, "GET", "/default"))
    assert body["b2bCollaborationOutbound"] == blocked
    assert body["isServiceDefault"] is False
