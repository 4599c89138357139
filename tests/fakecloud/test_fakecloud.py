"""fakecloud answers in Microsoft's documented shapes.

Run:  /usr/bin/python3 -m pytest tests/fakecloud -q

Starts the real server (one per module, reset before each test) and talks
to it over TLS with the CA it generated.  Response key sets are compared
with Microsoft's documented bodies in tests/fakecloud/fixtures/ (or at
$FAKECLOUD_FIXTURES).  No fixed sleeps: time-dependent
checks poll with a timeout.
"""

import http.client
import json
import os
import random
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

import seed_demo
from client import (EXCHANGE_SCOPE, GRAPH_SCOPE, FakeCloud,
                    FakeCloudError, make_certificate, make_client_assertion,
                    wait_for)
from fctest import assert_throttled, fixture, uid

HERE = Path(__file__).resolve().parent

TENANT = "aaaaaaaa-0000-4000-8000-00000000c001"
DOMAIN = "contoso.onmicrosoft.com"
APP = "bbbbbbbb-0000-4000-8000-00000000c001"
CERT_APP = "bbbbbbbb-0000-4000-8000-00000000c002"
SECRET = "s3cret"
TENANT2 = "aaaaaaaa-0000-4000-8000-00000000f001"
DOMAIN2 = "fabrikam.onmicrosoft.com"
APP2 = "bbbbbbbb-0000-4000-8000-00000000f001"

CERT_PEM, CERT_KEY = make_certificate("contoso galbridge")
OTHER_PEM, OTHER_KEY = make_certificate("not registered")

SELECT3 = "displayName,givenName,surname"
AAD_DESCRIPTION = re.compile(
    r"^AADSTS(\d+): .+\r\nTrace ID: [0-9a-f-]{36}\r\nCorrelation ID: "
    r"[0-9a-f-]{36}\r\nTimestamp: \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$", re.S)


def person(n, **props):
    user = {"id": uid(n), "displayName": f"User {n}", "givenName": "User",
            "surname": f"Number{n}", "mail": f"user{n}@contoso.com",
            "jobTitle": "Engineer"}
    user.update(props)
    return user


def seed(users=(), groups=(), users2=()):
    return {"tenants": [
        {"id": TENANT, "domain": DOMAIN,
         "apps": [{"client_id": APP, "secrets": [SECRET]},
                  {"client_id": CERT_APP, "certificates": [CERT_PEM]}],
         "users": list(users), "groups": list(groups)},
        {"id": TENANT2, "domain": DOMAIN2,
         "apps": [{"client_id": APP2, "secrets": [SECRET]}],
         "users": list(users2)},
    ]}


@pytest.fixture
def fc(cloud):
    cloud.reset()
    cloud.seed(seed([person(n) for n in range(1, 6)]))
    return cloud


def token(fc, tenant=TENANT, app=APP, scope=GRAPH_SCOPE):
    return fc.access_token(tenant, app, SECRET, scope)


def get(fc, tok, url, headers=None):
    if not url.startswith("https://"):
        url = fc.graph_url + url
    headers = dict(headers or {})
    if tok is not None:
        headers["Authorization"] = "Bearer " + tok
    return fc.request("GET", url, headers=headers)


def read_round(fc, tok, url, headers=None):
    """Follow nextLinks to the deltaLink; returns (pages, deltaLink)."""
    pages = []
    while True:
        reply = get(fc, tok, url, headers)
        assert reply.status == 200, reply.body
        body = reply.json()
        pages.append(body)
        assert not ("@odata.nextLink" in body and "@odata.deltaLink" in body)
        if "@odata.nextLink" in body:
            url = body["@odata.nextLink"]
            continue
        return pages, body["@odata.deltaLink"]


def items(pages):
    return [item for page in pages for item in page["value"]]


def by_id(pages):
    return {item["id"]: item for item in items(pages)}


def assert_graph_error(reply, status, code, fixture_name=
                       "observed/error-404-request-resourcenotfound.json"):
    assert reply.status == status, reply.body
    body = reply.json()
    expected = fixture(fixture_name)
    assert set(body) == set(expected) == {"error"}
    assert set(body["error"]) == set(expected["error"])
    assert set(body["error"]["innerError"]) == \
        set(expected["error"]["innerError"])
    assert body["error"]["code"] == code
    assert body["error"]["innerError"]["request-id"] == \
        reply.header("request-id")
    return body["error"]


def assert_aad_error(reply, status, error, code):
    assert reply.status == status, reply.body
    body = reply.json()
    documented = fixture("token-error-invalid-scope.json")
    assert set(documented) <= set(body)
    assert set(body) - set(documented) <= {"error_uri"}
    assert body["error"] == error
    assert body["error_codes"] == [code]
    match = AAD_DESCRIPTION.match(body["error_description"])
    assert match and int(match.group(1)) == code, body["error_description"]
    assert body["trace_id"] in body["error_description"]
    assert body["correlation_id"] in body["error_description"]
    assert body["timestamp"] in body["error_description"]
    return body


# --------------------------------------------------------------------------
# process, TLS, ready.json
# --------------------------------------------------------------------------

def test_ready_json_and_tls(fc):
    with open(os.path.join(fc.dir, "ready.json"), encoding="utf-8") as f:
        ready = json.load(f)
    assert set(ready) == {"pid", "ca_file", "login_url", "graph_url",
                          "exchange_url", "admin_url"}
    assert ready["pid"] == fc.proc.pid
    assert ready["ca_file"] == os.path.join(fc.dir, "ca.pem")
    for key in ("login_url", "graph_url", "exchange_url"):
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+", ready[key])
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", ready["admin_url"])
    assert fc.health() == {"status": "ok"}
    # The certificate verifies against ca.pem for 127.0.0.1 and localhost.
    port = int(ready["graph_url"].rsplit(":", 1)[1])
    ctx = ssl.create_default_context(cafile=ready["ca_file"])
    for name in ("127.0.0.1", "localhost"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname=name) as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_seed_file_and_sigterm(tmp_path):
    other = FakeCloud().start(tmp_path / "fc", seed=seed([person(1)]))
    try:
        assert [u["id"] for u in other.users(TENANT)] == [uid(1)]
        assert other.tenants()[1]["domain"] == DOMAIN2
    finally:
        status = other.stop()
    assert status == 0
    assert not (tmp_path / "fc" / "ready.json").exists()


# --------------------------------------------------------------------------
# token endpoint
# --------------------------------------------------------------------------

