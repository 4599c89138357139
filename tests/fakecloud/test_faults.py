"""fakecloud's fault knobs (issue 6): Graph throttling with Retry-After
and the "early request" count, connection-level faults on Graph answers,
the foreign host that records leaked tokens, and the token endpoint
going down.

Run:  /usr/bin/python3 -m pytest tests/fakecloud/test_faults.py -q

One fakecloud per module, reset before each test.  No fixed sleeps: what
depends on time polls the clock or the server with a deadline.
"""

import http.client
import json
import re
import ssl
import time
import urllib.parse

import pytest

from client import FakeCloudError, wait_for
from fctest import uid

TENANT = "aaaaaaaa-0000-4000-8000-00000000c011"
DOMAIN = "contoso.onmicrosoft.com"
APP = "bbbbbbbb-0000-4000-8000-00000000c011"
TENANT2 = "aaaaaaaa-0000-4000-8000-00000000f011"
APP2 = "bbbbbbbb-0000-4000-8000-00000000f011"
SECRET = "s3cret"
DELTA = "/v1.0/users/delta?$select=displayName,mail"


def seed():
    users = [{"id": uid(n), "displayName": f"User {n}",
              "mail": f"user{n}@contoso.com"} for n in range(1, 6)]
    return {"tenants": [
        {"id": TENANT, "domain": DOMAIN,
         "apps": [{"client_id": APP, "secrets": [SECRET]}],
         "users": users},
        {"id": TENANT2, "domain": "fabrikam.onmicrosoft.com",
         "apps": [{"client_id": APP2, "secrets": [SECRET]}],
         "users": [{"id": uid(99), "displayName": "Other"}]}]}


@pytest.fixture
def fc(cloud):
    cloud.reset()
    cloud.seed(seed())
    return cloud


def bearer(fc, tenant=TENANT, app=APP):
    return {"Authorization": "Bearer " + fc.access_token(tenant, app,
                                                         SECRET)}


def get(fc, headers, url):
    if not url.startswith("https://"):
        url = fc.graph_url + url
    return fc.request("GET", url, headers=headers)


