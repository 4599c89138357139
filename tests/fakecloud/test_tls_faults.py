"""fakecloud's bad-certificate variants (--tls-fault) and its raw request
record (--record-raw), as galbridge's secrets and TLS tests use them.

Each case starts its own fakecloud through the environment variables
fakecloud reads (FAKECLOUD_TLS_FAULT, FAKECLOUD_TLS_FAULT_ON,
FAKECLOUD_RECORD_RAW), so client.FakeCloud is used unchanged.
"""
import json
import os
import socket
import ssl
import sys
import time
import urllib.request

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from client import FakeCloud  # noqa: E402

TENANT = "5a1e7f0c-0d4e-4c4b-9a43-5a0e4f6c2b11"
CLIENT = "0b6f1d3a-8a57-4a0b-bf0e-0f7c9c1f2a22"
SECRET = "canary-secret-for-record-raw"
SEED = {"tenants": [{
    "id": TENANT, "domain": "contoso.onmicrosoft.com",
    "apps": [{"client_id": CLIENT, "secrets": [SECRET]}],
    "users": [{"displayName": "Ada", "mail": "ada@contoso.example",
               "userPrincipalName": "ada@contoso.onmicrosoft.com"}]}]}

# What OpenSSL's verifier says for each fault (X509_verify_cert_error_string
# texts, as Python's ssl module reports them in verify_message).
VERIFY_MESSAGE = {
    "unknown-ca": "unable to get local issuer certificate",
    "wrong-host": "mismatch, certificate is not valid for '127.0.0.1'",
    "expired": "certificate has expired",
}


def start(tmp_path, monkeypatch, fault=None, fault_on=None, raw=False):
    for name in ("FAKECLOUD_TLS_FAULT", "FAKECLOUD_TLS_FAULT_ON",
                 "FAKECLOUD_RECORD_RAW"):
        monkeypatch.delenv(name, raising=False)
    if fault:
        monkeypatch.setenv("FAKECLOUD_TLS_FAULT", fault)
    if fault_on:
        monkeypatch.setenv("FAKECLOUD_TLS_FAULT_ON", fault_on)
    if raw:
        monkeypatch.setenv("FAKECLOUD_RECORD_RAW", "1")
    return FakeCloud().start(tmp_path / "cloud", seed=SEED)


def handshake(cloud, url):
    """TLS handshake to url trusting only fakecloud's CA and checking the
    host name 127.0.0.1; returns None or the SSLCertVerificationError."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=cloud.ca_file)
    try:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            with ctx.wrap_socket(sock, server_hostname=host):
                return None
    except ssl.SSLCertVerificationError as err:
        return err


def tls_state(cloud):
    with urllib.request.urlopen(cloud.admin_url + "/admin/tls",
                                timeout=10) as resp:
        return json.loads(resp.read())


def state_after_failures(cloud, names, deadline=10.0):
    """/admin/tls once each listener in names has counted a failed
    handshake. The client gives up as soon as it has refused the
    certificate; the listener's thread counts the failure when it reads
    the client's alert, a moment later, so the count is waited for."""
    end = time.monotonic() + deadline
    while True:
        state = tls_state(cloud)
        if all(state["handshake_failures"][n] >= 1 for n in names) or \
                time.monotonic() > end:
            return state
        time.sleep(0.02)


@pytest.mark.parametrize("fault", sorted(VERIFY_MESSAGE))
def test_fault_on_every_listener(tmp_path, monkeypatch, fault):
    with start(tmp_path, monkeypatch, fault) as cloud:
        for url in (cloud.login_url, cloud.graph_url, cloud.exchange_url):
            err = handshake(cloud, url)
            assert err is not None, url
            assert VERIFY_MESSAGE[fault] in err.verify_message, \
                err.verify_message
        state = state_after_failures(cloud, ("login", "graph", "exchange"))
        assert state["fault"] == fault
        for name in ("login", "graph", "exchange"):
            assert state["handshake_failures"][name] >= 1
        # No listener saw a request.
        assert [e for e in cloud.log() if e["service"] != "admin"] == []