@pytest.mark.parametrize("tenant", [TENANT, DOMAIN])
def test_token_with_secret(fc, tenant):
    reply = fc.get_token(tenant, APP, secret=SECRET)
    assert reply.status == 200, reply.body
    body = reply.json()
    assert set(fixture("token-success.json")) <= set(body)
    assert set(body) == {"token_type", "expires_in", "ext_expires_in",
                         "access_token"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == body["ext_expires_in"] == 3599
    assert "no-store" in reply.header("Cache-Control")
    assert get(fc, body["access_token"], "/v1.0/users/delta").status == 200


@pytest.mark.parametrize("scope", [
    "https://graph.microsoft.us/.default",
    "https://dod-graph.microsoft.us/.default",
    "https://microsoftgraph.chinacloudapi.cn/.default"])
def test_token_other_cloud_scopes(fc, scope):
    tok = token(fc, scope=scope)
    assert get(fc, tok, "/v1.0/users/delta").status == 200


TOKEN_ERRORS = [
    # (form changes, tenant, status, error, AADSTS code)
    ({"client_secret": "wrong"}, TENANT, 401, "invalid_client", 7000215),
    ({"client_id": "cccccccc-0000-4000-8000-000000000000"}, TENANT, 400,
     "unauthorized_client", 700016),
    ({}, "dddddddd-0000-4000-8000-000000000000", 400, "invalid_request",
     90002),
    ({}, "nowhere.onmicrosoft.com", 400, "invalid_request", 90002),
    ({"scope": "https://foo.microsoft.com/.default"}, TENANT, 400,
     "invalid_scope", 70011),
    ({"scope": "User.Read"}, TENANT, 400, "invalid_scope", 1002012),
    ({"scope": GRAPH_SCOPE + " " + EXCHANGE_SCOPE}, TENANT, 400,
     "invalid_scope", 700022),
    ({"grant_type": None}, TENANT, 400, "invalid_request", 900144),
    ({"scope": None}, TENANT, 400, "invalid_request", 900144),
    ({"grant_type": "password"}, TENANT, 400, "unsupported_grant_type",
     70003),
    ({"client_secret": None}, TENANT, 401, "invalid_client", 7000218),
]


@pytest.mark.parametrize("changes,tenant,status,error,code", TOKEN_ERRORS)
def test_token_errors(fc, changes, tenant, status, error, code):
    form = {"client_id": APP, "scope": GRAPH_SCOPE, "client_secret": SECRET,
            "grant_type": "client_credentials"}
    form.update(changes)
    form = {k: v for k, v in form.items() if v is not None}
    reply = fc.request("POST", fc.token_url(tenant), form=form,
                       headers={"client-request-id":
                                "0c6a3d2e-1111-4222-8333-444455556666"})
    body = assert_aad_error(reply, status, error, code)
    assert body["correlation_id"] == "0c6a3d2e-1111-4222-8333-444455556666"


def test_token_endpoint_wants_post(fc):
    reply = fc.request("GET", fc.token_url(TENANT))
    assert_aad_error(reply, 400, "invalid_request", 900561)


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_certificate_assertion(fc, alg):
    for tenant in (TENANT, DOMAIN):
        assertion = make_client_assertion(CERT_KEY, CERT_PEM, CERT_APP,
                                          fc.token_url(tenant), alg=alg)
        reply = fc.get_token(tenant, CERT_APP, assertion=assertion)
        assert reply.status == 200, reply.body
        assert get(fc, reply.json()["access_token"],
                   "/v1.0/users/delta").status == 200


def signed_with_wrong_key(fc):
    good = make_client_assertion(CERT_KEY, CERT_PEM, CERT_APP,
                                 fc.token_url(TENANT))
    bad = make_client_assertion(OTHER_KEY, CERT_PEM, CERT_APP,
                                fc.token_url(TENANT))
    return good.rsplit(".", 1)[0] + "." + bad.rsplit(".", 1)[1]


ASSERTION_ERRORS = [
    # (builder, status, error, code, text in description)
    (lambda fc: signed_with_wrong_key(fc), 401, "invalid_client", 700027,
     "Key was found, but use of the key to verify the signature failed"),
    (lambda fc: make_client_assertion(OTHER_KEY, OTHER_PEM, CERT_APP,
                                      fc.token_url(TENANT)),
     401, "invalid_client", 700027, "The key was not found"),
    (lambda fc: make_client_assertion(OTHER_KEY, OTHER_PEM, CERT_APP,
                                      fc.token_url(TENANT), alg="PS256"),
     401, "invalid_client", 700027, "The key was not found"),
    (lambda fc: make_client_assertion(
        CERT_KEY, CERT_PEM, CERT_APP,
        "https://login.microsoftonline.com/" + TENANT + "/oauth2/v2.0/token"),
     401, "invalid_client", 50012, "audience"),
    # aud names the domain form, the request uses the tenant id form.
    (lambda fc: make_client_assertion(CERT_KEY, CERT_PEM, CERT_APP,
                                      fc.token_url(DOMAIN)),
     401, "invalid_client", 50012, "audience"),
    (lambda fc: make_client_assertion(
        CERT_KEY, CERT_PEM, CERT_APP, fc.token_url(TENANT),
        claims={"exp": int(time.time()) - 3600,
                "nbf": int(time.time()) - 4000}),
     401, "invalid_client", 700024, "not within its valid time range"),
    (lambda fc: make_client_assertion(
        CERT_KEY, CERT_PEM, CERT_APP, fc.token_url(TENANT),
        claims={"nbf": int(time.time()) + 3600}),
     401, "invalid_client", 700024, "not within its valid time range"),
    (lambda fc: make_client_assertion(CERT_KEY, CERT_PEM, CERT_APP,
                                      fc.token_url(TENANT), lifetime=172800),
     401, "invalid_client", 700024, "not within its valid time range"),
    (lambda fc: make_client_assertion(CERT_KEY, CERT_PEM, CERT_APP,
                                      fc.token_url(TENANT),
                                      claims={"sub": APP}),
     401, "invalid_client", 50048, "Subject mismatches Issuer"),
    (lambda fc: make_client_assertion(CERT_KEY, CERT_PEM, CERT_APP,
                                      fc.token_url(TENANT),
                                      claims={"sub": APP, "iss": APP}),
     401, "invalid_client", 700021, "doesn't match 'client_id'"),
    (lambda fc: make_client_assertion(CERT_KEY, CERT_PEM, CERT_APP,
                                      fc.token_url(TENANT),
                                      claims={"jti": None}),
     400, "invalid_request", 50027, "invalid or malformed"),
    # RS256 needs x5t; x5t#S256 goes with PS256.
    (lambda fc: make_client_assertion(CERT_KEY, CERT_PEM, CERT_APP,
                                      fc.token_url(TENANT),
                                      header={"x5t": None,
                                              "x5t#S256": "AAAA"}),
     400, "invalid_request", 50027, "invalid or malformed"),
    (lambda fc: make_client_assertion(CERT_KEY, CERT_PEM, CERT_APP,
                                      fc.token_url(TENANT),
                                      header={"alg": "HS256"}),
     400, "invalid_request", 50027, "invalid or malformed"),
    (lambda fc: "not.a-jwt", 400, "invalid_request", 50027,
     "invalid or malformed"),
]


@pytest.mark.parametrize("build,status,error,code,text", ASSERTION_ERRORS)
def test_certificate_assertion_errors(fc, build, status, error, code, text):
    reply = fc.get_token(TENANT, CERT_APP, assertion=build(fc))
    body = assert_aad_error(reply, status, error, code)
    assert text in body["error_description"]


def test_ps256_signature_must_be_pss(fc):
    # A PKCS#1 v1.5 signature under a PS256 header fails verification.
    rs = make_client_assertion(CERT_KEY, CERT_PEM, CERT_APP,
                               fc.token_url(TENANT), alg="RS256")
    ps = make_client_assertion(CERT_KEY, CERT_PEM, CERT_APP,
                               fc.token_url(TENANT), alg="PS256")
    mixed = ".".join(ps.split(".")[:2] + [rs.split(".")[2]])
    reply = fc.get_token(TENANT, CERT_APP, assertion=mixed)
    assert_aad_error(reply, 401, "invalid_client", 700027)


def test_graph_and_exchange_tokens_are_not_interchangeable(fc):
    graph_tok = token(fc)
    exo_tok = token(fc, scope=EXCHANGE_SCOPE)
    reply = get(fc, exo_tok, "/v1.0/users/delta")
    error = assert_graph_error(reply, 401, "InvalidAuthenticationToken")
    assert error["message"] == \
        "Access token validation failure. Invalid audience."
    url = f"{fc.exchange_url}/adminapi/beta/{TENANT}/InvokeCommand"
    body = {"CmdletInput": {"CmdletName": "Get-Recipient", "Parameters": {}}}
    reply = fc.request("POST", url, json_body=body,
                       headers={"Authorization": "Bearer " + graph_tok})
    assert reply.status == 401
    assert "Bearer" in reply.header("WWW-Authenticate")
    reply = fc.request("POST", url, json_body=body,
                       headers={"Authorization": "Bearer " + exo_tok})
    assert reply.status == 200, reply.body


def test_access_token_expires(fc):
    fc.set_knobs(token_lifetime=1)
    reply = fc.get_token(TENANT, APP, secret=SECRET)
    assert reply.json()["expires_in"] == 1
    tok = reply.json()["access_token"]

    def refused():
        r = get(fc, tok, "/v1.0/users/delta")
        return r if r.status == 401 else None

    error = assert_graph_error(wait_for(refused, 10, what="token expiry"),
                               401, "InvalidAuthenticationToken")
    assert error["message"] == \
        "Access token has expired or is not yet valid."


def test_revoke_tokens(fc):
    old = token(fc)
    fc.set_knobs(revoke_tokens=True)
    assert_graph_error(get(fc, old, "/v1.0/users/delta"), 401,
                       "InvalidAuthenticationToken")
    assert get(fc, token(fc), "/v1.0/users/delta").status == 200
    assert fc.knobs()["revoke_tokens"] is True


def test_graph_401_shapes(fc):
    reply = get(fc, None, "/v1.0/users/delta")
    error = assert_graph_error(reply, 401, "InvalidAuthenticationToken")
    assert error["message"] == "Access token is empty."
    assert "authorization_uri" in reply.header("WWW-Authenticate")
    reply = get(fc, "not-a-token", "/v1.0/users/delta")
    error = assert_graph_error(reply, 401, "InvalidAuthenticationToken")
    assert error["message"] == "Access token validation failure."
    reply = fc.request("GET", fc.graph_url + "/v1.0/users/delta",
                       headers={"Authorization": "Basic Zm9vOmJhcg==",
                                "client-request-id": "my-id"})
    error = assert_graph_error(reply, 401, "InvalidAuthenticationToken")
    assert error["innerError"]["client-request-id"] == "my-id"


# --------------------------------------------------------------------------
# users/delta
# --------------------------------------------------------------------------

def test_delta_first_round_paging_and_select(fc):
    fc.seed(seed([person(n) for n in range(1, 451)]))
    fc.set_knobs(delta_page_size=200)
    tok = token(fc)
    pages, delta = read_round(fc, tok, f"/v1.0/users/delta?$select={SELECT3}")
    assert [len(p["value"]) for p in pages] == [200, 200, 50]
    documented = [fixture("users-delta-page1.json"),
                  fixture("users-delta-page2.json"),
                  fixture("users-delta-page3-final.json")]
    for page, doc in zip(pages, documented):
        assert list(page) == list(doc)          # same keys, same order
    assert pages[0]["@odata.context"] == \
        f"{fc.graph_url}/v1.0/$metadata#users({SELECT3})"
    assert pages[1]["@odata.context"] == f"{fc.graph_url}/v1.0/$metadata#users"
    assert pages[0]["@odata.nextLink"].startswith(
        f"{fc.graph_url}/v1.0/users/delta?$skiptoken=")
    assert delta.startswith(f"{fc.graph_url}/v1.0/users/delta?$deltatoken=")
    doc_item = documented[0]["value"][0]
    for item in items(pages):
        assert list(item) == list(doc_item)    # displayName,givenName,...,id
    assert len(by_id(pages)) == 450


def test_delta_default_properties(fc):
    full = person(9, businessPhones=["+1 425 555 0109"],
                  mobilePhone="+1 425 555 0109", officeLocation="18/2111",
                  preferredLanguage="en-US",
                  userPrincipalName="user9@contoso.com",
                  department="Sales")
    fc.seed(seed([full, {"id": uid(10), "displayName": "Sparse"}]))
    pages, _ = read_round(fc, token(fc), "/v1.0/users/delta")
    assert pages[0]["@odata.context"] == \
        f"{fc.graph_url}/v1.0/$metadata#users"
    doc_item = fixture("users-delta-api-example1-default.json")["value"][0]
    got = by_id(pages)
    assert set(got[uid(9)]) == set(doc_item)   # department is not default
    # Never-set properties are absent, not null.
    assert set(got[uid(10)]) == {"displayName", "userPrincipalName", "id"}


def test_delta_links_can_be_called_again(fc):
    fc.set_knobs(delta_page_size=2)
    tok = token(fc)
    first = get(fc, tok, "/v1.0/users/delta?$select=displayName").json()
    nxt = first["@odata.nextLink"]
    assert get(fc, tok, nxt).json() == get(fc, tok, nxt).json()
    _, delta = read_round(fc, tok, nxt)
    fc.patch_user(TENANT, uid(2), {"displayName": "Renamed"})
    # Each use starts a new round (with its own new deltaLink) from the
    # same point.
    again = [read_round(fc, tok, delta)[0] for _ in range(2)]
    assert items(again[0]) == items(again[1])
    assert [i["id"] for i in items(again[0])] == [uid(2)]


def test_delta_changes_since_deltalink(fc):
    tok = token(fc)
    _, delta = read_round(fc, tok, f"/v1.0/users/delta?$select={SELECT3}")
    fc.patch_user(TENANT, uid(1), {"displayName": "MOD Administrator"})
    fc.patch_user(TENANT, uid(2), {"jobTitle": "Not selected"})
    fc.create_user(TENANT, person(6))
    fc.delete_user(TENANT, uid(4))
    fc.delete_user(TENANT, uid(5), hard=True)
    pages, delta2 = read_round(fc, tok, delta)
    got = by_id(pages)
    assert set(got) == {uid(1), uid(6), uid(4), uid(5)}
    assert got[uid(1)] == {"displayName": "MOD Administrator",
                           "givenName": "User", "surname": "Number1",
                           "id": uid(1)}
    assert got[uid(6)]["displayName"] == "User 6"
    assert got[uid(4)] == {"id": uid(4), "@removed": {"reason": "changed"}}
    assert got[uid(5)] == {"id": uid(5), "@removed": {"reason": "deleted"}}
    doc = fixture("users-delta-deltalink-changes.json")
    assert list(pages[-1]) == list(doc)
    assert pages[0]["@odata.context"] == f"{fc.graph_url}/v1.0/$metadata#users"
    assert list(got[uid(1)]) == list(doc["value"][0])
    assert list(got[uid(4)]) == list(doc["value"][1])
    # Nothing changed since: an empty round, like the documented one.
    pages, _ = read_round(fc, tok, delta2)
    assert list(pages[0]) == list(fixture("users-delta-deltalink-empty.json"))
    assert pages[0]["value"] == []


def test_delta_restored_user_comes_back(fc):
    tok = token(fc)
    _, delta = read_round(fc, tok, "/v1.0/users/delta?$select=displayName")
    fc.delete_user(TENANT, uid(3))
    pages, delta = read_round(fc, tok, delta)
    assert items(pages) == [{"id": uid(3), "@removed": {"reason": "changed"}}]
    fc.restore_user(TENANT, uid(3))
    pages, _ = read_round(fc, tok, delta)
    assert items(pages) == [{"displayName": "User 3", "id": uid(3)}]


def test_delta_initial_round_reports_removed(fc):
    fc.delete_user(TENANT, uid(1))
    fc.delete_user(TENANT, uid(2), hard=True)
    pages, _ = read_round(fc, token(fc), "/v1.0/users/delta")
    got = by_id(pages)
    assert got[uid(1)] == {"id": uid(1), "@removed": {"reason": "changed"}}
    assert got[uid(2)] == {"id": uid(2), "@removed": {"reason": "deleted"}}
    assert "displayName" in got[uid(3)]


def test_delta_return_minimal(fc):
    tok = token(fc)
    _, delta = read_round(fc, tok, f"/v1.0/users/delta?$select={SELECT3}")
    fc.patch_user(TENANT, uid(1), {"displayName": "Vance Adele"})
    fc.patch_user(TENANT, uid(2), {"givenName": None})
    fc.create_user(TENANT, person(7))
    minimal = {"Prefer": "return=minimal"}
    reply = get(fc, tok, delta, minimal)
    assert reply.header("Preference-Applied") == "return=minimal"
    got = by_id([reply.json()])
    assert got[uid(1)] == {"displayName": "Vance Adele", "id": uid(1)}
    assert got[uid(2)] == {"givenName": None, "id": uid(2)}
    assert set(got[uid(7)]) == {"displayName", "givenName", "surname", "id"}
    doc = fixture("users-delta-api-example3-minimal.json")["value"][0]
    assert set(doc) <= set(got[uid(1)]) | {"jobTitle"}
    # Without the header unchanged selected properties repeat.
    reply = get(fc, tok, delta)
    assert reply.header("Preference-Applied") is None
    got = by_id([reply.json()])
    assert got[uid(1)] == {"displayName": "Vance Adele", "givenName": "User",
                           "surname": "Number1", "id": uid(1)}


def test_delta_duplicates_knob(fc):
    fc.seed(seed([person(n) for n in range(1, 36)]))
    fc.set_knobs(delta_page_size=10, delta_duplicates=3)
    pages, _ = read_round(fc, token(fc), "/v1.0/users/delta")
    ids = [i["id"] for i in items(pages)]
    assert len(ids) == 38 and len(set(ids)) == 35
    first_page = {}
    for number, page in enumerate(pages):
        for item in page["value"]:
            if item["id"] in first_page:
                assert number > first_page[item["id"]]
            else:
                first_page[item["id"]] = number


def test_delta_empty_pages_knob(fc):
    fc.set_knobs(delta_empty_pages=2)
    pages, _ = read_round(fc, token(fc), "/v1.0/users/delta")
    assert [len(p["value"]) for p in pages] == [0, 0, 5]
    assert all("@odata.nextLink" in p for p in pages[:2])


def test_deltatoken_latest(fc):
    tok = token(fc)
    reply = get(fc, tok, "/v1.0/users/delta?$select=displayName"
                         "&$deltatoken=latest")
    body = reply.json()
    assert list(body) == list(fixture("users-delta-deltalink-empty.json"))
    assert body["value"] == []
    fc.patch_user(TENANT, uid(4), {"displayName": "Only me"})
    pages, _ = read_round(fc, tok, body["@odata.deltaLink"])
    assert items(pages) == [{"displayName": "Only me", "id": uid(4)}]


def test_changes_while_paging_come_next_round(fc):
    fc.set_knobs(delta_page_size=2)
    tok = token(fc)
    first = get(fc, tok, "/v1.0/users/delta?$select=displayName").json()
    changed = first["value"][0]["id"]
    fc.patch_user(TENANT, changed, {"displayName": "Changed mid-round"})
    pages, delta = read_round(fc, tok, first["@odata.nextLink"])
    assert changed not in by_id(pages)
    pages, _ = read_round(fc, tok, delta)
    assert items(pages) == [{"displayName": "Changed mid-round",
                             "id": changed}]


EXPIRY_MODES = [
    ("syncStateNotFound", 400, "syncStateNotFound"),
    ("gone", 410, "resyncRequired"),
    ("resyncRequired", 410, "resyncRequired"),
]


@pytest.mark.parametrize("mode,status,code", EXPIRY_MODES)
def test_expired_delta_tokens(fc, mode, status, code):
    fc.set_knobs(delta_page_size=2)
    tok = token(fc)
    first = get(fc, tok, "/v1.0/users/delta?$select=displayName").json()
    _, delta = read_round(fc, tok, first["@odata.nextLink"])
    fc.set_knobs(expire_delta_tokens=mode)
    for stale in (delta, first["@odata.nextLink"]):
        reply = get(fc, tok, stale)
        assert_graph_error(reply, status, code)
        if mode == "gone":
            location = reply.header("Location")
            assert location.startswith(f"{fc.graph_url}/v1.0/users/delta?")
            assert urllib.parse.parse_qs(
                urllib.parse.urlsplit(location).query,
                keep_blank_values=True)["$deltatoken"] == [""]
            pages, _ = read_round(fc, tok, location)
            assert len(by_id(pages)) == 5
            assert all(set(i) == {"displayName", "id"} for i in items(pages))
        else:
            assert reply.header("Location") is None
    # Links issued after the knob was set work.
    pages, fresh = read_round(fc, tok, "/v1.0/users/delta")
    assert len(by_id(pages)) == 5
    assert get(fc, tok, fresh).status == 200
    fc.set_knobs(expire_delta_tokens=None)
    assert get(fc, tok, delta).status == 200


def test_unknown_delta_token(fc):
    tok = token(fc)
    assert_graph_error(get(fc, tok, "/v1.0/users/delta?$deltatoken=bogus"),
                       400, "syncStateNotFound")
    assert_graph_error(get(fc, tok, "/v1.0/users/delta?$skiptoken=bogus"),
                       400, "syncStateNotFound")
    # Another tenant's link is not this tenant's.
    _, delta = read_round(fc, tok, "/v1.0/users/delta")
    other = token(fc, TENANT2, APP2)
    assert_graph_error(get(fc, other, delta), 400, "syncStateNotFound")


def test_link_state_is_baked_in(fc):
    fc.set_knobs(delta_page_size=2)
    tok = token(fc)
    first = get(fc, tok, "/v1.0/users/delta?$select=displayName").json()
    assert "$select" not in first["@odata.nextLink"]
    pages, delta = read_round(fc, tok, first["@odata.nextLink"])
    assert all(set(i) == {"displayName", "id"}
               for i in items([first] + pages))
    assert "$select" not in delta
    fc.patch_user(TENANT, uid(1), {"surname": "Not tracked"})
    fc.patch_user(TENANT, uid(2), {"displayName": "Tracked"})
    pages, _ = read_round(fc, tok, delta)
    assert items(pages) == [{"displayName": "Tracked", "id": uid(2)}]


def test_delta_id_filter(fc):
    tok = token(fc)
    url = ("/v1.0/users/delta?$select=displayName&$filter="
           + urllib.parse.quote(f"id eq '{uid(1)}' or id eq '{uid(3)}'"))
    pages, delta = read_round(fc, tok, url)
    assert set(by_id(pages)) == {uid(1), uid(3)}
    fc.patch_user(TENANT, uid(2), {"displayName": "Outside the filter"})
    fc.patch_user(TENANT, uid(3), {"displayName": "Inside"})
    pages, _ = read_round(fc, tok, delta)
    assert items(pages) == [{"displayName": "Inside", "id": uid(3)}]


@pytest.mark.parametrize("query,status,code", [
    ("$top=10", 400, "Request_UnsupportedQuery"),
    ("$orderby=displayName", 400, "Request_UnsupportedQuery"),
    ("$expand=manager", 400, "Request_UnsupportedQuery"),
    ("$filter=" + urllib.parse.quote("userType eq 'Member'"), 400,
     "Request_UnsupportedQuery"),
    ("$filter=" + urllib.parse.quote(
        " or ".join(f"id eq '{uid(n)}'" for n in range(51))), 400,
     "Request_UnsupportedQuery"),
    ("$select=displayName,nosuchthing", 400, "BadRequest"),
    ("foo=bar", 400, "Request_BadRequest"),
])
def test_delta_query_restrictions(fc, query, status, code):
    reply = get(fc, token(fc), "/v1.0/users/delta?" + query)
    assert_graph_error(reply, status, code)


def test_delta_2000_users_over_tls_is_fast(fc):
    users = seed_demo.make_users(DOMAIN, 2000, random.Random(7))
    fc.seed(seed(users))
    started = time.monotonic()
    tok = token(fc)
    pages, _ = read_round(fc, tok, "/v1.0/users/delta?$select=displayName,"
                          "givenName,surname,mail,jobTitle,department,"
                          "userType,accountEnabled,creationType,"
                          "onPremisesExtensionAttributes")
    elapsed = time.monotonic() - started
    assert len(by_id(pages)) == 2000
    assert elapsed < 5, f"2,000-user delta read took {elapsed:.2f}s"


# --------------------------------------------------------------------------
# groups, users
# --------------------------------------------------------------------------

def nested_seed():
    users = [person(n) for n in range(1, 7)]
    groups = [
        {"id": uid(101), "displayName": "Outer", "members":
         [uid(1), uid(2), uid(102)]},
        {"id": uid(102), "displayName": "Inner", "members":
         [uid(3), uid(4), uid(103)]},
        {"id": uid(103), "displayName": "Innermost", "members":
         [uid(5), uid(101), uid(1)]},           # a cycle and a repeat
    ]
    return seed(users, groups)


def test_transitive_members_nested_and_paged(fc):
    fc.seed(nested_seed())
    fc.delete_user(TENANT, uid(2))
    tok = token(fc)
    url = f"/v1.0/groups/{uid(101)}/transitiveMembers?$top=2"
    pages = []
    while url:
        reply = get(fc, tok, url)
        assert reply.status == 200, reply.body
        body = reply.json()
        assert body["@odata.context"] == \
            f"{fc.graph_url}/v1.0/$metadata#directoryObjects"
        pages.append(body)
        url = body.get("@odata.nextLink")
    assert [len(p["value"]) for p in pages] == [2, 2, 2]
    members = items(pages)
    kinds = {m["id"]: m["@odata.type"] for m in members}
    assert kinds == {uid(1): "#microsoft.graph.user",
                     uid(102): "#microsoft.graph.group",
                     uid(3): "#microsoft.graph.user",
                     uid(4): "#microsoft.graph.user",
                     uid(103): "#microsoft.graph.group",
                     uid(5): "#microsoft.graph.user"}
    assert list(members[0])[:2] == ["@odata.type", "id"]

    reply = get(fc, tok, f"/v1.0/groups/{uid(102)}/transitiveMembers"
                         f"?$select=displayName,mail")
    body = reply.json()
    assert "@odata.nextLink" not in body
    users = [m for m in body["value"]
             if m["@odata.type"] == "#microsoft.graph.user"]
    assert {m["id"] for m in users} == {uid(1), uid(3), uid(4), uid(5)}
    assert all(set(m) == {"@odata.type", "id", "displayName", "mail"}
               for m in users)


def test_transitive_members_errors(fc):
    tok = token(fc)
    missing = "5b31c38c-2584-42f0-aa47-657fb3a84230"
    reply = get(fc, tok, f"/v1.0/groups/{missing}/transitiveMembers")
    error = assert_graph_error(reply, 404, "Request_ResourceNotFound")
    doc = fixture("observed/error-404-request-resourcenotfound.json")
    assert error["message"] == doc["error"]["message"]
    fc.seed(nested_seed())
    reply = get(fc, tok, f"/v1.0/groups/{uid(101)}/transitiveMembers"
                         f"?$top=1000")
    assert_graph_error(reply, 400, "Request_BadRequest")


def test_get_user(fc):
    tok = token(fc)
    reply = get(fc, tok, f"/v1.0/users/{uid(1)}?$select=displayName,city")
    assert reply.status == 200
    assert reply.json() == {
        "@odata.context":
            f"{fc.graph_url}/v1.0/$metadata#users(displayName,city)/$entity",
        "displayName": "User 1", "city": None, "id": uid(1)}
    upn = fc.user(TENANT, uid(2))["userPrincipalName"]
    reply = get(fc, tok, f"/v1.0/users/{upn}")
    assert reply.json()["id"] == uid(2)
    assert set(reply.json()) == {"@odata.context", "id",
                                 *seed_demo_default_props()}
    fc.delete_user(TENANT, uid(2))
    assert_graph_error(get(fc, tok, f"/v1.0/users/{uid(2)}"), 404,
                       "Request_ResourceNotFound")


def seed_demo_default_props():
    doc = fixture("users-delta-api-example1-default.json")["value"][0]
    return set(doc) - {"id"}


def test_graph_unknown_route(fc):
    reply = get(fc, token(fc), "/v1.0/nonsense")
    assert_graph_error(reply, 400, "BadRequest")


# --------------------------------------------------------------------------
# Graph writes: invitations, PATCH, list/filter, delete/restore
# --------------------------------------------------------------------------

REDIRECT = "https://myapp.contoso.com"
NOT_FOUND = re.compile(r"^Resource '[^']+' does not exist or one of its "
                       r"queried reference-property objects are not "
                       r"present\.$")


def call(fc, tok, method, url, body=None, headers=None):
    if not url.startswith("https://"):
        url = fc.graph_url + url
    hdrs = {"Authorization": "Bearer " + tok}
    hdrs.update(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        return fc.request(method, url, headers=hdrs, json_body=body)
    if isinstance(body, str):
        body = body.encode()
        hdrs.setdefault("Content-Type", "application/json")
    return fc.request(method, url, headers=hdrs, body=body)


def invite(fc, tok, address, **extra):
    body = {"invitedUserEmailAddress": address, "inviteRedirectUrl": REDIRECT}
    body.update(extra)
    return call(fc, tok, "POST", "/v1.0/invitations", body)


def patch(fc, tok, user_id, props, version="v1.0"):
    return call(fc, tok, "PATCH", f"/{version}/users/{user_id}", props)


def assert_directory_error(reply, status, code, message=None):
    """A Graph error without details (404 fixture key sets) and its text."""
    error = assert_graph_error(reply, status, code)
    if message is not None:
        assert error["message"] == message
    return error


def user_url(user_id):
    return "/v1.0/users/" + urllib.parse.quote(user_id, safe="")


def test_invitation_shape_and_guest(fc):
    tok = token(fc)
    request = fixture("invitations-create-request.json")
    reply = call(fc, tok, "POST", "/v1.0/invitations", request)
    assert reply.status == 201, reply.body
    body = reply.json()
    documented = fixture("invitations-create-response.json")
    assert set(body) == set(documented)
    assert set(body["invitedUserMessageInfo"]) == \
        set(documented["invitedUserMessageInfo"])
    assert body["@odata.context"] == \
        f"{fc.graph_url}/v1.0/$metadata#invitations/$entity"
    assert body["invitedUserEmailAddress"] == "admin@fabrikam.com"
    assert body["inviteRedirectUrl"] == request["inviteRedirectUrl"]
    assert (body["status"], body["invitedUserType"],
            body["sendInvitationMessage"], body["resetRedemption"],
            body["invitedUserDisplayName"]) == \
        ("PendingAcceptance", "Guest", False, False, None)
    guest_id = body["invitedUser"]["id"]
    assert set(body["invitedUser"]) == {"id"}
    # id is the invitation, not the user; the redeem URL names both
    # the tenant and the invitation.
    assert body["id"] != guest_id
    assert re.fullmatch(r"[0-9a-f-]{36}", body["id"])
    assert f"tenant%3d{TENANT}" in body["inviteRedeemUrl"]
    assert f"user%3d{body['id']}" in body["inviteRedeemUrl"]

    guest = fc.user(TENANT, guest_id)
    assert guest["userPrincipalName"] == \
        "admin_fabrikam.com#EXT#@" + DOMAIN
    assert guest["mail"] == "admin@fabrikam.com"
    assert guest["otherMails"] == ["admin@fabrikam.com"]
    assert guest["proxyAddresses"] == ["SMTP:admin@fabrikam.com"]
    assert (guest["creationType"], guest["userType"],
            guest["externalUserState"], guest["accountEnabled"],
            guest["displayName"], guest["showInAddressList"],
            guest["deleted"]) == \
        ("Invitation", "Guest", "PendingAcceptance", True,
         "admin@fabrikam.com", False, None)
    # Readable by id and by its #EXT# UPN.
    reply = get(fc, tok, user_url(guest["userPrincipalName"]))
    assert reply.status == 200 and reply.json()["id"] == guest_id
    # Hidden from the GAL by default: Exchange sees a hidden GuestMailUser.
    etok = token(fc, scope=EXCHANGE_SCOPE)
    reply = invoke(fc, etok, "Get-Recipient", {"Identity":
                                               "admin@fabrikam.com"})
    recipient = reply.json()["value"][0]
    assert recipient["RecipientTypeDetails"] == "GuestMailUser"
    assert recipient["HiddenFromAddressListsEnabled"] is True


def test_invitation_options(fc):
    tok = token(fc)
    reply = invite(fc, tok, "Grace.Hopper@Navy.example",
                   invitedUserDisplayName="Grace Hopper",
                   invitedUserType="Member")
    assert reply.status == 201, reply.body
    body = reply.json()
    assert body["invitedUserType"] == "Member"
    assert body["invitedUserDisplayName"] == "Grace Hopper"
    guest = fc.user(TENANT, body["invitedUser"]["id"])
    assert (guest["displayName"], guest["userType"],
            guest["creationType"]) == ("Grace Hopper", "Member", "Invitation")
    assert guest["userPrincipalName"] == \
        "Grace.Hopper_Navy.example#EXT#@" + DOMAIN


def test_reinvite_existing_guest_returns_same_user(fc):
    tok = token(fc)
    first = invite(fc, tok, "ada@partner.example").json()
    count = len(fc.users(TENANT))
    second = invite(fc, tok, "ADA@Partner.example",
                    invitedUserDisplayName="Ada").json()
    assert second["invitedUser"]["id"] == first["invitedUser"]["id"]
    assert second["id"] != first["id"]
    assert len(fc.users(TENANT)) == count
    # An already redeemed guest answers Completed.
    fc.patch_user(TENANT, first["invitedUser"]["id"],
                  {"externalUserState": "Accepted"})
    third = invite(fc, tok, "ada@partner.example").json()
    assert third["status"] == "Completed"
    assert third["invitedUser"]["id"] == first["invitedUser"]["id"]


@pytest.mark.parametrize("body", [
    {"inviteRedirectUrl": REDIRECT},
    {"invitedUserEmailAddress": "x@partner.example"},
    {"invitedUserEmailAddress": "not-an-address",
     "inviteRedirectUrl": REDIRECT},
    {"invitedUserEmailAddress": "x@partner.example",
     "inviteRedirectUrl": REDIRECT, "invitedUserType": "Admin"},
])
def test_invitation_validation(fc, body):
    tok = token(fc)
    count = len(fc.users(TENANT))
    reply = call(fc, tok, "POST", "/v1.0/invitations", body)
    assert_directory_error(reply, 400, "BadRequest")
    assert len(fc.users(TENANT)) == count
    reply = call(fc, tok, "POST", "/v1.0/invitations", "{not json")
    assert_directory_error(reply, 400, "BadRequest")


def test_invite_address_of_member_user_is_refused(fc):
    tok = token(fc)
    reply = invite(fc, tok, "User1@contoso.com")
    assert_directory_error(
        reply, 400, "BadRequest",
        f"The invited user already exists in the directory as object ID: "
        f"{uid(1)}.")


def test_invite_address_of_contact_gives_guest_without_mail(fc):
    tok = token(fc)
    contact = fc.create_contact(TENANT, {"displayName": "Partner Contact",
                                         "mail": "pc@partner.example"})
    assert contact["proxyAddresses"] == ["SMTP:pc@partner.example"]
    reply = invite(fc, tok, "pc@partner.example")
    assert reply.status == 201, reply.body
    guest = fc.user(TENANT, reply.json()["invitedUser"]["id"])
    assert guest["mail"] is None
    assert guest["proxyAddresses"] == []
    assert guest["otherMails"] == ["pc@partner.example"]
    # Inviting again finds that guest (by otherMails), not a new one.
    again = invite(fc, tok, "pc@partner.example").json()
    assert again["invitedUser"]["id"] == guest["id"]


def test_invitation_rate_limit(fc):
    tok = token(fc)
    # Off by default: 151 in a burst all succeed.
    for n in range(151):
        reply = invite(fc, tok, f"g{n}@burst.example")
        assert reply.status == 201, (n, reply.body)
    # On: a token bucket of 150 refilled at 150 per 5 s. Another tenant's
    # is full: its whole 150 go at once, and then only what refilled.
    fc.set_knobs(enforce_invitation_limit=True)
    tok2 = token(fc, TENANT2, APP2)
    started = time.monotonic()
    accepted, reply = 0, None
    for n in range(2000):
        reply = invite(fc, tok2, f"b{n}@burst.example")
        if reply.status != 201:
            break
        accepted += 1
    elapsed = time.monotonic() - started
    assert_throttled(reply, 5)
    assert 150 <= accepted <= 150 + 30 * elapsed + 1, (accepted, elapsed)
    assert not any(u.get("mail") == f"b{accepted}@burst.example"
                   for u in fc.users(TENANT2))


def test_get_user_v1_and_beta(fc):
    tok = token(fc)
    guest_id = invite(fc, tok, "gal@partner.example").json()[
        "invitedUser"]["id"]
    reply = get(fc, tok, f"/v1.0/users/{guest_id}"
                         f"?$select=showInAddressList,creationType")
    assert reply.status == 200
    # v1.0: "do not use" -- answers null whatever the value.
    assert reply.json()["showInAddressList"] is None
    assert reply.json()["creationType"] == "Invitation"
    reply = get(fc, tok, f"/beta/users/{guest_id}"
                         f"?$select=showInAddressList,userType")
    assert reply.json() == {
        "@odata.context": f"{fc.graph_url}/beta/$metadata#users("
                          f"showInAddressList,userType)/$entity",
        "showInAddressList": False, "userType": "Guest", "id": guest_id}
    # beta without $select: every property the user has.
    body = get(fc, tok, f"/beta/users/{guest_id}").json()
    assert body["externalUserState"] == "PendingAcceptance"
    assert body["showInAddressList"] is False
    assert_directory_error(get(fc, tok, f"/beta/users/{uid(999)}"), 404,
                           "Request_ResourceNotFound",
                           f"Resource '{uid(999)}' does not exist or one "
                           f"of its queried reference-property objects are "
                           f"not present.")


def test_show_in_address_list_beta_only(fc):
    tok = token(fc)
    guest_id = invite(fc, tok, "gal@partner.example").json()[
        "invitedUser"]["id"]
    reply = patch(fc, tok, guest_id, {"showInAddressList": True}, "beta")
    assert (reply.status, reply.body) == (204, b"")
    assert fc.user(TENANT, guest_id)["showInAddressList"] is True
    reply = get(fc, tok, f"/beta/users/{guest_id}?$select=showInAddressList")
    assert reply.json()["showInAddressList"] is True
    etok = token(fc, scope=EXCHANGE_SCOPE)
    recipient = invoke(fc, etok, "Get-Recipient", {
        "Identity": "gal@partner.example"}).json()["value"][0]
    assert recipient["HiddenFromAddressListsEnabled"] is False
    # v1.0 accepts the property and does nothing with it.
    reply = patch(fc, tok, guest_id, {"showInAddressList": False})
    assert reply.status == 204
    assert fc.user(TENANT, guest_id)["showInAddressList"] is True
    assert_directory_error(patch(fc, tok, guest_id,
                                 {"showInAddressList": "no"}, "beta"),
                           400, "Request_BadRequest")


def test_patch_user_204_and_delta(fc):
    tok = token(fc)
    select = "jobTitle,department,onPremisesExtensionAttributes,businessPhones"
    _, link = read_round(fc, tok, f"/v1.0/users/delta?$select={select}")
    fc.patch_user(TENANT, uid(1), {"onPremisesExtensionAttributes": {
        "extensionAttribute1": "keep"}})
    props = {"jobTitle": "Admiral", "department": "Navy",
             "businessPhones": ["+1 425 555 0109"],
             "onPremisesExtensionAttributes": {
                 "extensionAttribute15": "galbridge:abc"}}
    reply = patch(fc, tok, uid(1), props)
    assert reply.status == 204 and reply.body == b""
    assert reply.header("Content-Type") is None
    user = fc.user(TENANT, uid(1))
    assert (user["jobTitle"], user["department"], user["businessPhones"]) \
        == ("Admiral", "Navy", ["+1 425 555 0109"])
    assert user["onPremisesExtensionAttributes"] == {
        "extensionAttribute1": "keep",
        "extensionAttribute15": "galbridge:abc"}
    # The documented example body, by UPN.
    upn = fc.user(TENANT, uid(2))["userPrincipalName"]
    reply = patch(fc, tok, upn, fixture("user-update-request.json"))
    assert reply.status == 204
    assert fc.user(TENANT, uid(2))["officeLocation"] == "18/2111"
    # Null clears; the same value again is no change.
    assert patch(fc, tok, uid(3), {"jobTitle": None}).status == 204
    assert patch(fc, tok, uid(4), {"jobTitle": "Engineer"}).status == 204
    pages, _ = read_round(fc, tok, link)
    changed = by_id(pages)
    assert set(changed) == {uid(1), uid(2), uid(3)}
    assert changed[uid(1)]["jobTitle"] == "Admiral"
    assert changed[uid(1)]["onPremisesExtensionAttributes"][
        "extensionAttribute15"] == "galbridge:abc"
    assert changed[uid(3)]["jobTitle"] is None


LONG = "x" * 65
PATCH_ERRORS = [
    ({"givenName": LONG}, "Invalid value specified for property 'givenName'"
                          " of resource 'User'."),
    ({"surname": LONG}, "Invalid value specified for property 'surname' of"
                        " resource 'User'."),
    ({"displayName": "x" * 257}, "Invalid value specified for property "
                                 "'displayName' of resource 'User'."),
    ({"displayName": None}, "Invalid value specified for property "
                            "'displayName' of resource 'User'."),
    ({"jobTitle": "x" * 129}, "Invalid value specified for property "
                              "'jobTitle' of resource 'User'."),
    ({"department": LONG}, "Invalid value specified for property "
                           "'department' of resource 'User'."),
    ({"companyName": LONG}, "Invalid value specified for property "
                            "'companyName' of resource 'User'."),
    ({"postalCode": "x" * 41}, "Invalid value specified for property "
                               "'postalCode' of resource 'User'."),
    ({"employeeId": "x" * 17}, "Invalid value specified for property "
                               "'employeeId' of resource 'User'."),
    ({"businessPhones": ["1", "2"]}, "Invalid value specified for property "
                                     "'businessPhones' of resource 'User'."),
    ({"accountEnabled": "yes"}, "Invalid value specified for property "
                                "'accountEnabled' of resource 'User'."),
    ({"mail": "no-at-sign"}, "Invalid value specified for property 'mail' "
                             "of resource 'User'."),
    ({"onPremisesExtensionAttributes": {"extensionAttribute2": "x" * 1025}},
     "Invalid value specified for property 'onPremisesExtensionAttributes'"
     " of resource 'User'."),
    ({"onPremisesExtensionAttributes": {"extensionAttribute16": "x"}},
     "Invalid property 'extensionAttribute16'."),
    ({"proxyAddresses": ["SMTP:a@b.example"]},
     "Property 'proxyAddresses' is read-only and cannot be set."),
    ({"creationType": "Invitation"},
     "Property 'creationType' is read-only and cannot be set."),
    ({"externalUserState": "Accepted"},
     "Property 'externalUserState' is read-only and cannot be set."),
    ({"id": uid(77)}, "Property 'id' is read-only and cannot be set."),
    ({"jobTitle": "ok", "favouriteColour": "blue"},
     "Invalid property 'favouriteColour'."),
    ({"userPrincipalName": "someone@elsewhere.example"},
     "Property userPrincipalName is invalid."),
]


@pytest.mark.parametrize("props,message", PATCH_ERRORS)
def test_patch_user_validation(fc, props, message):
    tok = token(fc)
    before = fc.user(TENANT, uid(1))
    reply = patch(fc, tok, uid(1), props)
    assert reply.status == 400, reply.body
    error = reply.json()["error"]
    assert error["code"] == "Request_BadRequest"
    assert error["message"] == message
    assert fc.user(TENANT, uid(1)) == before


def test_patch_user_limits_and_unknown_user(fc):
    tok = token(fc)
    ok = {"givenName": "g" * 64, "surname": "s" * 64, "displayName": "d" * 256,
          "jobTitle": "j" * 128, "officeLocation": "o" * 128,
          "streetAddress": "a" * 1024, "city": "c" * 128,
          "employeeId": "e" * 16, "businessPhones": [], "accountEnabled":
          False, "otherMails": ["x@y.example"], "usageLocation": "GB",
          "employeeType": "Contractor", "faxNumber": "+44 1", "mobilePhone":
          "+44 7700 900000", "preferredLanguage": "en-GB"}
    assert patch(fc, tok, uid(1), ok).status == 204
    assert fc.user(TENANT, uid(1))["accountEnabled"] is False
    assert_directory_error(patch(fc, tok, uid(999), {"jobTitle": "x"}), 404,
                           "Request_ResourceNotFound")
    assert_directory_error(call(fc, tok, "PATCH", f"/v1.0/users/{uid(1)}",
                                "[1, 2"), 400, "BadRequest")


def test_patch_mail_conflict_shape(fc):
    tok = token(fc)
    fc.create_group(TENANT, {"id": uid(60), "displayName": "Team",
                             "mail": "team@contoso.com"})
    contact = fc.create_contact(TENANT, {"mail": "pc@partner.example"})
    text = ("Another object with the same value for property proxyAddresses "
            "already exists.")
    for address, target in (("USER2@Contoso.com", f"User_{uid(2)}"),
                            ("team@contoso.com", f"Group_{uid(60)}"),
                            ("pc@partner.example",
                             f"Contact_{contact['id']}")):
        reply = patch(fc, tok, uid(1), {"mail": address})
        assert reply.status == 400, reply.body
        error = reply.json()["error"]
        assert list(error) == ["code", "message", "details", "innerError"]
        assert (error["code"], error["message"]) == \
            ("Request_BadRequest", text)
        assert error["details"] == [
            {"code": "ObjectConflict", "message": text,
             "target": "proxyAddresses"},
            {"code": "ConflictingObjects", "message": text,
             "target": target}]
        assert fc.user(TENANT, uid(1))["mail"] == "user1@contoso.com"
    # Its own address is no conflict; a soft-deleted user's address is free.
    assert patch(fc, tok, uid(1), {"mail": "User1@contoso.com"}).status == 204
    fc.delete_user(TENANT, uid(2))
    assert patch(fc, tok, uid(1), {"mail": "user2@contoso.com"}).status == 204
    user = fc.user(TENANT, uid(1))
    assert user["mail"] == "user2@contoso.com"
    assert user["proxyAddresses"] == ["SMTP:user2@contoso.com"]
    # UPNs are unique too.
    upn = fc.user(TENANT, uid(3))["userPrincipalName"]
    reply = patch(fc, tok, uid(4), {"userPrincipalName": upn.upper()})
    error = reply.json()["error"]
    assert error["details"][0]["target"] == "userPrincipalName"
    assert error["details"][1]["target"] == f"User_{uid(3)}"


def test_list_users_select_top_paging(fc):
    tok = token(fc)
    reply = get(fc, tok, "/v1.0/users")
    body = reply.json()
    assert reply.status == 200
    assert list(body) == ["@odata.context", "value"]
    assert body["@odata.context"] == f"{fc.graph_url}/v1.0/$metadata#users"
    assert [u["id"] for u in body["value"]] == [uid(n) for n in range(1, 6)]
    assert set(body["value"][0]) == {"id", *seed_demo_default_props()}
    url, seen = "/v1.0/users?$top=2&$select=displayName,mail", []
    while url:
        body = get(fc, tok, url).json()
        assert body["@odata.context"].endswith("#users(displayName,mail)")
        seen.append([u["id"] for u in body["value"]])
        assert all(set(u) == {"id", "displayName", "mail"}
                   for u in body["value"])
        url = body.get("@odata.nextLink")
    assert seen == [[uid(1), uid(2)], [uid(3), uid(4)], [uid(5)]]
    fc.delete_user(TENANT, uid(5))
    assert len(get(fc, tok, "/v1.0/users").json()["value"]) == 4
    for top in ("0", "1000", "x"):
        assert_directory_error(get(fc, tok, f"/v1.0/users?$top={top}"), 400,
                               "Request_BadRequest")
    # $count without ConsistencyLevel is silently ignored.
    body = get(fc, tok, "/v1.0/users?$count=true").json()
    assert "@odata.count" not in body
    body = get(fc, tok, "/v1.0/users?$count=true&$top=1", headers={
        "ConsistencyLevel": "eventual"}).json()
    assert body["@odata.count"] == 4 and len(body["value"]) == 1
    assert list(body)[:3] == ["@odata.context", "@odata.count",
                              "@odata.nextLink"]


def filter_ids(fc, tok, expr, advanced=False):
    query = "$filter=" + urllib.parse.quote(expr, safe="")
    headers = None
    if advanced:
        query += "&$count=true"
        headers = {"ConsistencyLevel": "eventual"}
    reply = get(fc, tok, "/v1.0/users?" + query, headers)
    assert reply.status == 200, (expr, reply.body)
    return [u["id"] for u in reply.json()["value"]]


def test_list_users_filters(fc):
    fc.seed(seed([person(1), person(2, displayName="Patrick O'Brien"),
                  person(3, userType="Guest", otherMails=[
                      "alt@partner.example"]),
                  person(4, accountEnabled=False), person(11)]))
    tok = token(fc)
    assert filter_ids(fc, tok, "mail eq 'USER2@contoso.com'") == [uid(2)]
    assert filter_ids(fc, tok, "userType eq 'Guest'") == [uid(3)]
    assert filter_ids(fc, tok, "startswith(displayName,'user 1')") == \
        [uid(1), uid(11)]
    assert filter_ids(fc, tok, "displayName eq 'Patrick O''Brien'") == \
        [uid(2)]
    assert filter_ids(fc, tok, "otherMails/any(m:m eq 'ALT@partner.example')"
                      ) == [uid(3)]
    assert filter_ids(fc, tok, "mail eq 'user1@contoso.com' or "
                               "(userType eq 'Guest' and "
                               "accountEnabled eq true)") == [uid(1), uid(3)]
    assert filter_ids(fc, tok, "accountEnabled eq false") == [uid(4)]
    assert filter_ids(fc, tok, "id eq '" + uid(11) + "'") == [uid(11)]
    assert filter_ids(fc, tok, "mail ne 'user1@contoso.com' and "
                               "startswith(mail,'user1')", True) == [uid(11)]
    assert filter_ids(fc, tok, "endswith(mail,'1@contoso.com')", True) == \
        [uid(1), uid(11)]


@pytest.mark.parametrize("expr,status,code,message", [
    ("contains(displayName,'a')", 400, "Request_UnsupportedQuery",
     "Unsupported property filter clause operator 'Contains'."),
    ("mail ne 'x@y.example'", 400, "Request_UnsupportedQuery",
     "Unsupported property filter clause operator 'NotEqualsMatch'."),
    ("endswith(mail,'@contoso.com')", 400, "Request_UnsupportedQuery",
     "Operator 'endsWith' is not supported because the required parameters "
     "might be missing. Try adding $count=true query parameter and "
     "ConsistencyLevel:eventual header. Refer to "
     "https://aka.ms/graph-docs/advanced-queries for more information"),
    ("faxNumber eq '1'", 400, "Request_UnsupportedQuery",
     "Unsupported or invalid query filter clause specified for property "
     "'faxNumber' of resource 'User'."),
    ("shoeSize eq '9'", 400, "Request_UnsupportedQuery",
     "Property 'shoeSize' does not exist as a declared property or "
     "extension property."),
    ("accountEnabled eq 'yes'", 400, "BadRequest", None),
    ("mail eq 'unterminated", 400, "BadRequest", None),
    ("mail eq", 400, "BadRequest", None),
])
def test_list_users_filter_errors(fc, expr, status, code, message):
    tok = token(fc)
    reply = get(fc, tok, "/v1.0/users?$filter=" +
                urllib.parse.quote(expr, safe=""))
    assert_directory_error(reply, status, code, message)


def test_advanced_query_needs_header_and_count(fc):
    tok = token(fc)
    fc.patch_user(TENANT, uid(3), {"onPremisesExtensionAttributes": {
        "extensionAttribute15": "galbridge:src:42"}})
    expr = urllib.parse.quote(
        "onPremisesExtensionAttributes/extensionAttribute15 eq "
        "'GALBRIDGE:src:42'", safe="")
    text = ("Property 'extensionAttribute15' does not exist as a declared "
            "property or extension property.")
    for query, headers in ((f"$filter={expr}", None),
                           (f"$filter={expr}", {"ConsistencyLevel":
                                                "eventual"}),
                           (f"$filter={expr}&$count=true", None)):
        reply = get(fc, tok, "/v1.0/users?" + query, headers)
        assert_directory_error(reply, 400, "Request_UnsupportedQuery", text)
    reply = get(fc, tok, f"/v1.0/users?$filter={expr}&$count=true"
                         f"&$select=id,displayName",
                {"ConsistencyLevel": "eventual"})
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["@odata.count"] == 1
    assert body["value"] == [{"displayName": "User 3", "id": uid(3)}]
    reply = get(fc, tok, f"/v1.0/users?$filter={expr}&$count=true",
                {"ConsistencyLevel": "eventual"})
    assert reply.json()["@odata.count"] == 1


def test_delete_restore_round_trip_in_delta(fc):
    tok = token(fc)
    _, link = read_round(fc, tok, "/v1.0/users/delta?$select=displayName")
    reply = call(fc, tok, "DELETE", f"/v1.0/users/{uid(2)}")
    assert (reply.status, reply.body) == (204, b"")
    assert_directory_error(get(fc, tok, f"/v1.0/users/{uid(2)}"), 404,
                           "Request_ResourceNotFound")
    assert_directory_error(call(fc, tok, "DELETE", f"/v1.0/users/{uid(2)}"),
                           404, "Request_ResourceNotFound")
    assert uid(2) not in [u["id"] for u in
                          get(fc, tok, "/v1.0/users").json()["value"]]
    reply = get(fc, tok, "/v1.0/directory/deletedItems/microsoft.graph.user"
                         "?$select=id,displayName,deletedDateTime")
    body = reply.json()
    assert body["@odata.context"] == (f"{fc.graph_url}/v1.0/$metadata#users"
                                      f"(displayName,deletedDateTime)")
    [item] = body["value"]
    assert item["id"] == uid(2)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
                        item["deletedDateTime"])
    pages, link = read_round(fc, tok, link)
    assert items(pages) == [{"id": uid(2), "@removed": {"reason": "changed"}}]

    reply = call(fc, tok, "POST",
                 f"/v1.0/directory/deletedItems/{uid(2)}/restore")
    assert reply.status == 200, reply.body
    body = reply.json()
    documented = fixture("deleteditems-restore-response.json")
    assert list(body)[:3] == list(documented)[:3]
    assert body["@odata.context"] == documented["@odata.context"].replace(
        "https://graph.microsoft.com", fc.graph_url)
    assert body["@odata.type"] == "#microsoft.graph.user"
    assert body["id"] == uid(2) and body["displayName"] == "User 2"
    assert get(fc, tok, f"/v1.0/users/{uid(2)}").status == 200
    pages, link = read_round(fc, tok, link)
    assert items(pages) == [{"displayName": "User 2", "id": uid(2)}]
    # Unknown or live ids are not deleted items.
    for oid in (uid(999), uid(3)):
        reply = call(fc, tok, "POST",
                     f"/v1.0/directory/deletedItems/{oid}/restore")
        assert_directory_error(reply, 404, "Request_ResourceNotFound")
    # Permanent delete: 204, gone for good.
    call(fc, tok, "DELETE", f"/v1.0/users/{uid(2)}")
    reply = call(fc, tok, "DELETE", f"/v1.0/directory/deletedItems/{uid(2)}")
    assert (reply.status, reply.body) == (204, b"")
    pages, _ = read_round(fc, tok, link)
    assert items(pages) == [{"id": uid(2), "@removed": {"reason": "deleted"}}]
    reply = call(fc, tok, "POST",
                 f"/v1.0/directory/deletedItems/{uid(2)}/restore")
    assert_directory_error(reply, 404, "Request_ResourceNotFound")
    assert get(fc, tok, "/v1.0/directory/deletedItems/microsoft.graph.user"
               ).json()["value"] == []


def test_restore_with_taken_address(fc):
    tok = token(fc)
    call(fc, tok, "DELETE", f"/v1.0/users/{uid(1)}")
    assert patch(fc, tok, uid(2), {"mail": "user1@contoso.com"}).status == 204
    url = f"/v1.0/directory/deletedItems/{uid(1)}/restore"
    reply = call(fc, tok, "POST", url)
    error = reply.json()["error"]
    assert reply.status == 400
    assert [d["code"] for d in error["details"]] == ["ObjectConflict",
                                                     "ConflictingObjects"]
    assert error["details"][1]["target"] == f"User_{uid(2)}"
    reply = call(fc, tok, "POST", url, {"autoReconcileProxyConflict": True})
    assert reply.status == 200, reply.body
    assert reply.json()["mail"] is None
    assert fc.user(TENANT, uid(1))["deleted"] is None


def test_replication_lag(fc):
    tok = token(fc)
    # Long enough that nothing below races it; shortened afterwards (the
    # lag counts from the invitation with the knob's current value).
    fc.set_knobs(replication_lag_ms=60000)
    guest_id = invite(fc, tok, "slow@partner.example").json()[
        "invitedUser"]["id"]
    reply = get(fc, tok, f"/v1.0/users/{guest_id}")
    error = assert_directory_error(reply, 404, "Request_ResourceNotFound")
    assert NOT_FOUND.match(error["message"]) and guest_id in error["message"]
    assert_directory_error(patch(fc, tok, guest_id, {"jobTitle": "x"}), 404,
                           "Request_ResourceNotFound")
    assert_directory_error(call(fc, tok, "DELETE", f"/v1.0/users/{guest_id}"),
                           404, "Request_ResourceNotFound")
    # Re-inviting meanwhile finds the same user (do not create again).
    again = invite(fc, tok, "slow@partner.example").json()
    assert again["invitedUser"]["id"] == guest_id
    fc.set_knobs(replication_lag_ms=200)
    wait_for(lambda: get(fc, tok, f"/v1.0/users/{guest_id}").status == 200,
             timeout=5, what="the guest to replicate")
    assert patch(fc, tok, guest_id, {"jobTitle": "x"}).status == 204
    # Users made otherwise have no lag.
    assert get(fc, tok, f"/v1.0/users/{uid(1)}").status == 200


def test_fail_patch_for(fc):
    tok = token(fc)
    fc.set_knobs(fail_patch_for=[uid(1), "USER2@contoso.com"])
    for user_id in (uid(1), uid(2)):
        reply = patch(fc, tok, user_id, {"jobTitle": "x"})
        assert_directory_error(reply, 403, "Authorization_RequestDenied",
                               "Insufficient privileges to complete the "
                               "operation.")
        assert fc.user(TENANT, user_id)["jobTitle"] == "Engineer"
        assert get(fc, tok, f"/v1.0/users/{user_id}").status == 200
    assert patch(fc, tok, uid(3), {"jobTitle": "x"}).status == 204


def test_stats_count_graph_requests_by_kind(fc):
    tok = token(fc)
    zero = {"invitations": 0, "patches": 0, "deletes": 0, "restores": 0,
            "reads": 0, "exchange": {}, "exchange_in_progress": 0,
            "limits": {}}
    assert fc.stats(TENANT) == zero
    get(fc, tok, "/v1.0/users/delta")
    get(fc, tok, f"/v1.0/users/{uid(1)}")
    get(fc, tok, f"/v1.0/users/{uid(999)}")                # 404 counts
    invite(fc, tok, "s@partner.example")
    invite(fc, tok, "user1@contoso.com")                   # 400 counts
    patch(fc, tok, uid(1), {"jobTitle": "x"})
    patch(fc, tok, uid(1), {"bogus": "x"})
    call(fc, tok, "DELETE", f"/v1.0/users/{uid(2)}")
    call(fc, tok, "POST", f"/v1.0/directory/deletedItems/{uid(2)}/restore")
    call(fc, tok, "DELETE", f"/v1.0/users/{uid(2)}")
    call(fc, tok, "DELETE", f"/v1.0/directory/deletedItems/{uid(2)}")
    get(fc, None, "/v1.0/users")             # no token: no tenant, no count
    stats = fc.stats(TENANT)
    # Directory writes by app (test_limits.py covers these counters).
    assert stats.pop("limits")[APP]["writes"] == 8
    assert stats == {"invitations": 2, "patches": 2, "deletes": 3,
                     "restores": 1, "reads": 3, "exchange": {},
                     "exchange_in_progress": 0}
    assert fc.stats(DOMAIN) == fc.stats(TENANT)
    assert fc.stats(TENANT2) == zero
    with pytest.raises(FakeCloudError) as err:
        fc.stats("nope.example")
    assert err.value.status == 404


def test_touch_after_makes_its_file_once(fc, tmp_path):
    """touch_after: the file exists once the counted request is answered
    (it is made before the answer), only when the count is reached, and
    only once; answers are unchanged."""
    path = str(tmp_path / "fault-on")
    tok = token(fc)
    fc.set_knobs(touch_after={"stat": "invitations", "count": 2,
                              "path": path})
    assert invite(fc, tok, "a@partner.example").status == 201
    assert not os.path.exists(path)
    assert invite(fc, tok, "b@partner.example").status == 201
    assert os.path.exists(path)
    os.unlink(path)
    assert invite(fc, tok, "c@partner.example").status == 201
    assert not os.path.exists(path)
    # Exchange cmdlets count by name.
    fc.set_knobs(touch_after={"stat": "Get-Recipient", "count": 1,
                              "path": path})
    etok = token(fc, scope=EXCHANGE_SCOPE)
    assert invoke(fc, etok, "Get-Recipient").status == 200
    assert os.path.exists(path)
    for bad in ({"stat": "invitations", "count": 0, "path": path},
                {"stat": "invitations", "count": 1, "path": "relative"},
                {"stat": "invitations", "count": 1},
                {"stat": "exchange", "count": 1, "path": path}, "x"):
        with pytest.raises(FakeCloudError) as err:
            fc.set_knobs(touch_after=bad)
        assert err.value.status == 400
    fc.set_knobs(touch_after=None)


def test_admin_contacts(fc):
    contact = fc.create_contact(TENANT, {"id": uid(70), "displayName": "PC",
                                         "mail": "pc@partner.example"})
    assert contact == {"id": uid(70), "displayName": "PC",
                       "mail": "pc@partner.example",
                       "proxyAddresses": ["SMTP:pc@partner.example"]}
    assert fc.contacts(TENANT) == [contact]
    with pytest.raises(FakeCloudError) as err:
        fc.create_contact(TENANT, {"id": uid(70), "mail": "x@y.example"})
    assert err.value.status == 409
    etok = token(fc, scope=EXCHANGE_SCOPE)
    [recipient] = invoke(fc, etok, "Get-Recipient", {
        "RecipientTypeDetails": "MailContact"}).json()["value"]
    assert recipient["PrimarySmtpAddress"] == "pc@partner.example"
    fc.delete_contact(TENANT, uid(70))
    assert fc.contacts(TENANT) == []
    with pytest.raises(FakeCloudError) as err:
        fc.delete_contact(TENANT, uid(70))
    assert err.value.status == 404


def test_admin_user_view_keys(fc):
    user = fc.user(TENANT, uid(1))
    for key in ("showInAddressList", "creationType", "externalUserState",
                "onPremisesExtensionAttributes", "deleted"):
        assert key in user and user[key] is None
    # Listing it through the admin API does not make properties "set":
    # users/delta still leaves never-set ones out.
    pages, _ = read_round(fc, token(fc), "/v1.0/users/delta"
                                         "?$select=showInAddressList,mail")
    assert "showInAddressList" not in by_id(pages)[uid(1)]


# --------------------------------------------------------------------------
# Exchange admin API
# --------------------------------------------------------------------------

def invoke(fc, tok, name, params=None, tenant=TENANT, url=None, headers=None):
    url = url or f"{fc.exchange_url}/adminapi/beta/{tenant}/InvokeCommand"
    body = {"CmdletInput": {"CmdletName": name, "Parameters": params or {}}}
    hdrs = {"Authorization": "Bearer " + tok, "X-ResponseFormat": "json",
            "X-AnchorMailbox": "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-"
                               f"d53741dc928c}}@{tenant}"}
    hdrs.update(headers or {})
    return fc.request("POST", url, json_body=body, headers=hdrs)


def test_exchange_get_recipient(fc):
    fc.create_user(TENANT, {"id": uid(50), "displayName": "Guest Person",
                            "mail": "guest@partner.example",
                            "userType": "Guest",
                            "creationType": "Invitation"})
    tok = token(fc, scope=EXCHANGE_SCOPE)
    reply = invoke(fc, tok, "Get-Recipient")
    assert reply.status == 200, reply.body
    body = reply.json()
    assert list(body) == ["@odata.context", "adminapi.warnings@odata.type",
                          "@adminapi.warnings", "value"]
    assert body["@odata.context"] == (
        f"{fc.exchange_url}/adminapi/beta/{TENANT}/$metadata"
        f"#Collection(Exchange.GenericHashTable)")
    assert len(body["value"]) == 6
    for name in ("Rate-Limit-Limit", "Rate-Limit-Remaining",
                 "Rate-Limit-Reset"):
        assert reply.header(name)
    guest = next(r for r in body["value"] if r["ExternalDirectoryObjectId"]
                 == uid(50))
    assert guest["RecipientTypeDetails"] == "GuestMailUser"
    assert guest["HiddenFromAddressListsEnabled"] is True

    reply = invoke(fc, tok, "get-recipient", {"Identity": "user3@contoso.com"},
                   tenant=DOMAIN)
    assert [r["Identity"] for r in reply.json()["value"]] == [uid(3)]

    reply = invoke(fc, tok, "Get-Recipient", {"Identity": "nobody@x.example"})
    assert reply.status == 404
    error = reply.json()["error"]
    assert error["code"] == "NotFound"
    err_id, exc, text = error["details"][0]["message"].split("|")
    assert err_id == "Ex6F9304"
    assert exc.endswith("ManagementObjectNotFoundException")
    assert "nobody@x.example" in text

    reply = invoke(fc, tok, "Get-Recipient", {"ResultSize": 2},
                   headers={"Prefer": "odata.maxpagesize=1"})
    body = reply.json()
    assert len(body["value"]) == 1 and body["@adminapi.warnings"]
    reply = invoke(fc, tok, "Get-Recipient", url=body["@odata.nextLink"])
    assert len(reply.json()["value"]) == 1
    assert "@odata.nextLink" not in reply.json()


def test_exchange_errors_and_auth(fc):
    tok = token(fc, scope=EXCHANGE_SCOPE)
    reply = invoke(fc, tok, "Get-Nothing")
    assert reply.status == 400
    parts = reply.json()["error"]["details"][0]["message"].split("|")
    assert len(parts) == 3 and "Get-Nothing" in parts[2]
    reply = invoke(fc, tok, "Get-Recipient", {"Bogus": 1})
    assert reply.status == 400
    # A token of one tenant does not open another tenant's path.
    assert invoke(fc, tok, "Get-Recipient", tenant=TENANT2).status == 401
    assert invoke(fc, "junk", "Get-Recipient").status == 401


def exo_error_parts(reply, status):
    """Asserts the observed Exchange error shape; returns (id, exception
    type, text) of details[0].message."""
    assert reply.status == status, reply.body
    error = reply.json()["error"]
    assert error["message"] == "Error executing cmdlet"
    assert error["details"][0]["code"] == "Client"
    assert error["details"][0]["target"] == ""
    assert "innererror" in error and "innerError" not in error
    err_id, exc, text = error["details"][0]["message"].split("|", 2)
    assert re.fullmatch(r"Ex[0-9A-F]{6}", err_id)
    return err_id, exc, text


def new_contact(fc, tok, name, address, **extra):
    params = {"Name": name, "ExternalEmailAddress": address}
    params.update(extra)
    return invoke(fc, tok, "New-MailContact", params)


def test_exchange_token_audience(fc):
    gtok = token(fc)
    assert invoke(fc, gtok, "Get-MailContact").status == 401
    etok = token(fc, scope=EXCHANGE_SCOPE)
    reply = invoke(fc, etok, "Get-MailContact", tenant=TENANT2)
    assert reply.status == 401 and reply.header("WWW-Authenticate")
    assert invoke(fc, etok, "Get-MailContact", tenant=DOMAIN).status == 200


def test_mail_contact_round_trip(fc):
    tok = token(fc, scope=EXCHANGE_SCOPE)
    reply = new_contact(fc, tok, "Ann Partner", "SMTP:ann@partner.example",
                        DisplayName="Ann P.", FirstName="Ann",
                        LastName="Partner")
    assert reply.status == 200, reply.body
    [made] = reply.json()["value"]
    assert made["RecipientTypeDetails"] == "MailContact"
    assert made["Name"] == "Ann Partner" and made["Alias"] == "AnnPartner"
    assert made["DisplayName"] == "Ann P."
    assert made["ExternalEmailAddress"] == "SMTP:ann@partner.example"
    assert made["EmailAddresses"] == ["SMTP:ann@partner.example"]
    assert made["HiddenFromAddressListsEnabled"] is False
    cid = made["ExternalDirectoryObjectId"]

    reply = invoke(fc, tok, "Set-Contact", {
        "Identity": "Ann Partner", "Company": "Partner Inc",
        "Department": "Sales", "Title": "Boss", "Phone": "+1 555",
        "MobilePhone": "+1 556", "Office": "HQ", "StreetAddress": "1 Road",
        "City": "Town", "StateOrProvince": "ST", "PostalCode": "12345",
        "CountryOrRegion": "US"})
    assert reply.status == 200 and reply.json()["value"] == []
    reply = invoke(fc, tok, "Set-MailContact", {
        "Identity": "ann@partner.example",
        "HiddenFromAddressListsEnabled": True,
        "CustomAttribute15": "galbridge:abc",
        "EmailAddresses": {"@odata.type": "#Exchange.GenericHashTable",
                           "Add": ["smtp:ann2@partner.example"]}})
    assert reply.status == 200, reply.body
    [got] = invoke(fc, tok, "Get-Contact", {"Identity": cid}).json()["value"]
    assert (got["Company"], got["Department"], got["Title"], got["Phone"],
            got["MobilePhone"], got["Office"], got["StreetAddress"],
            got["City"], got["StateOrProvince"], got["PostalCode"],
            got["CountryOrRegion"]) == (
        "Partner Inc", "Sales", "Boss", "+1 555", "+1 556", "HQ", "1 Road",
        "Town", "ST", "12345", "US")
    assert got["HiddenFromAddressListsEnabled"] is True
    assert got["CustomAttribute15"] == "galbridge:abc"
    assert got["EmailAddresses"] == ["SMTP:ann@partner.example",
                                     "smtp:ann2@partner.example"]
    # The same object in Graph (orgContact) and in the admin recipients.
    gtok = token(fc)
    body = get(fc, gtok, f"/v1.0/contacts/{cid}").json()
    assert body["mail"] == "ann@partner.example"
    assert body["companyName"] == "Partner Inc"
    assert "smtp:ann2@partner.example" in body["proxyAddresses"]
    assert [c["id"] for c in get(fc, gtok, "/v1.0/contacts").json()
            ["value"]] == [cid]
    [rec] = [r for r in fc.recipients(TENANT)
             if r["RecipientTypeDetails"] == "MailContact"]
    assert rec["CustomAttribute15"] == "galbridge:abc"
    # Remove, then it is gone everywhere.
    reply = invoke(fc, tok, "Remove-MailContact", {"Identity": cid,
                                                   "Confirm": False})
    assert reply.status == 200, reply.body
    _, exc, text = exo_error_parts(
        invoke(fc, tok, "Get-MailContact", {"Identity": cid}), 404)
    assert exc.endswith(".ManagementObjectNotFoundException")
    assert cid in text
    assert get(fc, gtok, f"/v1.0/contacts/{cid}").status == 404
    assert fc.stats(TENANT)["exchange"] == {
        "New-MailContact": 1, "Set-Contact": 1, "Set-MailContact": 1,
        "Get-Contact": 1, "Remove-MailContact": 1, "Get-MailContact": 1}


def test_mail_contact_validation(fc):
    tok = token(fc, scope=EXCHANGE_SCOPE)
    _, exc, text = exo_error_parts(
        invoke(fc, tok, "New-MailContact", {"Name": "x"}), 400)
    assert exc.endswith("ParameterBindingException")
    assert "ExternalEmailAddress" in text
    _, exc, text = exo_error_parts(
        new_contact(fc, tok, "n" * 65, "long@partner.example"), 400)
    assert "maximum allowed length" in text and '"64"' in text
    assert new_contact(fc, tok, "n" * 64, "ok@partner.example").status == 200
    _, exc, _ = exo_error_parts(
        new_contact(fc, tok, "Bad", "not-an-address"), 400)
    _, exc, _ = exo_error_parts(
        invoke(fc, tok, "Set-MailContact", {"Identity": "Bad",
                                            "Bogus": 1}), 400)
    assert exc.endswith("ParameterBindingException")


def test_exchange_uniqueness_across_recipients(fc):
    tok = token(fc, scope=EXCHANGE_SCOPE)
    gtok = token(fc)
    guest = invite(fc, gtok, "g@partner.example").json()["invitedUser"]["id"]
    fc.create_group(TENANT, {"displayName": "Team", "mail":
                             "team@contoso.com"})
    assert new_contact(fc, tok, "C1", "c1@partner.example").status == 200
    assert invoke(fc, tok, "New-MailUser", {
        "Name": "MU1", "ExternalEmailAddress": "mu1@partner.example"}
    ).status == 200
    for address, holder in (("user1@contoso.com", uid(1)),
                            ("G@partner.example", guest),
                            ("team@contoso.com", "Team"),
                            ("c1@partner.example", "C1"),
                            ("mu1@partner.example", "MU1")):
        for reply in (new_contact(fc, tok, "Other", address),
                      invoke(fc, tok, "New-MailUser", {
                          "Name": "Other", "ExternalEmailAddress": address})):
            _, exc, text = exo_error_parts(reply, 400)
            assert exc.endswith(".ProxyAddressExistsException")
            assert text == (f'The proxy address "SMTP:{address}" is already '
                            f'being used by the proxy addresses or '
                            f'LegacyExchangeDN of "{holder}". Please choose '
                            f'another proxy address.')
    # Adding a taken address to an existing recipient is refused too.
    _, exc, _ = exo_error_parts(invoke(fc, tok, "Set-MailContact", {
        "Identity": "C1", "EmailAddresses": {
            "@odata.type": "#Exchange.GenericHashTable",
            "Add": ["smtp:user2@contoso.com"]}}), 400)
    assert exc.endswith(".ProxyAddressExistsException")
    # Names are unique among recipients, whatever their kind.
    for name in ("C1", "mu1", uid(2)):
        _, exc, text = exo_error_parts(
            new_contact(fc, tok, name, "fresh@partner.example"), 400)
        assert exc.endswith(".ADObjectAlreadyExistsException")
        assert "already exists" in text
    # Graph sees the Exchange-made addresses as taken as well.
    reply = patch(fc, gtok, uid(3), {"mail": "c1@partner.example"})
    assert reply.status == 400
    assert reply.json()["error"]["details"][1]["target"].startswith(
        "Contact_")
    body = invite(fc, gtok, "c1@partner.example").json()
    user = fc.user(TENANT, body["invitedUser"]["id"])
    assert user["mail"] is None


def test_mail_user_round_trip(fc):
    tok = token(fc, scope=EXCHANGE_SCOPE)
    reply = invoke(fc, tok, "New-MailUser", {
        "Name": "Bob Ext", "ExternalEmailAddress": "bob@partner.example",
        "FirstName": "Bob", "LastName": "Ext"})
    assert reply.status == 200, reply.body
    [made] = reply.json()["value"]
    assert made["RecipientType"] == "MailUser"
    assert made["RecipientTypeDetails"] == "MailUser"
    assert made["ExternalEmailAddress"] == "SMTP:bob@partner.example"
    oid = made["ExternalDirectoryObjectId"]
    # In Graph: a Member user without sign-in (DisabledUser parameter set).
    user = fc.user(TENANT, oid)
    assert user["userType"] == "Member" and user["accountEnabled"] is False
    assert user["mail"] == "bob@partner.example"
    assert user["userPrincipalName"] == f"BobExt@{DOMAIN}"
    # Password without MicrosoftOnlineServicesID: no parameter set fits.
    _, exc, text = exo_error_parts(invoke(fc, tok, "New-MailUser", {
        "Name": "Pw", "ExternalEmailAddress": "pw@partner.example",
        "Password": "x"}), 400)
    assert "Parameter set cannot be resolved" in text
    reply = invoke(fc, tok, "New-MailUser", {
        "Name": "Pw", "ExternalEmailAddress": "pw@partner.example",
        "Password": "x", "MicrosoftOnlineServicesID": f"pw@{DOMAIN}"})
    assert reply.status == 200, reply.body
    pw = fc.user(TENANT, reply.json()["value"][0]["ExternalDirectoryObjectId"])
    assert pw["accountEnabled"] is True and pw["userPrincipalName"] == \
        f"pw@{DOMAIN}"

    assert invoke(fc, tok, "Set-User", {
        "Identity": "Bob Ext", "Company": "Partner", "Title": "CTO",
        "Phone": "+1 1"}).status == 200
    assert invoke(fc, tok, "Set-MailUser", {
        "Identity": "BobExt", "CustomAttribute15": "anchor",
        "HiddenFromAddressListsEnabled": "$true"}).status == 200
    user = fc.user(TENANT, oid)
    assert (user["companyName"], user["jobTitle"], user["businessPhones"]) \
        == ("Partner", "CTO", ["+1 1"])
    assert user["onPremisesExtensionAttributes"]["extensionAttribute15"] == \
        "anchor"
    assert user["showInAddressList"] is False
    [got] = invoke(fc, tok, "Get-MailUser", {"Identity": oid}).json()["value"]
    assert got["HiddenFromAddressListsEnabled"] is True
    assert got["CustomAttribute15"] == "anchor" and got["Title"] == "CTO"
    [got] = invoke(fc, tok, "Get-User", {"Identity": "bob@partner.example"}
                   ).json()["value"]
    assert got["Company"] == "Partner"
    # Set-MailUser only finds mail users, not mailboxes.
    _, exc, _ = exo_error_parts(invoke(fc, tok, "Set-MailUser", {
        "Identity": "user1@contoso.com", "CustomAttribute1": "x"}), 404)
    assert exc.endswith(".ManagementObjectNotFoundException")
    assert invoke(fc, tok, "Remove-MailUser", {"Identity": oid,
                                               "Confirm": False}).status == 200
    assert fc.user(TENANT, oid)["deleted"] == "soft"
    exo_error_parts(invoke(fc, tok, "Get-MailUser", {"Identity": oid}), 404)


def test_exchange_identity_forms(fc):
    tok = token(fc, scope=EXCHANGE_SCOPE)
    [made] = new_contact(fc, tok, "Id Form", "idf@partner.example",
                         Alias="idalias").json()["value"]
    for identity in ("Id Form", "idalias", made["DistinguishedName"],
                     made["Guid"], made["ExternalDirectoryObjectId"],
                     "idf@partner.example", "SMTP:IDF@partner.example"):
        reply = invoke(fc, tok, "Get-MailContact", {"Identity": identity})
        assert reply.status == 200, (identity, reply.body)
        assert reply.json()["value"][0]["Name"] == "Id Form"
    assert made["DistinguishedName"].startswith(f"CN=Id Form,OU={DOMAIN},")
    assert made["Guid"] != made["ExternalDirectoryObjectId"]
    exo_error_parts(invoke(fc, tok, "Set-Contact", {"Identity": "nobody",
                                                    "City": "x"}), 404)


def test_exchange_filter_and_result_size(fc):
    tok = token(fc, scope=EXCHANGE_SCOPE)
    for n in range(4):
        new_contact(fc, tok, f"F{n}", f"f{n}@partner.example")
    invoke(fc, tok, "Set-MailContact", {"Identity": "F1",
                                        "CustomAttribute15": "it's"})
    invoke(fc, tok, "Set-MailContact", {"Identity": "F2",
                                        "CustomAttribute15": "other"})

    def names(flt, cmd="Get-MailContact", **extra):
        params = {"Filter": flt}
        params.update(extra)
        reply = invoke(fc, tok, cmd, params)
        assert reply.status == 200, reply.body
        return sorted(v["Name"] for v in reply.json()["value"])

    assert names("CustomAttribute15 -eq 'it''s'") == ["F1"]
    assert names("ExternalEmailAddress -eq 'f3@partner.example'") == ["F3"]
    assert names("EmailAddresses -eq 'smtp:F0@partner.example'") == ["F0"]
    assert names("(CustomAttribute15 -eq 'other') -or (Name -like 'F3*')") \
        == ["F2", "F3"]
    assert names("CustomAttribute15 -ne $null -and -not (Name -eq 'F2')") \
        == ["F1"]
    assert names("CustomAttribute15 -eq 'it''s'", "Get-Contact") == ["F1"]
    assert names("EmailAddresses -eq 'smtp:user1@contoso.com'",
                 "Get-User") == [uid(1)]
    _, exc, text = exo_error_parts(invoke(fc, tok, "Get-MailContact", {
        "Filter": "Name -eq"}), 400)
    assert "Filter" in text
    reply = invoke(fc, tok, "Get-MailContact", {"ResultSize": 3})
    body = reply.json()
    assert len(body["value"]) == 3 and body["@adminapi.warnings"]
    reply = invoke(fc, tok, "Get-MailContact", {"ResultSize": "Unlimited"})
    assert len(reply.json()["value"]) == 4


def test_exchange_paging_post_same_body(fc):
    tok = token(fc, scope=EXCHANGE_SCOPE)
    for n in range(5):
        new_contact(fc, tok, f"P{n}", f"p{n}@partner.example")
    seen, url, pages = [], None, 0
    while True:
        reply = invoke(fc, tok, "Get-MailContact", url=url,
                       headers={"X-Prefer": "odata.maxpagesize=2"})
        assert reply.status == 200, reply.body
        body = reply.json()
        seen += [v["Name"] for v in body["value"]]
        pages += 1
        url = body.get("@odata.nextLink")
        if url is None:
            break
        assert url.startswith(f"{fc.exchange_url}/adminapi/beta/{TENANT}/"
                              f"InvokeCommand?")
    assert pages == 3 and sorted(seen) == [f"P{n}" for n in range(5)]


def test_guest_mail_user_after_provisioning_delay(fc):
    tok = token(fc, scope=EXCHANGE_SCOPE)
    gtok = token(fc)
    fc.set_knobs(exo_guest_provisioning_ms=600000)
    guest = invite(fc, gtok, "late@partner.example").json()["invitedUser"]
    _, exc, _ = exo_error_parts(invoke(fc, tok, "Get-MailUser", {
        "Identity": "late@partner.example"}), 404)
    assert exc.endswith(".ManagementObjectNotFoundException")
    assert all(r["ExternalDirectoryObjectId"] != guest["id"]
               for r in fc.recipients(TENANT))
    fc.set_knobs(exo_guest_provisioning_ms=0)
    [got] = invoke(fc, tok, "Get-MailUser", {
        "Identity": "late@partner.example"}).json()["value"]
    assert got["RecipientTypeDetails"] == "GuestMailUser"
    assert got["HiddenFromAddressListsEnabled"] is True
    # One object: unhiding in Exchange shows in Graph's showInAddressList.
    assert invoke(fc, tok, "Set-MailUser", {
        "Identity": guest["id"], "HiddenFromAddressListsEnabled": False}
    ).status == 200
    body = get(fc, gtok, f"/beta/users/{guest['id']}?$select="
                         f"showInAddressList").json()
    assert body["showInAddressList"] is True
    [got] = invoke(fc, tok, "Get-MailUser", {"Identity": guest["id"]}
                   ).json()["value"]
    assert got["HiddenFromAddressListsEnabled"] is False


def test_exchange_rate_limit_headers_and_429(fc):
    tok = token(fc, scope=EXCHANGE_SCOPE)
    for reply in (invoke(fc, tok, "Get-MailContact"),
                  invoke(fc, tok, "Get-MailContact", {"Identity": "none"})):
        assert reply.header("Rate-Limit-Limit") == "30000"
        assert int(reply.header("Rate-Limit-Remaining")) < 30000
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z",
                            reply.header("Rate-Limit-Reset"))
    fc.set_knobs(exo_rate_limit=1)
    statuses = [invoke(fc, tok, "Get-MailContact") for _ in range(3)]
    refused = [r for r in statuses if r.status == 429]
    assert refused and int(refused[0].header("Retry-After")) >= 1
    assert refused[0].header("Rate-Limit-Limit")
    # Another tenant has its own budget.
    tok2 = fc.access_token(TENANT2, APP2, SECRET, EXCHANGE_SCOPE)
    assert invoke(fc, tok2, "Get-MailContact", tenant=TENANT2).status == 200