def raw_get(fc, url, headers):
    """One GET on a fresh connection: (response or None, body or the
    exception the read ended with)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPSConnection(
        parts.hostname, parts.port, timeout=30,
        context=ssl.create_default_context(cafile=fc.ca_file))
    try:
        conn.request("GET", parts.path + "?" + parts.query,
                     headers=headers)
        try:
            resp = conn.getresponse()
        except (http.client.HTTPException, OSError) as exc:
            return None, exc
        try:
            return resp, resp.read()
        except (http.client.HTTPException, OSError) as exc:
            return resp, exc
    finally:
        conn.close()


def read_pages(fc, headers, url=DELTA):
    pages = []
    while url:
        reply = get(fc, headers, url)
        assert reply.status == 200, reply.body
        page = reply.json()
        pages.append(page)
        url = page.get("@odata.nextLink")
    return pages


def check_retry_after(values):
    """1-3 s, whole and fractional alternately."""
    for i, text in enumerate(values):
        assert 1 <= float(text) <= 3, text
        if i % 2 == 0:
            assert re.fullmatch(r"[123]", text), text
        else:
            assert re.fullmatch(r"[12]\.[0-9]", text), text


# -- throttling ---------------------------------------------------------------

def test_writes_answer_429_in_the_documented_shape(fc):
    auth = bearer(fc)
    fc.set_knobs(throttle_write_fraction=1)
    seen = []
    for n in range(1, 5):
        reply = fc.request("PATCH", f"{fc.graph_url}/v1.0/users/{uid(n)}",
                           headers=auth, json_body={"jobTitle": "X"})
        assert reply.status == 429
        body = reply.json()
        # error-429-throttled.json: same keys, in the same order.
        assert list(body["error"]) == ["code", "innerError", "message"]
        assert body["error"]["code"] == "TooManyRequests"
        assert body["error"]["innerError"]["status"] == "429"
        seen.append(reply.header("Retry-After"))
    check_retry_after(seen)
    # Nothing was applied; reads go on.
    assert all(u.get("jobTitle") is None for u in fc.users(TENANT))
    assert get(fc, auth, DELTA).status == 200
    stats = fc.throttle_stats(TENANT)
    assert stats["throttled"] == 4 and stats["requests"] == 5
    assert fc.stats(TENANT)["patches"] == 4
    assert fc.throttle_stats(TENANT2)["requests"] == 0


def test_reads_answer_503_service_not_available(fc):
    auth = bearer(fc)
    fc.set_knobs(throttle_read_fraction=1)
    reply = get(fc, auth, DELTA)
    assert reply.status == 503
    error = reply.json()["error"]
    assert error["code"] == "serviceNotAvailable"
    assert set(error["innerError"]) == {"date", "request-id",
                                        "client-request-id"}
    check_retry_after([reply.header("Retry-After")])
    # Writes are not touched by the read fraction.
    fc.set_knobs(throttle_read_fraction=0)
    reply = fc.request("PATCH", f"{fc.graph_url}/v1.0/users/{uid(1)}",
                       headers=auth, json_body={"jobTitle": "Y"})
    assert reply.status == 204


def test_fraction_is_a_fraction(fc):
    auth = bearer(fc)
    fc.set_knobs(throttle_read_fraction=0.5)
    statuses = [get(fc, auth, DELTA).status for _ in range(200)]
    assert set(statuses) == {200, 503}
    assert 40 < statuses.count(503) < 160
    for bad in (-0.1, 1.5, "1", True):
        with pytest.raises(FakeCloudError) as err:
            fc.set_knobs(throttle_write_fraction=bad)
        assert err.value.status == 400


def test_early_requests_are_counted_per_tenant_and_client(fc):
    auth, other = bearer(fc), bearer(fc, TENANT2, APP2)
    fc.set_knobs(throttle_read_fraction=1)
    reply = get(fc, auth, DELTA)
    sent = time.monotonic()
    wait = float(reply.header("Retry-After"))
    fc.set_knobs(throttle_read_fraction=0)
    stats = fc.throttle_stats(TENANT)
    assert stats["grace_ms"] == 100 and stats["early"] == 0
    # Past the grace, before Retry-After: early.
    wait_for(lambda: time.monotonic() > sent + 0.2, what="grace over")
    assert get(fc, auth, DELTA).status == 200
    assert fc.throttle_stats(TENANT)["early"] == 1
    # Another tenant's client is not held by it.
    assert get(fc, other, "/v1.0/users/delta").status == 200
    assert fc.throttle_stats(TENANT2)["early"] == 0
    # Once Retry-After has passed: not early.
    wait_for(lambda: time.monotonic() > sent + wait + 0.05, timeout=5,
             what="Retry-After elapsed")
    assert get(fc, auth, DELTA).status == 200
    stats = fc.throttle_stats(TENANT)
    examples = stats.pop("early_examples")
    # The early one came on the connection that carried the 503, after
    # it: counted there too (see the tests of connection_early below).
    assert len(stats.pop("connection_early_examples")) == 1
    assert stats == {"requests": 3, "throttled": 1, "early": 1,
                     "connection_early": 1, "grace_ms": 100}
    # The early one, described: what, when, on which connection.
    assert len(examples) == 1
    ex = examples[0]
    assert (ex["method"], ex["path"], ex["batch_item"]) == \
        ("GET", DELTA.split("?")[0], False)
    assert 100 < ex["ms_after_answer"] < wait * 1000
    assert 0 < ex["ms_before_end"] < wait * 1000
    assert ex["request_on_connection"] >= 1


def test_a_longer_grace_counts_a_late_arrival_in_flight(fc):
    auth = bearer(fc)
    fc.set_knobs(throttle_read_fraction=1, throttle_grace_ms=5000)
    reply = get(fc, auth, DELTA)
    sent = time.monotonic()
    assert reply.status == 503
    fc.set_knobs(throttle_read_fraction=0)
    wait_for(lambda: time.monotonic() > sent + 0.2, what="100 ms over")
    assert get(fc, auth, DELTA).status == 200
    stats = fc.throttle_stats(TENANT)
    assert stats["grace_ms"] == 5000 and stats["early"] == 0
    with pytest.raises(FakeCloudError):
        fc.set_knobs(throttle_grace_ms=-1)


def test_batch_inner_requests_are_throttled_one_by_one(fc):
    auth = bearer(fc)
    fc.set_knobs(throttle_write_fraction=1)
    body = {"requests": [
        {"id": str(n), "method": "PATCH", "url": f"/users/{uid(n)}",
         "headers": {"Content-Type": "application/json"},
         "body": {"jobTitle": "B"}} for n in (1, 2)] + [
        {"id": "3", "method": "GET", "url": f"/users/{uid(3)}"}]}
    reply = fc.request("POST", f"{fc.graph_url}/v1.0/$batch", headers=auth,
                       json_body=body)
    if reply.status == 400 and b"segment" in reply.body:
        pytest.skip("no $batch route in this fakecloud")
    assert reply.status == 200, reply.body
    answers = {a["id"]: a for a in reply.json()["responses"]}
    for n in ("1", "2"):
        assert answers[n]["status"] == 429
        assert answers[n]["body"]["error"]["code"] == "TooManyRequests"
        assert 1 <= float(answers[n]["headers"]["Retry-After"]) <= 3
    assert answers["3"]["status"] == 200
    stats = fc.throttle_stats(TENANT)
    assert stats["throttled"] == 2 and stats["requests"] == 3


# -- throttling per connection (connection_early) -----------------------------

def write(fc, headers, n=1):
    return fc.request("PATCH", f"{fc.graph_url}/v1.0/users/{uid(n)}",
                      headers=headers, json_body={"jobTitle": "W"})


def test_requests_after_a_429_on_its_connection_are_counted(fc):
    """A 429 written on a kept-alive connection: the same client's next
    request there before Retry-After counts, with no grace; another
    tenant's on that connection, the same client's on another
    connection, and any after Retry-After do not."""
    auth, other = bearer(fc), bearer(fc, TENANT2, APP2)
    fc.set_knobs(throttle_write_fraction=1)
    reply = write(fc, auth)
    sent = time.monotonic()
    assert reply.status == 429
    wait = float(reply.header("Retry-After"))
    fc.set_knobs(throttle_write_fraction=0)
    # At once, on the same connection (within the "early" grace).
    assert get(fc, auth, DELTA).status == 200
    stats = fc.throttle_stats(TENANT)
    assert stats["connection_early"] == 1 and stats["early"] == 0
    [ex] = stats["connection_early_examples"]
    assert (ex["service"], ex["method"], ex["path"], ex["client_id"]) == \
        ("graph", "GET", DELTA.split("?")[0], APP)
    assert 0 <= ex["ms_after_answer"] < wait * 1000
    assert 0 < ex["ms_before_end"] <= wait * 1000
    assert ex["request_on_connection"] >= 2
    assert ex["after"] == f"PATCH /v1.0/users/{uid(1)} -> 429"
    # Another tenant's client on that connection: not held by it.
    assert get(fc, other, "/v1.0/users/delta").status == 200
    assert fc.throttle_stats(TENANT2)["connection_early"] == 0
    # The same client on a new connection: not this count's business.
    resp, _ = raw_get(fc, fc.graph_url + DELTA, auth)
    assert resp.status == 200
    assert fc.throttle_stats(TENANT)["connection_early"] == 1
    # Once Retry-After has passed, the connection is free again.
    wait_for(lambda: time.monotonic() > sent + wait + 0.05, timeout=5,
             what="Retry-After elapsed")
    assert write(fc, auth).status == 204
    assert fc.throttle_stats(TENANT)["connection_early"] == 1


def test_a_revoked_token_still_counts_on_the_connection(fc):
    auth = bearer(fc)
    fc.set_knobs(throttle_write_fraction=1)
    assert write(fc, auth).status == 429
    fc.set_knobs(throttle_write_fraction=0, revoke_tokens=True)
    # Refused (401), but sent after the 429 all the same.
    assert get(fc, auth, DELTA).status == 401
    assert fc.throttle_stats(TENANT)["connection_early"] == 1


def test_a_batch_with_inner_429s_holds_its_connection(fc):
    auth = bearer(fc)
    fc.set_knobs(batch_inner_429=1, batch_inner_retry_after=3)
    body = {"requests": [
        {"id": str(n), "method": "PATCH", "url": f"/users/{uid(n)}",
         "headers": {"Content-Type": "application/json"},
         "body": {"jobTitle": "B"}} for n in (1, 2)]}
    reply = fc.request("POST", f"{fc.graph_url}/v1.0/$batch", headers=auth,
                       json_body=body)
    assert reply.status == 200
    statuses = sorted(a["status"] for a in reply.json()["responses"])
    assert statuses == [204, 429]
    assert write(fc, auth, 3).status == 204
    stats = fc.throttle_stats(TENANT)
    assert stats["connection_early"] == 1
    assert stats["connection_early_examples"][0]["method"] == "PATCH"


def test_a_batch_without_throttled_answers_holds_nothing(fc):
    auth = bearer(fc)
    body = {"requests": [
        {"id": "1", "method": "GET", "url": f"/users/{uid(1)}"},
        {"id": "2", "method": "GET", "url": "/users/nobody"}]}
    reply = fc.request("POST", f"{fc.graph_url}/v1.0/$batch", headers=auth,
                       json_body=body)
    assert reply.status == 200
    assert get(fc, auth, DELTA).status == 200
    assert fc.throttle_stats(TENANT)["connection_early"] == 0


def test_exchange_429_with_retry_after_holds_its_connection(fc):
    auth = {"Authorization": "Bearer " + fc.access_token(
        TENANT, APP, SECRET, "https://outlook.office365.com/.default")}
    url = f"{fc.exchange_url}/adminapi/beta/{TENANT}/InvokeCommand"
    body = {"CmdletInput": {"CmdletName": "Get-MailContact",
                            "Parameters": {}}}
    fc.set_knobs(exo_rate_limit=1)
    statuses = []
    for _ in range(3):
        reply = fc.request("POST", url, headers=auth, json_body=body)
        statuses.append(reply.status)
        if reply.status == 429:
            break
    assert statuses[-1] == 429 and reply.header("Retry-After")
    fc.set_knobs(exo_rate_limit=0)
    assert fc.request("POST", url, headers=auth,
                      json_body=body).status == 200
    [ex] = fc.throttle_stats(TENANT)["connection_early_examples"]
    assert ex["service"] == "exchange"


# -- connection-level and body faults -----------------------------------------

def rules(fc):
    return fc.faults()["rules"]


def test_fault_rule_validation(fc):
    for bad in ([{"kind": "explode"}], [{"kind": "stall", "count": 0}],
                [{"kind": "stall", "path": "("}], {"kind": "stall"},
                [{"kind": "stall", "colour": "red"}]):
        with pytest.raises(FakeCloudError) as err:
            fc.set_knobs(faults=bad)
        assert err.value.status == 400
    assert fc.knobs()["faults"] == []


def test_reset_before_response_fires_count_times(fc):
    auth = bearer(fc)
    fc.set_faults({"service": "graph", "method": "GET",
                   "path": r"^/v1\.0/users/delta", "kind":
                   "reset_before_response", "count": 2})
    for _ in range(2):
        resp, outcome = raw_get(fc, fc.graph_url + DELTA, auth)
        assert resp is None and isinstance(outcome, OSError)
    resp, body = raw_get(fc, fc.graph_url + DELTA, auth)
    assert resp.status == 200 and json.loads(body)["value"]
    assert rules(fc)[0]["left"] == 0 and rules(fc)[0]["fired"] == 2


def test_rule_matches_method_and_query(fc):
    auth = bearer(fc)
    fc.set_knobs(delta_page_size=2)
    fc.set_faults({"method": "GET", "path": r"\$skiptoken=",
                   "kind": "reset_before_response"})
    first = get(fc, auth, DELTA)
    assert first.status == 200 and rules(fc)[0]["fired"] == 0
    resp, outcome = raw_get(fc, first.json()["@odata.nextLink"], auth)
    assert resp is None
    assert rules(fc)[0]["fired"] == 1
    # A PATCH does not match a GET rule.
    fc.set_faults({"method": "GET", "kind": "reset_before_response"})
    reply = fc.request("PATCH", f"{fc.graph_url}/v1.0/users/{uid(1)}",
                       headers=auth, json_body={"jobTitle": "Z"})
    assert reply.status == 204 and rules(fc)[0]["left"] == 1


def test_reset_mid_body(fc):
    auth = bearer(fc)
    fc.set_faults({"path": "users/delta", "kind": "reset_mid_body"})
    resp, outcome = raw_get(fc, fc.graph_url + DELTA, auth)
    assert resp is not None and resp.status == 200
    assert isinstance(outcome, (http.client.IncompleteRead, OSError))


def test_truncate_sends_less_than_content_length(fc):
    auth = bearer(fc)
    fc.set_faults({"path": "users/delta", "kind": "truncate"})
    resp, outcome = raw_get(fc, fc.graph_url + DELTA, auth)
    assert resp.status == 200
    assert isinstance(outcome, http.client.IncompleteRead)
    assert outcome.expected == 4096
    assert json.loads(outcome.partial)["value"]        # the whole body


def test_stall_then_close_without_answer(fc):
    auth = bearer(fc)
    fc.set_faults({"path": "users/delta", "kind": "stall", "ms": 300})
    resp, outcome = raw_get(fc, fc.graph_url + DELTA, auth)
    assert resp is None and isinstance(outcome, OSError)
    assert fc.faults()["rules"][0]["fired"] == 1


def test_oversize_body_is_valid_json_of_the_size_asked(fc):
    auth = bearer(fc)
    size = 3 * 1024 * 1024 + 17
    fc.set_faults({"path": "users/delta", "kind": "oversize",
                   "bytes": size})
    resp, body = raw_get(fc, fc.graph_url + DELTA, auth)
    assert resp.status == 200
    assert resp.getheader("Content-Length") is None
    assert len(body) == size
    page = json.loads(body)
    assert len(page["value"]) == 5 and "@odata.deltaLink" in page


def test_invalid_json_and_wrong_shapes(fc):
    auth = bearer(fc)
    fc.set_faults({"path": "users/delta", "kind": "invalid_json"},
                  {"path": "users/delta", "kind": "wrong_shape:value_string"},
                  {"path": "users/delta", "kind": "wrong_shape:no_value"})
    reply = get(fc, auth, DELTA)
    assert reply.status == 200
    with pytest.raises(ValueError):
        json.loads(reply.body)
    reply = get(fc, auth, DELTA)
    assert isinstance(reply.json()["value"], str)
    reply = get(fc, auth, DELTA)
    assert "value" not in reply.json()
    assert "@odata.deltaLink" in reply.json()
    assert get(fc, auth, DELTA).json()["value"]          # all spent
    assert [r["left"] for r in rules(fc)] == [0, 0, 0]


def test_next_link_not_url(fc):
    auth = bearer(fc)
    fc.set_faults({"path": "users/delta", "kind": "next_link_not_url"})
    page = get(fc, auth, DELTA).json()
    link = page["@odata.nextLink"]
    assert "@odata.deltaLink" not in page
    assert not urllib.parse.urlsplit(link).scheme


def test_next_link_to_foreign_host_records_the_token(fc):
    auth = bearer(fc)
    fc.set_knobs(delta_page_size=2)
    fc.set_faults({"path": "users/delta", "kind": "next_link_foreign_host"})
    link = get(fc, auth, DELTA).json()["@odata.nextLink"]
    assert link.startswith(fc.foreign_url + "/v1.0/users/delta?")
    assert fc.foreign_requests() == []
    # A client that follows it hands the token to the foreign host.
    reply = fc.request("GET", link, headers=auth)
    assert reply.status == 404
    leaked = fc.foreign_requests()
    assert len(leaked) == 1
    assert leaked[0]["tenant"] == TENANT and leaked[0]["client_id"] == APP
    assert leaked[0]["authorization"] is True
    # Without a token: recorded, naming no tenant.
    fc.request("GET", link)
    assert fc.foreign_requests()[1]["tenant"] is None


def test_delta_link_foreign_host_waits_for_the_last_page(fc):
    auth = bearer(fc)
    fc.set_knobs(delta_page_size=2)
    fc.set_faults({"path": "users/delta",
                   "kind": "delta_link_foreign_host"})
    pages = read_pages(fc, auth)
    assert len(pages) == 3
    assert all(p["@odata.nextLink"].startswith(fc.graph_url)
               for p in pages[:2])
    assert pages[2]["@odata.deltaLink"].startswith(fc.foreign_url + "/")
    assert rules(fc)[0]["fired"] == 1


def test_next_link_self_points_at_the_request(fc):
    auth = bearer(fc)
    fc.set_faults({"path": "users/delta", "kind": "next_link_self",
                   "count": 2})
    page = get(fc, auth, DELTA).json()
    assert page["@odata.nextLink"] == fc.graph_url + DELTA
    assert "@odata.deltaLink" not in page
    again = get(fc, auth, page["@odata.nextLink"]).json()
    assert again["@odata.nextLink"] == page["@odata.nextLink"]
    assert again["value"] == page["value"]
    # Spent: the round ends as it would have.
    assert "@odata.deltaLink" in get(fc, auth, DELTA).json()


def test_next_link_endless_until_spent(fc):
    auth = bearer(fc)
    fc.set_faults({"path": "users/delta", "kind": "next_link_endless",
                   "items": 3, "count": 4})
    pages = read_pages(fc, auth)
    # 4 endless pages (the real one + 3 fake ones), then the real link.
    assert len(pages) == 5
    assert len(pages[0]["value"]) == 5 + 3
    fakes = [u for p in pages for u in p["value"]
             if u["displayName"].startswith("Endless ")]
    assert len(fakes) == 12 and len({u["id"] for u in fakes}) == 12
    assert all(u["userType"] == "Member" and u["mail"] for u in fakes)
    assert pages[-1]["value"] == [] and "@odata.deltaLink" in pages[-1]
    # The fakes are nowhere in the tenant.
    ids = {u["id"] for u in fc.users(TENANT)}
    assert not ids & {u["id"] for u in fakes}
    # The deltaLink works: nothing changed since.
    delta = get(fc, auth, pages[-1]["@odata.deltaLink"]).json()
    assert delta["value"] == []


def test_invalid_utf8_puts_a_raw_byte_after_the_text(fc):
    auth = bearer(fc)
    fc.patch_user(TENANT, uid(2), {"displayName": "Marker-Two"})
    fc.set_faults({"path": "users/delta", "kind": "invalid_utf8",
                   "text": "Marker-Two"})
    reply = get(fc, auth, DELTA)
    assert reply.status == 200
    assert b'"Marker-Two\xff"' in reply.body
    with pytest.raises(UnicodeDecodeError):
        reply.body.decode("utf-8")
    with pytest.raises(FakeCloudError):
        fc.set_faults({"kind": "invalid_utf8"})          # text required


def test_nul_and_lone_surrogate_values_go_out_escaped(fc):
    auth = bearer(fc)
    fc.patch_user(TENANT, uid(1), {"displayName": "A\u0000B"})
    fc.patch_user(TENANT, uid(2), {"displayName": "C\ud800D\u00e9"})
    reply = get(fc, auth, DELTA)
    assert reply.status == 200
    assert b"A\\u0000B" in reply.body
    assert b"C\\ud800D\\u00e9" in reply.body
    reply.body.decode("ascii")                       # JSON, escaped


def test_graph_moves_to_a_new_port(fc):
    auth = bearer(fc)
    old = fc.graph_url
    link = get(fc, auth, DELTA).json()["@odata.deltaLink"]
    new = fc.move_graph()
    assert new != old and new.startswith("https://127.0.0.1:")

    def old_closed():
        try:
            return raw_get(fc, old + DELTA, auth)[0] is None
        except OSError:
            return True
    wait_for(old_closed, what="old Graph port closed")
    # A link issued before works on the new port; new links name it.
    moved = new + link[len(old):]
    page = get(fc, auth, moved).json()
    assert page["@odata.deltaLink"].startswith(new + "/")


def test_faults_do_not_touch_error_answers(fc):
    fc.set_faults({"path": "users/delta", "kind": "invalid_json"})
    reply = get(fc, {"Authorization": "Bearer nope"}, DELTA)
    assert reply.status == 401 and reply.json()["error"]
    assert rules(fc)[0]["left"] == 1


# -- token endpoint -----------------------------------------------------------

def test_login_down_then_back(fc):
    fc.set_knobs(login_down_ms=60000)
    reply = fc.get_token(TENANT, APP, secret=SECRET)
    assert reply.status == 503
    body = reply.json()
    assert body["error"] == "temporarily_unavailable"
    assert body["error_description"].startswith("AADSTS90033: ")
    assert reply.header("Retry-After") == "1"
    assert fc.faults()["login_down_ms"] > 0
    fc.set_knobs(login_down_ms=0)
    assert fc.get_token(TENANT, APP, secret=SECRET).status == 200


def test_login_down_ends_by_itself(fc):
    fc.set_knobs(login_down_ms=300)
    assert fc.get_token(TENANT, APP, secret=SECRET).status == 503
    wait_for(lambda: fc.get_token(TENANT, APP, secret=SECRET).status == 200,
             timeout=10, interval=0.05, what="token endpoint back")
