"""fakecloud's Graph write, invitation and resource-unit limits
(throttling-limits.md): token buckets (or, with limit_model "window",
sliding windows) per (tenant, app) and per tenant, another application's
share of the tenant's limit,
429 TooManyRequests in the documented shape with Retry-After,
x-ms-throttle-limit-percentage past 80 %, x-ms-resource-unit and the
documented request costs, the resource-unit quota by tenant size, $batch
inner requests counted one by one, stats per app.

Run:  /usr/bin/python3 -m pytest tests/fakecloud/test_limits.py -q
"""

import json
import time

import pytest

import fakecloud
from client import FakeCloudError, wait_for
from fctest import assert_throttled, uid

TENANT = "aaaaaaaa-0000-4000-8000-0000000b1001"
APP = "bbbbbbbb-0000-4000-8000-0000000b1001"
APP_B = "bbbbbbbb-0000-4000-8000-0000000b1002"
TENANT2 = "aaaaaaaa-0000-4000-8000-0000000b2001"
APP2 = "bbbbbbbb-0000-4000-8000-0000000b2001"
SECRET = "s3cret"
JSON = {"Content-Type": "application/json"}
REDIRECT = "https://myapp.contoso.com"
GROUP = "cccccccc-0000-4000-8000-0000000b1001"


def person(n):
    return {"id": uid(n), "displayName": f"User {n}",
            "mail": f"user{n}@contoso.com"}


@pytest.fixture
def fc(cloud):
    cloud.reset()
    cloud.seed({"tenants": [
        {"id": TENANT, "domain": "contoso.onmicrosoft.com",
         "apps": [{"client_id": APP, "secrets": [SECRET]},
                  {"client_id": APP_B, "secrets": [SECRET]}],
         "users": [person(n) for n in range(1, 31)],
         "groups": [{"id": GROUP, "members": [uid(1), uid(2)]}]},
        {"id": TENANT2, "domain": "fabrikam.onmicrosoft.com",
         "apps": [{"client_id": APP2, "secrets": [SECRET]}],
         "users": [person(n) for n in range(101, 106)]}]})
    return cloud


def token(fc, tenant=TENANT, app=APP):
    return fc.access_token(tenant, app, SECRET)


def call(fc, tok, method, path, body=None):
    headers = {"Authorization": "Bearer " + tok}
    data = None
    if body is not None:
        headers.update(JSON)
        data = json.dumps(body).encode("utf-8")
    return fc.request(method, fc.graph_url + path, headers=headers,
                      body=data)


def patch(fc, tok, n, title="Engineer"):
    return call(fc, tok, "PATCH", f"/v1.0/users/{uid(n)}",
                {"jobTitle": title})


def invite(fc, tok, address):
    return call(fc, tok, "POST", "/v1.0/invitations",
                {"invitedUserEmailAddress": address,
                 "inviteRedirectUrl": REDIRECT})


def limits(fc, tenant=TENANT):
    return fc.stats(tenant)["limits"]


def test_app_write_limit(fc):
    fc.set_knobs(enforce_limits=True, limit_app_writes=5)
    tok = token(fc)
    started = time.monotonic()
    for n in range(1, 6):
        assert patch(fc, tok, n).status == 204
    elapsed = time.monotonic() - started
    reply = patch(fc, tok, 6)
    assert_throttled(reply, 150)
    assert reply.header("x-ms-throttle-scope") == \
        f"Tenant_Application/Write/{APP}/{TENANT}"
    assert reply.header("x-ms-throttle-information") == "WriteLimitExceeded"
    # The refused write did nothing; reads are not write-limited.
    assert "jobTitle" not in fc.user(TENANT, uid(6))
    assert call(fc, tok, "GET", f"/v1.0/users/{uid(6)}").status == 200
    # Another app of the tenant has its own per-app window.
    assert patch(fc, token(fc, app=APP_B), 7).status == 204
    stats = limits(fc)
    assert stats[APP]["writes"] == 5
    assert stats[APP]["throttled"] == 1
    assert stats[APP_B] == {"writes": 1, "throttled": 0,
                            "peak_writes_per_second": 1, "units": 1,
                            "units_throttled": 0}
    peak = stats[APP]["peak_writes_per_second"]
    assert 1 <= peak <= 5
    if elapsed < 1.0:          # five writes straddle at most one second
        assert peak >= 3