def test_exchange_max_concurrent(fc):
    tok = token(fc, scope=EXCHANGE_SCOPE)
    fc.set_knobs(exo_max_concurrent=1, latency_ms=1000)
    url = f"{fc.exchange_url}/adminapi/beta/{TENANT}/InvokeCommand"
    body = json.dumps({"CmdletInput": {"CmdletName": "Get-MailContact",
                                       "Parameters": {}}})
    result = {}

    def slow():
        conn = http.client.HTTPSConnection("127.0.0.1",
                                           urllib.parse.urlsplit(url).port,
                                           context=fc.ssl_context(),
                                           timeout=30)
        conn.request("POST", urllib.parse.urlsplit(url).path, body=body,
                     headers={"Authorization": "Bearer " + tok,
                              "Content-Type": "application/json"})
        result["status"] = conn.getresponse().status
        conn.close()

    thread = threading.Thread(target=slow)
    thread.start()
    try:
        wait_for(lambda: fc.stats(TENANT)["exchange_in_progress"] == 1)
        reply = invoke(fc, tok, "Get-MailContact")
        assert reply.status == 429
        assert reply.header("Content-Type").startswith("text/plain")
        assert reply.body.decode() == (
            "You have reached the maximum number of concurrent requests per "
            "tenant. Please wait and try again.")
        fc.set_knobs(latency_ms=0)
    finally:
        thread.join()
    assert result["status"] == 200
    assert fc.stats(TENANT)["exchange_in_progress"] == 0
    assert invoke(fc, tok, "Get-MailContact").status == 200


