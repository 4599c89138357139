"""fakecloud's JSON batching (POST /{v}/$batch) against json-batching.md
and the documented body in fixtures/batch-response.json.

Run:  /usr/bin/python3 -m pytest tests/fakecloud/test_batch.py -q
"""

import json

import pytest

from fctest import FIXTURES, uid

TENANT = "aaaaaaaa-0000-4000-8000-0000000ba001"
DOMAIN = "contoso.onmicrosoft.com"
APP = "bbbbbbbb-0000-4000-8000-0000000ba001"
TENANT2 = "aaaaaaaa-0000-4000-8000-0000000ba002"
APP2 = "bbbbbbbb-0000-4000-8000-0000000ba002"
SECRET = "s3cret"
JSON = {"Content-Type": "application/json"}


def person(n):
    return {"id": uid(n), "displayName": f"User {n}", "mail":
            f"user{n}@contoso.com", "jobTitle": "Engineer"}


@pytest.fixture
def fc(cloud):
    cloud.reset()
    cloud.seed({"tenants": [
        {"id": TENANT, "domain": DOMAIN,
         "apps": [{"client_id": APP, "secrets": [SECRET]}],
         "users": [person(n) for n in range(1, 31)]},
        {"id": TENANT2, "domain": "fabrikam.onmicrosoft.com",
         "apps": [{"client_id": APP2, "secrets": [SECRET]}],
         "users": [person(n) for n in range(101, 103)]}]})
    return cloud


def token(fc, tenant=TENANT, app=APP):
    return fc.access_token(tenant, app, SECRET)


def batch(fc, tok, requests, version="v1.0", raw=None):
    headers = dict(JSON)
    if tok is not None:
        headers["Authorization"] = "Bearer " + tok
    body = raw if raw is not None else \
        json.dumps({"requests": requests}).encode("utf-8")
    return fc.request("POST", f"{fc.graph_url}/{version}/$batch",
                      headers=headers, body=body)


def patch_item(rid, user, props):
    return {"id": rid, "method": "PATCH", "url": f"/users/{user}",
            "headers": dict(JSON), "body": props}


def answers(reply):
    """{id: response} of a 200 batch answer, after checking its shape."""
    assert reply.status == 200, reply.body
    body = reply.json()
    assert set(body) == {"responses"}
    out = {}
    for item in body["responses"]:
        assert {"id", "status", "headers"} <= set(item) <= \
            {"id", "status", "headers", "body"}
        assert isinstance(item["status"], int)       # a number
        assert item["id"] not in out
        out[item["id"]] = item
    return out


def assert_error(item, status, code):
    assert item["status"] == status, item
    error = item["body"]["error"]
    assert {"code", "message", "innerError"} <= set(error)
    assert error["code"] == code
    return error


def test_documented_shape(fc):
    """The fixture's request, adapted to what fakecloud serves, answers in
    the fixture's response shape."""
    path = FIXTURES / "batch-response.json"
    if not path.exists():
        pytest.fail(f"Microsoft fixture {path} not found")
    documented = json.loads(path.read_text(encoding="utf-8"))
    tok = token(fc)
    reply = batch(fc, tok, [
        {"id": "1", "method": "GET", "url": f"/users/{uid(1)}"},
        {"id": "2", "method": "GET",
         "url": "users?$select=id,displayName&$filter=city eq null"
                "&$count=true",
         "headers": {"ConsistencyLevel": "eventual"}},
        {"id": "3", "method": "DELETE", "url": f"/users/{uid(999)}"},
        {"id": "4", "method": "POST", "url": f"/users/{uid(1)}/bogus",
         "body": {}, "headers": dict(JSON)},
    ])
    assert reply.header("Content-Type").startswith("application/json")
    got = answers(reply)
    assert set(got) == {"1", "2", "3", "4"}
    doc = {r["id"]: r for r in documented["responses"]}
    assert set(got["1"]) == set(doc["1"])
    assert got["1"]["status"] == 200 and got["1"]["body"]["id"] == uid(1)
    assert got["2"]["status"] == 200
    assert got["2"]["body"]["@odata.count"] == 30
    err = assert_error(got["3"], 404, "Request_ResourceNotFound")
    assert set(err["innerError"]) == set(doc["3"]["body"]["error"][
        "innerError"])
    assert got["4"]["status"] >= 400