def test_tenant_write_limit_spans_apps(fc):
    fc.set_knobs(enforce_limits=True, limit_tenant_writes=4)
    tok_a, tok_b = token(fc), token(fc, app=APP_B)
    for n in (1, 2):
        assert patch(fc, tok_a, n).status == 204
        assert patch(fc, tok_b, n + 10).status == 204
    reply = patch(fc, tok_a, 3)
    assert_throttled(reply, 300)
    assert reply.header("x-ms-throttle-scope") == \
        f"Tenant/Write/{APP}/{TENANT}"
    assert_throttled(patch(fc, tok_b, 13), 300)
    # Another tenant is counted apart.
    assert patch(fc, token(fc, TENANT2, APP2), 101).status == 204


def test_limit_percentage_header_past_80_percent(fc):
    fc.set_knobs(enforce_limits=True, limit_app_writes=10)
    tok = token(fc)
    for n in range(1, 9):
        reply = patch(fc, tok, n)
        assert reply.status == 204
        assert reply.header("x-ms-throttle-limit-percentage") is None, n
    reply = patch(fc, tok, 9)
    assert reply.status == 204
    assert reply.header("x-ms-throttle-limit-percentage") == "0.90"
    # Reads of that app carry it too; another app of the tenant does not.
    reply = call(fc, tok, "GET", f"/v1.0/users/{uid(1)}")
    assert reply.header("x-ms-throttle-limit-percentage") == "0.90"
    reply = call(fc, token(fc, app=APP_B), "GET", f"/v1.0/users/{uid(1)}")
    assert reply.header("x-ms-throttle-limit-percentage") is None


def test_windows_slide_with_time_factor(fc):
    # 150 s / 100 = 1.5 s window.
    fc.set_knobs(enforce_limits=True, limit_app_writes=3, time_factor=100)
    tok = token(fc)
    for n in (1, 2, 3):
        assert patch(fc, tok, n).status == 204
    reply = patch(fc, tok, 4)
    assert_throttled(reply, 2)
    # Once the window has slid past the first writes, writes go again.
    wait_for(lambda: patch(fc, tok, 4).status == 204, timeout=30)
    assert fc.user(TENANT, uid(4))["jobTitle"] == "Engineer"


def test_recorded_while_off(fc):
    fc.set_knobs(limit_app_writes=3)
    tok = token(fc)
    for n in range(1, 6):
        reply = patch(fc, tok, n)
        assert reply.status == 204
        assert reply.header("x-ms-throttle-limit-percentage") is None
    assert limits(fc)[APP]["writes"] == 5
    # The windows kept counting: switching on refuses the next one.
    fc.set_knobs(enforce_limits=True)
    assert_throttled(patch(fc, tok, 6), 150)


def test_invitation_limit_under_enforce_limits(fc):
    fc.set_knobs(enforce_limits=True, limit_invitations=3)
    tok = token(fc)
    for n in range(3):
        assert invite(fc, tok, f"g{n}@partner.example").status == 201
    reply = invite(fc, tok, "one-more@partner.example")
    assert_throttled(reply, 5)
    assert not any(u.get("mail") == "one-more@partner.example"
                   for u in fc.users(TENANT))
    # Invitations are writes too; other writes still have room.
    assert patch(fc, tok, 1).status == 204
    stats = limits(fc)[APP]
    assert stats == {"writes": 4, "throttled": 1,
                     "peak_writes_per_second":
                     stats["peak_writes_per_second"],
                     "units": 4, "units_throttled": 0}