# --------------------------------------------------------------------------
# admin API, request log
# --------------------------------------------------------------------------

def test_admin_users(fc):
    created = fc.create_user(TENANT, {"displayName": "Grace Hopper",
                                      "mailNickname": "grace"})
    assert created["userPrincipalName"] == "grace@" + DOMAIN
    assert created["userType"] == "Member"
    assert created["accountEnabled"] is True
    assert created["creationType"] is None
    assert created["deleted"] is None
    with pytest.raises(FakeCloudError) as err:
        fc.create_user(TENANT, {"id": uid(1)})
    assert err.value.status == 409
    patched = fc.patch_user(TENANT, created["id"], {
        "jobTitle": "Admiral", "onPremisesExtensionAttributes":
        {"extensionAttribute15": "galbridge:x:y"}})
    assert patched["jobTitle"] == "Admiral"
    patched = fc.patch_user(TENANT, created["id"], {
        "jobTitle": None, "onPremisesExtensionAttributes":
        {"extensionAttribute1": "a"}})
    assert patched["jobTitle"] is None
    assert patched["onPremisesExtensionAttributes"] == {
        "extensionAttribute15": "galbridge:x:y", "extensionAttribute1": "a"}
    fc.delete_user(TENANT, uid(1))
    fc.delete_user(TENANT, uid(2), hard=True)
    states = {u["id"]: u["deleted"] for u in fc.users(TENANT)}
    assert states[uid(1)] == "soft" and states[uid(2)] == "hard"
    assert states[uid(3)] is None
    assert fc.restore_user(TENANT, uid(1))["deleted"] is None
    with pytest.raises(FakeCloudError) as err:
        fc.restore_user(TENANT, uid(2))
    assert err.value.status == 400
    with pytest.raises(FakeCloudError) as err:
        fc.user(TENANT, uid(999))
    assert err.value.status == 404