def test_writes_apply_and_are_counted_by_inner_kind(fc):
    tok = token(fc)
    fc.clear_log()
    reply = batch(fc, tok, [
        patch_item("a", uid(1), {"jobTitle": "Boss"}),
        patch_item("b", uid(2), {"jobTitle": "Chief"}),
        {"id": "c", "method": "DELETE", "url": f"users/{uid(3)}"},
    ])
    got = answers(reply)
    assert [got[k]["status"] for k in "abc"] == [204, 204, 204]
    assert all("body" not in got[k] for k in "abc")
    assert fc.user(TENANT, uid(1))["jobTitle"] == "Boss"
    assert fc.user(TENANT, uid(2))["jobTitle"] == "Chief"
    assert fc.user(TENANT, uid(3))["deleted"] == "soft"
    stats = fc.stats(TENANT)
    assert (stats["patches"], stats["deletes"], stats["reads"]) == (2, 1, 0)
    graph = fc.log(service="graph")
    inner = [e for e in graph if "batch" in e]
    assert sorted((e["batch"], e["method"], e["path"]) for e in inner) == [
        ("a", "PATCH", f"/v1.0/users/{uid(1)}"),
        ("b", "PATCH", f"/v1.0/users/{uid(2)}"),
        ("c", "DELETE", f"/v1.0/users/{uid(3)}")]
    assert all(e["tenant"] == TENANT for e in inner)
    outer = [e for e in graph if "batch" not in e]
    assert [(e["method"], e["path"], e["status"]) for e in outer] == [
        ("POST", "/v1.0/$batch", 200)]


def test_beta_batch_runs_inner_requests_on_beta(fc):
    tok = token(fc)
    got = answers(batch(fc, tok, [
        patch_item("1", uid(1), {"showInAddressList": False})], "beta"))
    assert got["1"]["status"] == 204
    assert fc.user(TENANT, uid(1))["showInAddressList"] is False
    got = answers(batch(fc, tok, [
        patch_item("1", uid(2), {"showInAddressList": False})]))
    assert got["1"]["status"] == 204     # v1.0 accepts, does not apply
    assert fc.user(TENANT, uid(2))["showInAddressList"] is None


def test_answers_come_in_any_order(fc):
    tok = token(fc)
    items = [patch_item(str(n), uid(n), {"department": f"D{n}"})
             for n in range(1, 21)]
    orders = set()
    for _ in range(5):
        reply = batch(fc, tok, items)
        got = answers(reply)
        assert set(got) == {str(n) for n in range(1, 21)}
        orders.add(tuple(r["id"] for r in reply.json()["responses"]))
    # Shuffled: clients must match answers by id, never by position.
    assert len(orders) > 1


def test_at_most_twenty_requests(fc):
    tok = token(fc)
    items = [patch_item(str(n), uid(n), {"department": "X"})
             for n in range(1, 22)]
    reply = batch(fc, tok, items)
    assert reply.status == 400
    assert reply.json()["error"]["code"] == "BadRequest"
    assert fc.stats(TENANT)["patches"] == 0          # nothing ran
    assert "department" not in fc.user(TENANT, uid(1))
    assert answers(batch(fc, tok, items[:20]))["20"]["status"] == 204