def test_batch_inner_writes_count_one_by_one(fc):
    fc.set_knobs(enforce_limits=True, limit_app_writes=3)
    tok = token(fc)
    requests = [{"id": str(n), "method": "PATCH", "url": f"/users/{uid(n)}",
                 "headers": dict(JSON), "body": {"jobTitle": "Batched"}}
                for n in range(1, 6)]
    reply = fc.request("POST", f"{fc.graph_url}/v1.0/$batch",
                       headers={"Authorization": "Bearer " + tok, **JSON},
                       body=json.dumps({"requests": requests}).encode())
    assert reply.status == 200, reply.body
    statuses = sorted(item["status"] for item in reply.json()["responses"])
    assert statuses == [204, 204, 204, 429, 429]
    for item in reply.json()["responses"]:
        if item["status"] == 429:
            assert item["body"]["error"]["code"] == "TooManyRequests"
            assert int(item["headers"]["Retry-After"]) >= 1
    # The batch answer itself tells the app it is at its limit.
    assert reply.header("x-ms-throttle-limit-percentage") == "1.00"
    stats = limits(fc)[APP]
    assert (stats["writes"], stats["throttled"]) == (3, 2)
    assert sum(u.get("jobTitle") == "Batched"
               for u in fc.users(TENANT)) == 3


def test_bucket_refills_at_the_documented_rate(fc):
    """The documented model: a full bucket spends at once, then a write
    goes again once the bucket refilled one (limit / period: 3 per 1.5 s,
    a write each 0.5 s), not once the period has passed."""
    fc.set_knobs(enforce_limits=True, limit_app_writes=3, time_factor=100)
    tok = token(fc)
    for n in (1, 2, 3):
        assert patch(fc, tok, n).status == 204
    reply = patch(fc, tok, 4)
    assert_throttled(reply, 1)
    time.sleep(0.55)
    assert patch(fc, tok, 4).status == 204
    assert patch(fc, tok, 5).status == 429      # one refilled, one spent


def test_window_model(fc):
    """limit_model window: the period's whole limit, then nothing until
    the oldest write has left the window (Retry-After most of it)."""
    fc.set_knobs(enforce_limits=True, limit_app_writes=3, time_factor=10,
                 limit_model="window")
    tok = token(fc)
    for n in (1, 2, 3):
        assert patch(fc, tok, n).status == 204
    reply = patch(fc, tok, 4)
    assert_throttled(reply, 15)
    assert int(reply.header("Retry-After")) >= 14
    time.sleep(0.55)
    assert patch(fc, tok, 4).status == 429      # a bucket would have room


def test_other_app_share_of_the_tenant_limit(fc):
    """limit_other_app_share: another application spends that share of
    the tenant-wide write limit; the apps of the seed find the rest, and
    the percentage header counts the other application's share too."""
    fc.set_knobs(enforce_limits=True, limit_tenant_writes=10,
                 limit_other_app_share=0.5)
    tok_a, tok_b = token(fc), token(fc, app=APP_B)
    for n in (1, 2, 3):
        assert patch(fc, tok_a, n).status == 204
    reply = patch(fc, tok_b, 11)
    assert reply.status == 204
    assert reply.header("x-ms-throttle-limit-percentage") == "0.90"
    assert patch(fc, tok_b, 12).status == 204
    reply = patch(fc, tok_a, 4)
    assert_throttled(reply, 300)
    assert reply.header("x-ms-throttle-scope") == \
        f"Tenant/Write/{APP}/{TENANT}"
    # Another tenant is counted apart.
    assert patch(fc, token(fc, TENANT2, APP2), 101).status == 204


@pytest.mark.parametrize("knobs", [
    {"time_factor": 0}, {"time_factor": 0.5}, {"time_factor": "10"},
    {"time_factor": True}, {"enforce_limits": 1}, {"limit_app_writes": 0},
    {"limit_invitations": 1.5}, {"limit_model": "cone"},
    {"limit_model": None}, {"limit_other_app_share": 1},
    {"limit_other_app_share": -0.1}, {"limit_other_app_share": True}])
def test_bad_knob_values(fc, knobs):
    with pytest.raises(FakeCloudError) as err:
        fc.set_knobs(**knobs)
    assert err.value.status == 400


# -- resource units ---------------------------------------------------------


