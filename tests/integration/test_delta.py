"""The delta reader end to end: galbridge sync against fakecloud."""
import os
import signal
import sqlite3
import sys
import time

import client as fc
from conftest import Env

# The reliability report's recorder (a no-op outside `make reliability`).
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "reliability"))
from record import crashes, record, tally  # noqa: E402


def last_seq(env):
    log = env.cloud.log()
    return log[-1]["seq"] if log else 0


def test_first_read_2000_users(make_env):
    env = make_env(users=2000)
    t0 = time.monotonic()
    r = env.run("sync")
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    rows = env.store_rows()
    want = env.expected()
    assert len(want) == 2000
    assert {k: v[0] for k, v in rows.items()} == want
    assert all(v[1] == 0 for v in rows.values())
    link, full, _ = env.delta_state()
    assert link.startswith(env.cloud.graph_url + "/v1.0/users/delta?")
    assert full == 0
    # Server-chosen pages of 200: ten page requests, and one token.
    assert len(env.delta_requests()) == 10
    tokens = [e for e in env.cloud.log(service="login")
              if e["tenant"] == env.source["id"]]
    assert len(tokens) == 1 and tokens[0]["status"] == 200
    assert "delta round done source=contoso mode=full pages=10 " \
        "items=2000" in r.stderr
    print("2000 users: %.2fs, %d requests" % (elapsed, len(env.cloud.log())))


def test_second_sync_reads_only_changes(make_env):
    env = make_env(users=2000)
    assert env.run("sync").returncode == 0
    users = [u for u in env.cloud.users(env.source["id"])][:10]
    for i, u in enumerate(users):
        env.cloud.patch_user(env.source["id"], u["id"],
                             {"jobTitle": "Changed %d" % i,
                              "city": None if i % 2 else "Reykjavik"})
    seq = last_seq(env)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    # One request: the deltaLink, answered with the ten changed users.
    reqs = env.delta_requests(since=seq)
    assert len(reqs) == 1
    assert "$deltatoken=" in reqs[0]["query"]
    assert "mode=delta pages=1 items=10 " in r.stderr
    rows = env.store_rows()
    assert {k: v[0] for k, v in rows.items()} == env.expected()
    assert rows[users[0]["id"]][0]["jobTitle"] == "Changed 0"
    assert "city" not in rows[users[1]["id"]][0]
    # Nothing changed: one request, no items.
    seq = last_seq(env)
    r = env.run("sync")
    assert r.returncode == 0
    assert len(env.delta_requests(since=seq)) == 1
    assert "mode=delta pages=1 items=0 " in r.stderr


def test_deletes_restores_and_duplicates(env):
    assert env.run("sync").returncode == 0
    ids = [u["id"] for u in env.cloud.users(env.source["id"])]
    env.cloud.delete_user(env.source["id"], ids[0])             # soft
    env.cloud.delete_user(env.source["id"], ids[1], hard=True)  # hard
    env.cloud.delete_user(env.source["id"], ids[2])
    env.cloud.set_knobs(delta_duplicates=3, delta_page_size=2)
    for i in range(3, 9):
        env.cloud.patch_user(env.source["id"], ids[i], {"department": "D%d" % i})
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    rows = env.store_rows()
    assert rows[ids[0]][1] == 1
    assert rows[ids[1]][1] == 2
    assert rows[ids[2]][1] == 1
    # Removed users keep what we knew of them.
    assert rows[ids[0]][0].get("displayName")
    env.cloud.restore_user(env.source["id"], ids[2])
    assert env.run("sync").returncode == 0
    rows = env.store_rows()
    assert rows[ids[2]][1] == 0
    live = {k: v[0] for k, v in rows.items() if v[1] == 0}
    assert live == env.expected()


def test_kill_mid_round_ends_like_uninterrupted(make_env):
    env = make_env(users=1000)
    # Slow, small pages so that the kill lands inside the first round.
    env.cloud.set_knobs(delta_page_size=20, latency_ms=20)
    proc = env.start("sync")
    fc.wait_for(lambda: len(env.delta_requests()) >= 10, timeout=60,
                what="ten delta pages")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    link, full, _ = env.delta_state()
    assert link is None and full == 1, "the kill should land mid-round"
    partial = env.store_rows()
    assert 0 < len(partial) < 1000

    # Changes while galbridge is down, then a complete run.
    ids = sorted(env.expected())
    env.cloud.patch_user(env.source["id"], ids[0], {"jobTitle": "After"})
    env.cloud.delete_user(env.source["id"], ids[1], hard=True)
    env.cloud.set_knobs(latency_ms=0)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr

    # An uninterrupted galbridge with its own store reads the same cloud.
    fresh = os.path.join(env.tmp, "fresh-state")
    text = open(env.conf).read().replace(env.state_dir, fresh)
    with open(env.conf, "w") as f:
        f.write(text)
    assert env.run("sync").returncode == 0
    killed = env.store_rows()
    clean = env.store_rows(state_dir=fresh)
    def live(rows):
        return {k: v[0] for k, v in rows.items() if v[1] == 0}
    assert live(killed) == live(clean) == env.expected()
    # The user deleted while galbridge was down is marked deleted (or was
    # never stored, if the killed round had not reached it).
    assert killed.get(ids[1], (None, 2))[1] == 2
    assert clean.get(ids[1], (None, 2))[1] == 2