def test_fault_on_one_listener(tmp_path, monkeypatch):
    with start(tmp_path, monkeypatch, "expired", "graph") as cloud:
        assert handshake(cloud, cloud.login_url) is None
        assert handshake(cloud, cloud.exchange_url) is None
        assert handshake(cloud, cloud.graph_url) is not None
        # The token endpoint still answers.
        reply = cloud.get_token(TENANT, CLIENT, secret=SECRET)
        assert reply.status == 200
        failures = state_after_failures(cloud, ("graph",))[
            "handshake_failures"]
        assert failures["graph"] >= 1
        assert failures["login"] == 0 and failures["exchange"] == 0


def test_no_fault_by_default(tmp_path, monkeypatch):
    with start(tmp_path, monkeypatch) as cloud:
        for url in (cloud.login_url, cloud.graph_url, cloud.exchange_url):
            assert handshake(cloud, url) is None
        state = tls_state(cloud)
        assert state["fault"] is None
        assert state["handshake_failures"] == {"login": 0, "graph": 0,
                                               "exchange": 0}
        assert state["handshakes"]["graph"] >= 1
        # Without --record-raw the log keeps no headers or bodies.
        cloud.get_token(TENANT, CLIENT, secret=SECRET)
        entry = cloud.log(service="login")[-1]
        assert "body" not in entry and "headers" not in entry


def test_record_raw(tmp_path, monkeypatch):
    with start(tmp_path, monkeypatch, raw=True) as cloud:
        token = cloud.access_token(TENANT, CLIENT, SECRET)
        reply = cloud.request(
            "POST", cloud.graph_url + "/v1.0/invitations",
            headers={"Authorization": "Bearer " + token},
            json_body={"invitedUserEmailAddress": "o'brien@x.example",
                       "inviteRedirectUrl": "https://example.com",
                       "invitedUserDisplayName": "Seán O'Brien \U0001f600"})
        assert reply.status == 201
        login = cloud.log(service="login")[-1]
        assert SECRET in login["body"]
        graph = cloud.log(service="graph")[-1]
        assert json.loads(graph["body"])["invitedUserDisplayName"] == \
            "Seán O'Brien \U0001f600"
        headers = {k.lower(): v for k, v in graph["headers"]}
        assert headers["authorization"] == "Bearer " + token


def test_lengths_count_utf16_units(tmp_path, monkeypatch):
    """An emoji is two UTF-16 code units: 32 of them fill givenName's 64."""
    with start(tmp_path, monkeypatch) as cloud:
        token = cloud.access_token(TENANT, CLIENT, SECRET)
        uid = cloud.users(TENANT)[0]["id"]
        auth = {"Authorization": "Bearer " + token}
        url = cloud.graph_url + "/v1.0/users/" + uid
        ok = cloud.request("PATCH", url, headers=auth,
                           json_body={"givenName": "\U0001f600" * 32})
        assert ok.status == 204
        bad = cloud.request("PATCH", url, headers=auth,
                            json_body={"givenName": "\U0001f600" * 32 + "a"})
        assert bad.status == 400
        assert bad.json()["error"]["code"] == "Request_BadRequest"
        assert "givenName" in bad.json()["error"]["message"]


def test_invitation_display_name_limit(tmp_path, monkeypatch):
    with start(tmp_path, monkeypatch) as cloud:
        token = cloud.access_token(TENANT, CLIENT, SECRET)
        auth = {"Authorization": "Bearer " + token}
        url = cloud.graph_url + "/v1.0/invitations"
        body = {"invitedUserEmailAddress": "long@x.example",
                "inviteRedirectUrl": "https://example.com",
                "invitedUserDisplayName": "\U0001f600" * 128 + "a"}
        bad = cloud.request("POST", url, headers=auth, json_body=body)
        assert bad.status == 400
        assert bad.json()["error"]["code"] == "BadRequest"
        body["invitedUserDisplayName"] = "\U0001f600" * 128
        ok = cloud.request("POST", url, headers=auth, json_body=body)
        assert ok.status == 201