@pytest.mark.parametrize("method, path, query, cost", [
    ("GET", "/v1.0/users", "", 2),                   # the list: base 2
    ("GET", "/v1.0/users/", "", 2),
    ("GET", "/beta/users", "", 2),
    ("GET", "/v1.0/users", "$select=id,mail", 1),    # $select -1
    ("GET", "/v1.0/users", "select=id", 1),          # $ is optional
    ("GET", "/v1.0/users", "$top=5", 1),             # $top under 20 -1
    ("GET", "/v1.0/users", "$top=19", 1),
    ("GET", "/v1.0/users", "$top=20", 2),
    ("GET", "/v1.0/users", "$top=999", 2),
    ("GET", "/v1.0/users", "$expand=manager", 3),    # $expand +1
    ("GET", "/v1.0/users", "$select=id&$top=5", 1),  # never below 1
    ("GET", "/v1.0/users", "$select=id&$expand=manager", 2),
    ("GET", f"/v1.0/users/{uid(1)}", "", 1),         # not listed: 1
    ("GET", f"/v1.0/users/{uid(1)}", "$select=id", 1),
    ("GET", f"/v1.0/users/{uid(1)}/memberOf", "", 2),   # as me/memberOf
    ("GET", f"/v1.0/groups/{GROUP}/members", "", 3),
    ("GET", f"/v1.0/groups/{GROUP}/members", "$top=5", 2),
    ("GET", f"/v1.0/groups/{GROUP}/transitiveMembers", "", 5),
    ("GET", f"/v1.0/groups/{GROUP}/transitiveMembers",
     "$select=id&$top=999", 4),
    ("GET", "/v1.0/users/delta", "", 1),             # not in the table
    ("GET", "/v1.0/users/delta", "$select=id,mail", 1),
    ("GET", "/v1.0/applications", "", 2),
    ("POST", "/v1.0/directoryObjects/getByIds", "", 3),
    ("PATCH", f"/v1.0/users/{uid(1)}", "", 1),
    ("DELETE", f"/v1.0/users/{uid(1)}", "", 1),
    ("DELETE", f"/v1.0/directory/deletedItems/{uid(1)}", "", 1),
    ("POST", "/v1.0/invitations", "", 1),
    ("POST", "/v1.0/users", "", 1),                  # POST of a list: 1
])
def test_unit_cost(method, path, query, cost):
    assert fakecloud.limits_unit_cost(method, path, query) == cost


def test_resource_unit_header(fc):
    # Graph always sends it, enforce_limits or not.
    tok = token(fc)
    for method, path, units in (
            ("GET", "/v1.0/users", "2"),
            ("GET", "/v1.0/users?$select=id", "1"),
            ("GET", "/v1.0/users?$top=5", "1"),
            ("GET", "/v1.0/users?$top=999", "2"),
            ("GET", f"/v1.0/users/{uid(1)}", "1"),
            ("GET", f"/v1.0/groups/{GROUP}/transitiveMembers", "5"),
            ("DELETE", f"/v1.0/users/{uid(2)}", "1")):
        reply = call(fc, tok, method, path)
        assert reply.status < 300, (path, reply.body)
        assert reply.header("x-ms-resource-unit") == units, path
    assert patch(fc, tok, 1).header("x-ms-resource-unit") == "1"
    assert invite(fc, tok, "g@partner.example").header(
        "x-ms-resource-unit") == "1"
    # An answer that is not a success is charged too.
    reply = call(fc, tok, "GET", f"/v1.0/users/{uid(999)}")
    assert reply.status == 404
    assert reply.header("x-ms-resource-unit") == "1"
    # A request without a valid token is not the app's.
    reply = call(fc, "not-a-token", "GET", "/v1.0/users")
    assert reply.status == 401
    assert reply.header("x-ms-resource-unit") is None
    stats = limits(fc)[APP]
    assert stats["units"] == 2 + 1 + 1 + 2 + 1 + 5 + 1 + 1 + 1 + 1
    assert stats["units_throttled"] == 0