def expire_and_check(env, mode):
    assert env.run("sync").returncode == 0
    ids = sorted(env.expected())
    env.cloud.delete_user(env.source["id"], ids[0], hard=True)
    env.cloud.delete_user(env.source["id"], ids[1], hard=True)
    env.cloud.delete_user(env.source["id"], ids[2])              # soft
    env.cloud.patch_user(env.source["id"], ids[3], {"jobTitle": None})
    env.cloud.set_knobs(expire_delta_tokens=mode)
    seq = last_seq(env)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert "reading everything again" in r.stderr
    reqs = env.delta_requests(since=seq)
    assert reqs[0]["status"] in (400, 410)
    assert "$deltatoken=" in reqs[0]["query"]
    assert "$select=" in reqs[1]["query"] and "token" not in reqs[1]["query"]
    rows = env.store_rows()
    assert rows[ids[0]][1] == 2 and rows[ids[1]][1] == 2
    assert rows[ids[2]][1] in (1, 2)
    assert "jobTitle" not in rows[ids[3]][0]
    live = {k: v[0] for k, v in rows.items() if v[1] == 0}
    assert live == env.expected()
    link, full, _ = env.delta_state()
    assert link and full == 0


def test_expired_delta_token_sync_state_not_found(env):
    expire_and_check(env, "syncStateNotFound")


def test_expired_delta_token_gone(env):
    expire_and_check(env, "gone")


def test_expired_delta_token_resync_required(env):
    expire_and_check(env, "resyncRequired")


def test_full_read_interrupted_keeps_unseen_until_the_end(make_env):
    env = make_env(users=400)
    assert env.run("sync").returncode == 0
    ids = sorted(env.expected())
    env.cloud.delete_user(env.source["id"], ids[-1], hard=True)
    env.cloud.set_knobs(expire_delta_tokens="syncStateNotFound",
                        delta_page_size=10, latency_ms=20)
    proc = env.start("sync")
    fc.wait_for(lambda: env.delta_state()[0] is None, timeout=30,
                what="full read started")
    fc.wait_for(lambda: len(env.delta_requests()) >= 8, timeout=30)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    # Mid full read nothing is marked deleted but what the service itself
    # reported removed: every user still live in the cloud is present.
    rows = env.store_rows()
    assert {k for k, v in rows.items() if v[1] != 0} <= {ids[-1]}
    assert sum(1 for v in rows.values() if v[1] == 0) >= 399
    env.cloud.set_knobs(latency_ms=0)
    assert env.run("sync").returncode == 0
    rows = env.store_rows()
    assert rows[ids[-1]][1] == 2
    assert sum(1 for v in rows.values() if v[1] == 0) == 399


def test_wrong_client_secret(env):
    env.write_secret("contoso", "not-the-secret")
    r = env.run("sync")
    assert r.returncode == 1
    assert "contoso" in r.stderr
    assert "invalid_client" in r.stderr and "AADSTS7000215" in r.stderr
    assert "not-the-secret" not in r.stderr + r.stdout
    assert env.tenants["contoso"]["secret"] not in r.stderr
    # Refused credentials are not hammered.
    assert len([e for e in env.cloud.log(service="login")
                if e["tenant"] == env.source["id"]]) == 1
    assert env.delta_requests() == []


def test_certificate_tenant(make_env):
    cert_pem, key = fc.make_certificate("galbridge-test")
    env = make_env(users=300, cert_pem=cert_pem)
    cert_path = env.write_private("contoso.pem", cert_pem + fc.key_pem(key))
    env.write_config(contoso_credential="certificate_file = %s" % cert_path)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert {k: v[0] for k, v in env.store_rows().items()} == env.expected()
    assert [e["status"] for e in env.cloud.log(service="login")
            if e["tenant"] == env.source["id"]] == [200]


def test_certificate_key_in_separate_file(make_env):
    cert_pem, key = fc.make_certificate("galbridge-test")
    env = make_env(users=20, cert_pem=cert_pem)
    cert_path = os.path.join(env.tmp, "contoso.crt")
    with open(cert_path, "w") as f:
        f.write(cert_pem)
    key_path = env.write_private("contoso.key", fc.key_pem(key))
    env.write_config(contoso_credential="certificate_file = %s\nkey_file = %s"
                     % (cert_path, key_path))
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert len(env.store_rows()) == 20


def test_unregistered_certificate_is_refused(make_env):
    cert_pem, key = fc.make_certificate("galbridge-test")
    other_pem, other_key = fc.make_certificate("not-registered")
    env = make_env(users=20, cert_pem=cert_pem)
    path = env.write_private("other.pem", other_pem + fc.key_pem(other_key))
    env.write_config(contoso_credential="certificate_file = %s" % path)
    r = env.run("sync")
    assert r.returncode == 1
    assert "contoso" in r.stderr and "AADSTS700027" in r.stderr
    assert "PRIVATE KEY" not in r.stderr