def test_admin_groups(fc):
    group = fc.create_group(TENANT, {"displayName": "Team",
                                     "members": [uid(1), uid(2)]})
    gid = group["id"]
    assert fc.patch_group(TENANT, gid, add=[uid(3)], remove=[uid(1)]
                          )["members"] == [uid(2), uid(3)]
    assert fc.patch_group(TENANT, gid, members=[uid(4)])["members"] == \
        [uid(4)]
    with pytest.raises(FakeCloudError) as err:
        fc.patch_group(TENANT, gid, add=[uid(999)])
    assert err.value.status == 400
    assert [g["id"] for g in fc.groups(TENANT)] == [gid]


def test_admin_knobs(fc):
    knobs = fc.knobs()
    assert knobs == {"delta_page_size": 200, "token_lifetime": 3599,
                     "delta_duplicates": 0, "delta_empty_pages": 0,
                     "expire_delta_tokens": None, "latency_ms": 0,
                     "revoke_tokens": False, "replication_lag_ms": 0,
                     "fail_patch_for": [], "exo_cmdlets_denied": [],
                     "enforce_invitation_limit": False,
                     "exo_guest_provisioning_ms": 0, "exo_rate_limit": 0,
                     "exo_max_concurrent": 0, "enforce_limits": False,
                     "time_factor": 1, "limit_app_writes": 3000,
                     "limit_tenant_writes": 18000, "limit_invitations": 150,
                     "limit_app_units": None, "limit_model": "bucket",
                     "limit_other_app_share": 0,
                     "throttle_grace_ms": 100,
                     "batch_inner_429": 0, "batch_inner_retry_after": 1,
                     "throttle_write_fraction": 0,
                     "throttle_read_fraction": 0, "faults": [],
                     "login_down_ms": 0, "touch_after": None,
                     "policy_partners_page_size": 100,
                     "exo_cmdlets_denied": [],
                     "photo_absent": "404", "photo_write_forbidden": False}
    assert fc.set_knobs(delta_page_size=7)["delta_page_size"] == 7
    for bad in ({"no_such_knob": 1}, {"delta_page_size": 0},
                {"expire_delta_tokens": "later"}, {"revoke_tokens": 1},
                {"latency_ms": -1}, {"replication_lag_ms": -1},
                {"fail_patch_for": "x@y.example"}, {"fail_patch_for": [1]},
                {"enforce_invitation_limit": "yes"},
                {"exo_rate_limit": -1}, {"exo_max_concurrent": "2"},
                {"exo_guest_provisioning_ms": True},
                {"policy_partners_page_size": 0},
                {"photo_absent": "200"}, {"photo_write_forbidden": "yes"}):
        with pytest.raises(FakeCloudError) as err:
            fc.set_knobs(**bad)
        assert err.value.status == 400
    fc.reset()
    assert fc.knobs()["delta_page_size"] == 200
    assert fc.tenants() == []