@pytest.mark.parametrize("requests", [
    # duplicate ids (case-insensitive)
    [patch_item("x", uid(1), {"jobTitle": "A"}),
     patch_item("X", uid(2), {"jobTitle": "B"})],
    # a body without a Content-Type header
    [{"id": "1", "method": "PATCH", "url": f"/users/{uid(1)}",
      "body": {"jobTitle": "A"}}],
    # a write without a body
    [{"id": "1", "method": "PATCH", "url": f"/users/{uid(1)}",
      "headers": dict(JSON)}],
    # an absolute url
    [{"id": "1", "method": "DELETE",
      "url": f"https://graph.microsoft.com/v1.0/users/{uid(1)}"}],
    # dependsOn an id not in the batch, and a cycle
    [{"id": "1", "method": "DELETE", "url": f"/users/{uid(1)}",
      "dependsOn": ["9"]}],
    [{"id": "1", "method": "DELETE", "url": f"/users/{uid(1)}",
      "dependsOn": ["2"]},
     {"id": "2", "method": "DELETE", "url": f"/users/{uid(2)}",
      "dependsOn": ["1"]}],
    # no requests, a missing id, an unknown method
    [],
    [{"method": "DELETE", "url": f"/users/{uid(1)}"}],
    [{"id": "1", "method": "TRACE", "url": f"/users/{uid(1)}"}],
])
def test_malformed_batch_fails_whole(fc, requests):
    tok = token(fc)
    reply = batch(fc, tok, requests)
    assert reply.status == 400, reply.body
    error = reply.json()["error"]
    assert error["code"] == "BadRequest" and error["message"]
    user = fc.user(TENANT, uid(1))
    assert user["deleted"] is None and user["jobTitle"] == "Engineer"
    stats = fc.stats(TENANT)
    assert stats["patches"] == stats["deletes"] == 0


def test_missing_content_type_text(fc):
    reply = batch(fc, token(fc), [
        {"id": "7", "method": "PATCH", "url": f"/users/{uid(1)}",
         "body": {"jobTitle": "A"}}])
    assert reply.json()["error"]["message"] == (
        "Write request id : 7 does not contain Content-Type header or "
        "body.")


def test_not_json_is_400(fc):
    reply = batch(fc, token(fc), None, raw=b"{not json")
    assert reply.status == 400
    assert reply.json()["error"]["code"] == "BadRequest"


def test_depends_on_failure_gives_424(fc):
    tok = token(fc)
    fc.clear_log()
    got = answers(batch(fc, tok, [
        {"id": "3", "method": "DELETE", "url": f"/users/{uid(3)}",
         "dependsOn": ["2"]},
        patch_item("1", uid(1), {"bogusProperty": "x"}),      # 400
        {"id": "2", "method": "PATCH", "url": f"/users/{uid(2)}",
         "headers": dict(JSON), "body": {"jobTitle": "Two"},
         "dependsOn": ["1"]},
        {"id": "4", "method": "PATCH", "url": f"/users/{uid(4)}",
         "headers": dict(JSON), "body": {"jobTitle": "Four"}},
    ]))
    assert_error(got["1"], 400, "Request_BadRequest")
    assert got["2"]["status"] == 424                  # 1 failed
    assert got["3"]["status"] == 424                  # 2 did not run
    assert got["4"]["status"] == 204                  # independent
    assert fc.user(TENANT, uid(2))["jobTitle"] == "Engineer"
    assert fc.user(TENANT, uid(3))["deleted"] is None
    assert fc.user(TENANT, uid(4))["jobTitle"] == "Four"
    # Requests that never ran are neither counted nor logged.
    assert fc.stats(TENANT)["patches"] == 2
    assert sorted(e["batch"] for e in fc.log(service="graph")
                  if "batch" in e) == ["1", "4"]


def test_depends_on_success_runs_in_order(fc):
    tok = token(fc)
    fc.clear_log()
    got = answers(batch(fc, tok, [
        {"id": "b", "method": "PATCH", "url": f"/users/{uid(1)}",
         "headers": dict(JSON), "body": {"jobTitle": "Second"},
         "dependsOn": ["a"]},
        patch_item("a", uid(1), {"jobTitle": "First"}),
    ]))
    assert got["a"]["status"] == got["b"]["status"] == 204
    assert fc.user(TENANT, uid(1))["jobTitle"] == "Second"
    assert [e["batch"] for e in fc.log(service="graph")
            if "batch" in e] == ["a", "b"]


