"""A server certificate galbridge must refuse: from an unknown CA, for
another host name, or expired. The TLS handshake must stop the request
before anything is sent (fakecloud sees a failed handshake and no request
at all: no client secret on the token endpoint, no bearer token on Graph
or Exchange), and galbridge must say what is wrong and exit 1 (a tenant
could not be reached, DESIGN.md).
"""
import json
import os
import sys
import urllib.request

import pytest

# The reliability report's recorder (a no-op outside `make reliability`).
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "reliability"))
from record import crashes, record  # noqa: E402

# What libcurl + OpenSSL say for each fault; galbridge passes it on.
REASON = {
    "unknown-ca": "unable to get local issuer certificate",
    "wrong-host": "does not match target host name",
    "expired": "certificate has expired",
}
# libcurl spells the host name mismatch differently across versions.
WRONG_HOST = ("no alternative certificate subject name matches",
              "does not match target host name")


def tls_env(make_env, monkeypatch, fault, on):
    monkeypatch.setenv("FAKECLOUD_TLS_FAULT", fault)
    monkeypatch.setenv("FAKECLOUD_TLS_FAULT_ON", on)
    env = make_env(users=10)
    monkeypatch.delenv("FAKECLOUD_TLS_FAULT")
    monkeypatch.delenv("FAKECLOUD_TLS_FAULT_ON")
    return env


def connections(env, service):
    """TLS connections galbridge opened to the listener, failed handshakes
    included (a client may check the host name after the handshake)."""
    with urllib.request.urlopen(env.cloud.admin_url + "/admin/tls",
                                timeout=10) as resp:
        state = json.loads(resp.read())
    return (state["handshakes"][service]
            + state["handshake_failures"][service])


def says(stderr, fault):
    if fault == "wrong-host":
        return any(text in stderr for text in WRONG_HOST)
    return REASON[fault] in stderr


def requests_to(env, service):
    return [e for e in env.cloud.log(service=service)]


@pytest.mark.parametrize("fault", sorted(REASON))
def test_token_endpoint(make_env, monkeypatch, fault):
    env = tls_env(make_env, monkeypatch, fault, "login")
    r = env.run("sync")
    # Anything that reached the listener carried a secret or a token.
    record("refused certificate", injected=1, crashes=crashes(r.returncode),
           secrets=len(requests_to(env, "login") + requests_to(env, "graph")))
    assert r.returncode == 1, r.stderr
    assert says(r.stderr, fault), r.stderr
    assert "token" in r.stderr
    # A connection was made, yet no token request (and so no client
    # secret) ever reached the listener, nor anything else.
    assert connections(env, "login") >= 1
    assert requests_to(env, "login") == []
    assert requests_to(env, "graph") == []
    assert env.tenants["contoso"]["secret"] not in r.stderr + r.stdout
    # doctor says the same and exits non-zero.
    r = env.run("doctor")
    assert r.returncode != 0
    assert says(r.stdout + r.stderr, fault), r.stdout + r.stderr


@pytest.mark.parametrize("fault", sorted(REASON))
def test_graph(make_env, monkeypatch, fault):
    env = tls_env(make_env, monkeypatch, fault, "graph")
    r = env.run("sync")
    record("refused certificate", injected=1, crashes=crashes(r.returncode),
           secrets=len(requests_to(env, "graph")))
    assert r.returncode == 1, r.stderr
    assert says(r.stderr, fault), r.stderr
    assert connections(env, "graph") >= 1
    # Tokens were had (the token endpoint is fine) but none was sent.
    assert len(requests_to(env, "login")) >= 1
    assert requests_to(env, "graph") == []
    assert env.status()["links"][0]["objects"] == 0


def exchange_env(make_env, monkeypatch):
    env = tls_env(make_env, monkeypatch, "unknown-ca", "exchange")
    text = open(env.conf).read().replace("object = guest",
                                         "object = mailcontact")
    with open(env.conf, "w") as f:
        f.write(text)
    return env


def test_exchange_sends_nothing(make_env, monkeypatch):
    env = exchange_env(make_env, monkeypatch)
    r = env.run("sync")
    record("refused certificate", injected=1, crashes=crashes(r.returncode),
           secrets=len(requests_to(env, "exchange")))
    assert r.returncode == 1, r.stderr
    assert connections(env, "exchange") >= 1
    assert requests_to(env, "exchange") == []
    assert env.status()["links"][0]["objects"] == 0


def test_exchange_names_the_problem(make_env, monkeypatch):
    env = exchange_env(make_env, monkeypatch)
    r = env.run("sync")
    assert r.returncode == 1, r.stderr
    assert says(r.stderr, "unknown-ca"), r.stderr