def test_latency_knob_delays_answers(fc):
    tok = token(fc)
    fc.set_knobs(latency_ms=300)
    try:
        t0 = time.monotonic()
        assert get(fc, tok, "/v1.0/users/delta").status == 200
        assert time.monotonic() - t0 >= 0.3
        # The admin API is never slowed.
        t0 = time.monotonic()
        fc.health()
        assert time.monotonic() - t0 < 0.3
    finally:
        fc.set_knobs(latency_ms=0)


def test_request_log(fc):
    fc.clear_log()
    # The log keeps every request, admin ones too (this clear included).
    assert [e["service"] for e in fc.log()] == ["admin"]
    tok = token(fc)
    assertion = make_client_assertion(CERT_KEY, CERT_PEM, CERT_APP,
                                      fc.token_url(TENANT))
    fc.get_token(TENANT, CERT_APP, assertion=assertion)
    fc.get_token(DOMAIN, APP, secret="wrong-secret")
    get(fc, tok, "/v1.0/users/delta?$select=displayName")
    get(fc, None, "/v1.0/users/delta")
    entries = fc.log()
    assert all(set(e) == {"seq", "time", "service", "method", "path",
                          "query", "status", "tenant", "client_id"}
               for e in entries)
    login = fc.log(service="login")
    assert [(e["status"], e["tenant"], e["client_id"]) for e in login] == [
        (200, TENANT, APP), (200, TENANT, CERT_APP), (401, TENANT, APP)]
    assert login[2]["path"] == f"/{DOMAIN}/oauth2/v2.0/token"
    graph = fc.log(service="graph")
    assert [(e["status"], e["query"], e["tenant"], e["client_id"])
            for e in graph] == [
        (200, "$select=displayName", TENANT, APP), (401, "", None, None)]
    assert fc.log(since=graph[0]["seq"], service="graph") == graph[1:]
    assert [e["seq"] for e in entries] == sorted(e["seq"] for e in entries)
    dump = json.dumps(fc.log())
    for secret in (SECRET, "wrong-secret", tok, assertion):
        assert secret not in dump
    assert any(e["service"] == "admin" for e in fc.log())