def test_resource_unit_header_in_batch(fc):
    tok = token(fc)
    requests = [
        {"id": "list", "method": "GET", "url": "/users"},
        {"id": "small", "method": "GET", "url": "/users?$select=id&$top=5"},
        {"id": "one", "method": "GET", "url": f"/users/{uid(1)}"},
        {"id": "write", "method": "PATCH", "url": f"/users/{uid(2)}",
         "headers": dict(JSON), "body": {"jobTitle": "Batched"}},
        {"id": "missing", "method": "GET", "url": f"/users/{uid(999)}"},
        {"id": "after", "method": "GET", "url": f"/users/{uid(2)}",
         "dependsOn": ["missing"]}]
    reply = fc.request("POST", f"{fc.graph_url}/v1.0/$batch",
                       headers={"Authorization": "Bearer " + tok, **JSON},
                       body=json.dumps({"requests": requests}).encode())
    assert reply.status == 200, reply.body
    units = {item["id"]: item["headers"].get("x-ms-resource-unit")
             for item in reply.json()["responses"]}
    # A request that did not run (its dependency failed) cost nothing.
    assert units == {"list": "2", "small": "1", "one": "1", "write": "1",
                     "missing": "1", "after": None}
    # The $batch itself costs nothing of its own.
    assert reply.header("x-ms-resource-unit") is None
    assert limits(fc)[APP]["units"] == 6


def unit_reply_ok(reply):
    assert reply.status == 200, reply.body
    return reply


def test_resource_unit_limit(fc):
    fc.set_knobs(enforce_limits=True, limit_app_units=5)
    tok = token(fc)
    # 2 + 2 units: at 0.8 of the quota, not over it.
    for _ in range(2):
        reply = unit_reply_ok(call(fc, tok, "GET", "/v1.0/users"))
        assert reply.header("x-ms-throttle-limit-percentage") is None
    # 2 more would make 6: refused, with the resource-unit headers.
    reply = call(fc, tok, "GET", "/v1.0/users")
    assert_throttled(reply, 10)
    assert reply.header("x-ms-throttle-scope") == \
        f"Tenant_Application/ReadWrite/{APP}/{TENANT}"
    assert reply.header("x-ms-throttle-information") == \
        "ResourceUnitLimitExceeded"
    assert reply.header("x-ms-resource-unit") is None
    # The refusal cost nothing: 1 unit still fits, then the quota is full.
    reply = unit_reply_ok(call(fc, tok, "GET", f"/v1.0/users/{uid(1)}"))
    assert reply.header("x-ms-resource-unit") == "1"
    assert reply.header("x-ms-throttle-limit-percentage") == "1.00"
    # A write is refused too, and neither applied nor counted as a write.
    reply = patch(fc, tok, 3)
    assert_throttled(reply, 10)
    assert reply.header("x-ms-throttle-information") == \
        "ResourceUnitLimitExceeded"
    assert "jobTitle" not in fc.user(TENANT, uid(3))
    # Another app of the tenant, and another tenant, have their own.
    unit_reply_ok(call(fc, token(fc, app=APP_B), "GET", "/v1.0/users"))
    unit_reply_ok(call(fc, token(fc, TENANT2, APP2), "GET", "/v1.0/users"))
    stats = limits(fc)[APP]
    assert stats["units"] == 5
    assert stats["units_throttled"] == 2
    assert stats["throttled"] == 2
    assert stats["writes"] == 0
    # 10 s / 100: once the window has slid, the app has room again.
    fc.set_knobs(time_factor=100)
    wait_for(lambda: call(fc, tok, "GET", "/v1.0/users").status == 200,
             timeout=30)
    assert limits(fc)[APP]["units"] == 7


