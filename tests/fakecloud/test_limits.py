"""fakecloud's Graph write and invitation limits (throttling-limits.md):
sliding windows per (tenant, app) and per tenant, 429 TooManyRequests in
the documented shape with Retry-After, x-ms-throttle-limit-percentage past
80 %, $batch inner requests counted one by one, stats per app.

Run:  /usr/bin/python3 -m pytest tests/fakecloud/test_limits.py -q
"""

import json
import os
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from client import FakeCloud, FakeCloudError, wait_for  # noqa: E402

FIXTURES = Path(os.environ.get("FAKECLOUD_FIXTURES")
                or HERE.parents[1].parent / "shared" / "microsoft-fixtures")

TENANT = "aaaaaaaa-0000-4000-8000-0000000b1001"
APP = "bbbbbbbb-0000-4000-8000-0000000b1001"
APP_B = "bbbbbbbb-0000-4000-8000-0000000b1002"
TENANT2 = "aaaaaaaa-0000-4000-8000-0000000b2001"
APP2 = "bbbbbbbb-0000-4000-8000-0000000b2001"
SECRET = "s3cret"
JSON = {"Content-Type": "application/json"}
REDIRECT = "https://myapp.contoso.com"


def uid(n):
    return f"00000000-0000-4000-8000-{n:012d}"


def person(n):
    return {"id": uid(n), "displayName": f"User {n}",
            "mail": f"user{n}@contoso.com"}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    fc = FakeCloud().start(tmp_path_factory.mktemp("fakecloud"))
    yield fc
    assert fc.stop() == 0


@pytest.fixture
def fc(cloud):
    cloud.reset()
    cloud.seed({"tenants": [
        {"id": TENANT, "domain": "contoso.onmicrosoft.com",
         "apps": [{"client_id": APP, "secrets": [SECRET]},
                  {"client_id": APP_B, "secrets": [SECRET]}],
         "users": [person(n) for n in range(1, 31)]},
        {"id": TENANT2, "domain": "fabrikam.onmicrosoft.com",
         "apps": [{"client_id": APP2, "secrets": [SECRET]}],
         "users": [person(n) for n in range(101, 106)]}]})
    return cloud


def fixture(name):
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"Microsoft fixture {path} not found")
    return json.loads(path.read_text(encoding="utf-8"))


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


def assert_throttled(reply, max_wait):
    assert reply.status == 429, reply.body
    retry = reply.header("Retry-After")
    assert retry is not None and retry.isdigit(), retry
    assert 1 <= int(retry) <= max_wait
    body = reply.json()
    documented = fixture("error-429-throttled.json")
    assert set(body["error"]) == set(documented["error"])
    assert set(body["error"]["innerError"]) == \
        set(documented["error"]["innerError"])
    assert body["error"]["code"] == "TooManyRequests"


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
                            "peak_writes_per_second": 1}
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
    assert limits(fc)[APP] == {"writes": 4, "throttled": 1,
                               "peak_writes_per_second":
                               limits(fc)[APP]["peak_writes_per_second"]}


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


@pytest.mark.parametrize("knobs", [
    {"time_factor": 0}, {"time_factor": 0.5}, {"time_factor": "10"},
    {"time_factor": True}, {"enforce_limits": 1}, {"limit_app_writes": 0},
    {"limit_invitations": 1.5}])
def test_bad_knob_values(fc, knobs):
    with pytest.raises(FakeCloudError) as err:
        fc.set_knobs(**knobs)
    assert err.value.status == 400