# --------------------------------------------------------------------------
# seed_demo
# --------------------------------------------------------------------------

def test_seed_demo_module(fc):
    fixed = {"contoso": "c-secret", "fabrikam": "f-secret"}
    one = seed_demo.make_seed(contoso=80, fabrikam=40, client_secrets=fixed)
    two = seed_demo.make_seed(contoso=80, fabrikam=40, client_secrets=fixed)
    assert one == two
    contoso, fabrikam = one["tenants"]
    assert (len(contoso["users"]), len(fabrikam["users"])) == (80, 40)
    assert contoso["domain"] == "contoso.onmicrosoft.com"
    users = seed_demo.make_users("contoso.onmicrosoft.com", 600,
                                 random.Random(1))
    guests = [u for u in users if u["userType"] == "Guest"]
    assert guests and all(u["creationType"] == "Invitation" and
                          "#EXT#@contoso.onmicrosoft.com" in
                          u["userPrincipalName"] for u in guests)
    assert any(not u["accountEnabled"] for u in users)
    assert any("mail" not in u for u in users)
    assert len({u["mail"] for u in users if "mail" in u}) == \
        sum("mail" in u for u in users)

    fc.reset()
    fc.seed(one)
    tok = fc.access_token(contoso["id"], contoso["apps"][0]["client_id"],
                          "c-secret")
    pages, _ = read_round(fc, tok, "/v1.0/users/delta")
    assert len(by_id(pages)) == 80
    outer, inner = contoso["groups"]
    assert inner["id"] in outer["members"]
    reply = get(fc, tok, f"/v1.0/groups/{outer['id']}/transitiveMembers"
                         f"?$top=999")
    ids = {m["id"] for m in reply.json()["value"]}
    assert inner["id"] in ids and set(inner["members"]) <= ids


def test_seed_demo_cli(tmp_path):
    cert = tmp_path / "app.pem"
    cert.write_text(CERT_PEM)
    out = tmp_path / "seed.json"
    run = subprocess.run(
        [sys.executable, str(HERE / "seed_demo.py"), "--out", str(out),
         "--contoso", "30", "--fabrikam", "20", "--cert", str(cert),
         "--secrets-dir", str(tmp_path / "secrets")],
        capture_output=True, text=True, timeout=60, check=True)
    data = json.loads(out.read_text())
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    for tenant in data["tenants"]:
        secret = tenant["apps"][0]["secrets"][0]
        assert secret not in run.stdout and secret not in run.stderr
        assert (tmp_path / "secrets" / f"{tenant['name']}.secret"
                ).read_text().strip() == secret
        assert tenant["apps"][1]["certificates"] == [CERT_PEM]
    assert [len(t["users"]) for t in data["tenants"]] == [30, 20]