def test_inner_requests_use_the_batch_token(fc):
    tok = token(fc)
    # No token: the batch itself is refused and nothing runs.
    reply = batch(fc, None, [patch_item("1", uid(1), {"jobTitle": "A"})])
    assert reply.status == 401
    assert reply.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert fc.user(TENANT, uid(1))["jobTitle"] == "Engineer"
    # An inner Authorization header does not change whose request it is:
    # another tenant's token inside acts on the batch token's tenant.
    other = token(fc, TENANT2, APP2)
    item = patch_item("1", uid(1), {"jobTitle": "Mine"})
    item["headers"]["Authorization"] = "Bearer " + other
    got = answers(batch(fc, tok, [item]))
    assert got["1"]["status"] == 204
    assert fc.user(TENANT, uid(1))["jobTitle"] == "Mine"
    # The other tenant's users are not reachable with this token.
    got = answers(batch(fc, tok, [
        {"id": "1", "method": "GET", "url": f"/users/{uid(101)}"}]))
    assert_error(got["1"], 404, "Request_ResourceNotFound")
    # A revoked token: the whole batch answers 401.
    fc.set_knobs(revoke_tokens=True)
    reply = batch(fc, tok, [patch_item("1", uid(1), {"jobTitle": "B"})])
    assert reply.status == 401
    assert fc.user(TENANT, uid(1))["jobTitle"] == "Mine"


def test_inner_404_replication_lag(fc):
    tok = token(fc)
    fc.set_knobs(replication_lag_ms=60000)
    reply = fc.request("POST", fc.graph_url + "/v1.0/invitations",
                       headers={"Authorization": "Bearer " + tok},
                       json_body={"invitedUserEmailAddress": "g@ext.example",
                                  "inviteRedirectUrl": "https://x.example"})
    assert reply.status == 201
    guest = reply.json()["invitedUser"]["id"]
    got = answers(batch(fc, tok, [
        patch_item("1", guest, {"jobTitle": "Guest"}),
        patch_item("2", uid(1), {"jobTitle": "Member"})]))
    assert_error(got["1"], 404, "Request_ResourceNotFound")
    assert got["2"]["status"] == 204
    fc.set_knobs(replication_lag_ms=0)
    got = answers(batch(fc, tok, [
        patch_item("1", guest, {"jobTitle": "Guest"})]))
    assert got["1"]["status"] == 204
    assert fc.user(TENANT, guest)["jobTitle"] == "Guest"


def test_inner_429_with_its_own_retry_after(fc):
    tok = token(fc)
    fc.set_knobs(batch_inner_429=2, batch_inner_retry_after=7)
    reply = batch(fc, tok, [
        patch_item(str(n), uid(n), {"jobTitle": f"T{n}"})
        for n in range(1, 5)])
    assert reply.header("Retry-After") is None   # the batch is not throttled
    got = answers(reply)
    throttled = sorted(k for k, v in got.items() if v["status"] == 429)
    assert throttled == ["1", "2"]                # the first two to run
    for k in throttled:
        error = assert_error(got[k], 429, "TooManyRequests")
        assert error["message"] == "Please retry again later."
        headers = {h.lower(): v for h, v in got[k]["headers"].items()}
        assert headers["retry-after"] == "7"
        assert fc.user(TENANT, uid(int(k)))["jobTitle"] == "Engineer"
    for k in ("3", "4"):
        assert got[k]["status"] == 204
    assert fc.knobs()["batch_inner_429"] == 0
    # Retried alone later, they go through.
    got = answers(batch(fc, tok, [
        patch_item(k, uid(int(k)), {"jobTitle": "T" + k})
        for k in throttled]))
    assert all(v["status"] == 204 for v in got.values())
    # Throttled inner requests are counted like answered ones.
    assert fc.stats(TENANT)["patches"] == 6


def test_nested_batch_refused(fc):
    tok = token(fc)
    got = answers(batch(fc, tok, [
        {"id": "1", "method": "POST", "url": "/$batch",
         "headers": dict(JSON), "body": {"requests": []}}]))
    assert got["1"]["status"] == 400