def test_token_refused_midway_is_refreshed_once(env):
    proc = env.start("run")
    try:
        fc.wait_for(lambda: env.delta_state() is not None and
                    env.delta_state()[0] is not None, timeout=30,
                    what="first round committed")
        seq = last_seq(env)
        env.cloud.set_knobs(revoke_tokens=True)

        def refreshed():
            graph = [e for e in env.cloud.log(service="graph", since=seq)
                     if e["tenant"] in (None, env.source["id"])
                     and e["path"].startswith("/v1.0/users/delta")]
            statuses = [e["status"] for e in graph]
            return 401 in statuses and statuses[-1] == 200
        fc.wait_for(refreshed, timeout=30, what="a refused token replaced")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    asked = [e for e in env.cloud.log(service="login", since=seq)
             if e["tenant"] == env.source["id"]]
    assert len(asked) == 1


def test_status_json(env):
    assert env.run("sync").returncode == 0
    r = env.run("status", "--json")
    assert r.returncode == 0, r.stderr
    import json
    st = json.loads(r.stdout)
    link = st["links"][0]
    last = link.pop("last_success")
    assert last.endswith("Z") and len(last) == 20
    assert link == {"name": "contoso-to-fabrikam", "source": "contoso",
                    "target": "fabrikam", "object": "guest",
                    "objects": len(env.in_scope()), "pending": 0,
                    "failed": 0, "deletes_held": 0, "creates_held": 0,
                    "failures": [],
                    "refused": 0, "progress": None}
    src = st["sources"][0]
    assert src["name"] == "contoso" and src["objects"] == 50
    assert src["last_round"].endswith("Z")
    assert src["full_read_pending"] is False


def test_config_error_exit_78_nothing_sent(env):
    with open(env.conf, "a") as f:
        f.write("[link broken]\nsource = nowhere\ntarget = fabrikam\n"
                "object = guest\n")
    r = env.run("sync")
    assert r.returncode == 78
    assert r.stderr.startswith(env.conf + ":")
    assert env.cloud.log(service="login") == []


def test_run_stops_on_sigterm(env):
    proc = env.start("run")
    fc.wait_for(lambda: env.delta_state() is not None and
                env.delta_state()[0] is not None, timeout=30,
                what="first round committed")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopping signal=TERM" in err


# -- a Graph base URL that changes (Trust issue, point 8) ---------------------

def base_urls(env):
    """{tenant id: (delta link, base_url)} from the state."""
    path = os.path.join(env.state_dir, "state.db")
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        rows = db.execute("SELECT tenant, delta_link, base_url"
                          " FROM delta_state").fetchall()
    finally:
        db.close()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_graph_url_changes(env):
    """Graph moves (another port: graph_url changes in the config): the
    stored delta links are not followed; `doctor` says so, and the next
    round reads each tenant in full and converges, deleting nothing."""
    from test_guests import check_converged
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    old = env.cloud.graph_url
    links = base_urls(env)
    assert len(links) == 2
    for link, base in links.values():
        assert base == old and link.startswith(old + "/")

    new = env.cloud.move_graph()
    env.write_config()                  # graph_url = the new one
    hire = env.cloud.create_user(env.source["id"], {
        "displayName": "Moved Hire", "mail": "moved.hire@contoso.com",
        "mailNickname": "movedhire"})["id"]
    d = env.run("doctor")
    for name in ("contoso", "fabrikam"):
        assert ("note  tenant %s: stored delta link of %s will not be "
                "followed (graph_url is %s)" % (name, old, new)) in d.stdout, \
            d.stdout
    assert "$deltatoken" not in d.stdout
    sources = {s["name"]: s for s in env.status()["sources"]}
    assert sources["contoso"]["full_read_pending"] is True

    before = env.writes()
    r = env.run("sync")
    counts = tally(env)
    counts["losses"] += env.writes()["deletes"] - before["deletes"]
    record("base-URL change", injected=1, rounds=1,
           converged=int(r.returncode == 0 and not any(counts.values())),
           crashes=crashes(r.returncode), **counts)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "delta link of another Graph base URL not followed" in r.stderr
    assert r.stderr.count("mode=full reason=graph-url-changed") == 2
    assert env.writes()["deletes"] == before["deletes"] == 0
    check_converged(env)
    assert hire in env.copies()
    for link, base in base_urls(env).values():
        assert base == new and link.startswith(new + "/")
    d = env.run("doctor")
    assert "will not be followed" not in d.stdout, d.stdout
    # And the round after is a delta round again.
    r = env.run("sync")
    assert r.returncode == 0
    assert "mode=full" not in r.stderr


def test_resync_reads_source_and_target_again(env):
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    r = env.run("resync", "contoso-to-fabrikam")
    assert r.returncode == 0, r.stderr
    assert "contoso (source) and fabrikam (target) will be read in full" \
        in r.stdout
    assert all(link is None and base is None
               for link, base in base_urls(env).values())
    before = env.writes()
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("mode=full reason=no-delta-link") == 2
    assert env.writes() == before