def test_resource_unit_limit_in_batch(fc):
    fc.set_knobs(enforce_limits=True, limit_app_units=4)
    tok = token(fc)
    requests = [{"id": str(n), "method": "GET", "url": "/users"}
                for n in range(3)]
    reply = fc.request("POST", f"{fc.graph_url}/v1.0/$batch",
                       headers={"Authorization": "Bearer " + tok, **JSON},
                       body=json.dumps({"requests": requests}).encode())
    assert reply.status == 200, reply.body
    answers = sorted(reply.json()["responses"], key=lambda a: a["status"])
    assert [a["status"] for a in answers] == [200, 200, 429]
    assert [a["headers"].get("x-ms-resource-unit") for a in answers] == \
        ["2", "2", None]
    refused = answers[2]["headers"]
    assert refused["x-ms-throttle-information"] == \
        "ResourceUnitLimitExceeded"
    assert int(refused["Retry-After"]) >= 1
    assert reply.header("x-ms-throttle-limit-percentage") == "1.00"
    assert limits(fc)[APP]["units"] == 4


def spend_units(fc, tok, units):
    """Spend `units` resource units (a multiple of 6) in $batch requests
    of GET transitiveMembers with $expand (5 + 1 units each); returns the
    last batch's answer."""
    inner = {"method": "GET",
             "url": f"/groups/{GROUP}/transitiveMembers?$expand=x"}
    left = units // 6
    while left:
        requests = [dict(inner, id=str(n)) for n in range(min(20, left))]
        left -= len(requests)
        reply = fc.request(
            "POST", f"{fc.graph_url}/v1.0/$batch",
            headers={"Authorization": "Bearer " + tok, **JSON},
            body=json.dumps({"requests": requests}).encode())
        assert reply.status == 200, reply.body
        assert all(a["headers"].get("x-ms-resource-unit") == "6"
                   for a in reply.json()["responses"])
    return reply


SIZED = "aaaaaaaa-0000-4000-8000-0000000b3001"


def sized_tenant(cloud, users):
    """A tenant of `users` users and one group, enforce_limits on, the
    quota left to the tenant size, counted in a window (a bucket refills
    350 or more units a second while the test spends them, so the
    percentage would move with the machine's speed); returns a token of
    APP there."""
    cloud.reset()
    cloud.seed({"tenants": [
        {"id": SIZED, "domain": "size.onmicrosoft.com",
         "apps": [{"client_id": APP, "secrets": [SECRET]}],
         "users": [person(n) for n in range(1, users + 1)],
         "groups": [{"id": GROUP, "members": [uid(1)]}]}]})
    cloud.set_knobs(enforce_limits=True, limit_model="window")
    return token(cloud, SIZED)


@pytest.mark.parametrize("users, spent, percentage", [
    (10, 2904, "0.83"),       # S (under 50 users): 3,500 per 10 s
    (49, 2904, "0.83"),
    (50, 4104, "0.82"),       # M (50 to 500 users): 5,000
    (100, 4104, "0.82"),
    (600, 6504, "0.81"),      # L (above 500 users): 8,000
])
def test_resource_unit_quota_by_tenant_size(cloud, users, spent,
                                            percentage):
    tok = sized_tenant(cloud, users)
    # Just under 0.8 of the quota: no header yet.
    reply = spend_units(cloud, tok, spent - 6 * 20)
    assert reply.header("x-ms-throttle-limit-percentage") is None
    reply = spend_units(cloud, tok, 6 * 20)
    assert reply.header("x-ms-throttle-limit-percentage") == percentage
    assert limits(cloud, SIZED)[APP]["units"] == spent


def test_resource_unit_quota_follows_user_count(cloud):
    tok = sized_tenant(cloud, 49)
    reply = spend_units(cloud, tok, 2904)          # S: 2,904 / 3,500
    assert reply.header("x-ms-throttle-limit-percentage") == "0.83"
    # The 50th user makes the tenant M: 2,910 / 5,000 is under 0.8.
    cloud.create_user(SIZED, person(50))
    reply = spend_units(cloud, tok, 6)
    assert reply.header("x-ms-throttle-limit-percentage") is None
    # Deleting one makes it S again; restoring it, M.
    cloud.delete_user(SIZED, uid(50))
    reply = spend_units(cloud, tok, 6)
    assert reply.header("x-ms-throttle-limit-percentage") == "0.83"
    cloud.restore_user(SIZED, uid(50))
    reply = spend_units(cloud, tok, 6)
    assert reply.header("x-ms-throttle-limit-percentage") is None
