"""Guest writes through Graph's $batch: galbridge sync against fakecloud.

A first round carries the lookups, invitations, PATCHes and DELETEs 20 to
a $batch request, each invitation's new user still reaching its own op;
an inner 429 is retried alone after its own Retry-After, and the round
still converges, in a throttling storm too.
"""
import datetime
import math
import urllib.parse

import client as fc

MAPPED = ("displayName", "givenName", "surname", "mail", "jobTitle",
          "department", "companyName", "city", "country")


def converged(env):
    """One visible, anchored guest per in-scope source user, with the
    mapped attributes of its source (the one PATCH carried them all)."""
    for sid, guest, user in env.one_guest_each():
        for attr in MAPPED:
            if user.get(attr) not in (None, "", []):
                assert guest.get(attr) == user[attr], (sid, attr)


def target_requests(env, since=None):
    """HTTP requests galbridge made to the target's Graph, each with the
    inner requests it carried: [(entry, [inner entries])]. fakecloud logs
    a batch's inner requests just before the batch itself, under one
    lock, so they are the run of "batch" entries right before it."""
    tid = env.tenants["fabrikam"]["id"]
    out, inner = [], []
    for e in env.cloud.log(service="graph", since=since):
        if e["tenant"] != tid:
            continue
        if "batch" in e:
            inner.append(e)
            continue
        if e["path"].endswith("/$batch"):
            out.append((e, inner))
        else:
            assert not inner, "inner requests without their batch"
            out.append((e, []))
        inner = []
    assert not inner
    return out


def is_write(entry):
    return entry["method"] != "GET"


def last_seq(env):
    log = env.cloud.log()
    return log[-1]["seq"] if log else 0


def test_first_round_500_users_batched(make_env):
    env = make_env(users=500)
    n = len(env.in_scope())
    r = env.run("sync", timeout=600)
    assert r.returncode == 0, r.stderr
    converged(env)
    writes = env.writes()
    # The new-guest path: one invitation and one PATCH (every attribute,
    # the anchor and showInAddressList together) per guest, nothing else.
    assert writes == {"invitations": n, "patches": n, "deletes": 0,
                      "restores": 0}

    reqs = target_requests(env)
    batches = [(e, inner) for e, inner in reqs if inner]
    assert batches, "nothing went through $batch"
    for e, inner in batches:
        assert e["status"] == 200 and e["method"] == "POST"
        assert 1 <= len(inner) <= 20
        # One version per batch: beta PATCHes never mix with v1.0 finds.
        version = e["path"].split("/")[1]
        assert all(i["path"].startswith("/%s/" % version) for i in inner)
    invitations = [i for e, inner in reqs for i in (inner or [e])
                   if i["path"] == "/v1.0/invitations"]
    patches = sum(1 for e, inner in reqs for i in (inner or [e])
                  if i["method"] == "PATCH")
    assert len(invitations) == n and patches == n
    assert all(i["status"] == 201 for i in invitations)
    # HTTP requests that carry writes: invitations and PATCHes (and
    # anything else written) 20 to a request, give or take a few.
    write_requests = [e for e, inner in reqs
                      if any(is_write(i) for i in (inner or [e]))]
    assert len(write_requests) <= math.ceil(2 * n / 20) + 10, \
        len(write_requests)
    # The lookups before each invitation (who holds the address: users,
    # org contacts, groups) are batched too.
    lookups = 0
    for path in ("/v1.0/users", "/v1.0/contacts", "/v1.0/groups"):
        finds = sum(1 for e, inner in reqs for i in (inner or [e])
                    if i["method"] == "GET" and i["path"] == path
                    and not is_user_count(i))
        assert finds == n, path
        lookups += finds
    read_requests = [e for e, inner in reqs
                     if not any(is_write(i) for i in (inner or [e]))]
    assert len(read_requests) <= math.ceil(lookups / 20) + 5

    # Nothing left: the next round writes nothing.
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert env.writes() == writes
    st = env.status()["links"][0]
    assert st["pending"] == 0 and st["failed"] == 0
    assert st["objects"] == n


def test_changes_share_a_batch_and_a_lone_patch_goes_alone(make_env):
    env = make_env(users=60)
    assert env.run("sync").returncode == 0
    ids = sorted(env.in_scope())
    env.cloud.patch_user(env.source["id"], ids[0], {"jobTitle": "Changed"})
    for sid in ids[1:6]:
        env.cloud.delete_user(env.source["id"], sid)
    since = last_seq(env)
    before = env.writes()
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    converged(env)
    after = env.writes()
    assert after["patches"] - before["patches"] == 1
    assert after["deletes"] - before["deletes"] == 5
    writes = [(e, inner) for e, inner in target_requests(env, since)
              if any(is_write(i) for i in (inner or [e]))]
    # One update and five deletes, started together: one $batch.
    assert len(writes) == 1
    e, inner = writes[0]
    assert e["path"] == "/v1.0/$batch"
    assert sorted(i["method"] for i in inner) == ["DELETE"] * 5 + ["PATCH"]

    # A lone change is not held back for company: a plain PATCH.
    env.cloud.patch_user(env.source["id"], ids[7], {"jobTitle": "Alone"})
    since = last_seq(env)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    converged(env)
    writes = [(e, inner) for e, inner in target_requests(env, since)
              if any(is_write(i) for i in (inner or [e]))]
    assert [(e["method"], e["path"], inner) for e, inner in writes] == [
        ("PATCH", "/v1.0/users/%s" % env.copies()[ids[7]][0]["id"], [])]


def when(entry):
    return datetime.datetime.strptime(entry["time"],
                                      "%Y-%m-%dT%H:%M:%S.%fZ")


def rounds_converge(env, n):
    """Rounds until one ends well with nothing left pending: then every
    one of the n people has its guest and nothing failed for good."""
    fc.wait_for(lambda: env.run("sync").returncode == 0
                and env.status()["links"][0]["pending"] == 0,
                timeout=120, interval=0.1, what="convergence")
    converged(env)
    st = env.status()["links"][0]
    assert st["failed"] == 0 and st["objects"] == n, st


def test_inner_429_retried_after_its_retry_after(make_env):
    env = make_env(users=60)
    n = len(env.in_scope())
    env.cloud.set_knobs(batch_inner_429=15, batch_inner_retry_after=2)
    r = env.run("sync", timeout=300)
    assert r.returncode == 0, r.stderr
    converged(env)
    assert env.cloud.knobs()["batch_inner_429"] == 0
    reqs = target_requests(env)
    sent = sorted([i for e, inner in reqs for i in (inner or [e])],
                  key=lambda i: i["seq"])
    throttled = [i for i in sent if i["status"] == 429]
    assert len(throttled) == 15
    assert all(i.get("batch") for i in throttled)
    for t in throttled:
        # The same request again, no sooner than its own Retry-After.
        again = [i for i in sent if i["seq"] > t["seq"]
                 and (i["method"], i["path"], i["query"])
                 == (t["method"], t["path"], t["query"])]
        assert again, "throttled %s %s never retried" % (t["method"],
                                                         t["path"])
        waited = (when(again[0]) - when(t)).total_seconds()
        assert waited >= 1.99, (t["path"], waited)
    # Throttled PATCHes are counted by fakecloud, yet every guest got
    # exactly one PATCH that went through.
    st = env.status()["links"][0]
    assert st["pending"] == 0 and st["failed"] == 0
    assert st["objects"] == n
    assert env.writes()["invitations"] == n


def test_inner_429_storm_converges_over_rounds(make_env):
    """More inner 429s than a sub-request retries (5 each): the ops left
    pending finish in a later round; none fails for good."""
    env = make_env(users=30)
    n = len(env.in_scope())
    env.cloud.set_knobs(batch_inner_429=400, batch_inner_retry_after=0)
    r = env.run("sync", timeout=300)
    assert r.returncode in (0, 1), r.stderr
    env.cloud.set_knobs(batch_inner_429=0)
    rounds_converge(env, n)


def is_user_count(entry):
    """The count a full read asks for before it starts (its paging
    bound), not a lookup."""
    return entry["path"] == "/v1.0/users" and \
        "$count=true" in urllib.parse.unquote(entry.get("query") or "") and \
        "$filter" not in urllib.parse.unquote(entry.get("query") or "")


def invitation_requests(reqs):
    """(HTTP requests that carried invitations, the invitations: inner
    entries and plain ones)."""
    carriers, invitations = [], []
    for e, inner in reqs:
        mine = [i for i in (inner or [e])
                if i["method"] == "POST"
                and i["path"] == "/v1.0/invitations"]
        if mine:
            carriers.append(e)
            invitations.extend(mine)
    return carriers, invitations


def test_invitations_ride_in_batches(make_env):
    env = make_env(users=200)
    n = len(env.in_scope())
    r = env.run("sync", timeout=300)
    assert r.returncode == 0, r.stderr
    # Each guest got its own attributes: every invitation's new user id
    # reached the op that asked for it, not a neighbour in the batch.
    converged(env)
    reqs = target_requests(env)
    carriers, invitations = invitation_requests(reqs)
    assert len(invitations) == n
    assert all(i["status"] == 201 for i in invitations)
    batched = [i for i in invitations if "batch" in i]
    # A lone invitation may go as a plain request; the rest share
    # batches, so the HTTP requests carrying them are about n / 20.
    assert len(invitations) - len(batched) <= 3
    assert len(carriers) <= math.ceil(n / 20) + 5, len(carriers)
    assert all(e["path"] == "/v1.0/$batch" for e in carriers
               if e["path"] != "/v1.0/invitations")
    # Every HTTP request against every inner request: about 0.25 requests
    # per new guest (who holds the address: users, contacts, groups; the
    # invitation and the PATCH, 20 to a request), where one-by-one
    # invitations alone cost 1.
    reqs = [(e, i) for e, i in reqs
            if not e["path"].startswith("/v1.0/users/delta")
            and not is_user_count(e)]
    inner = sum(len(i) if i else 1 for _, i in reqs)
    assert inner == 5 * n
    print("invitations: %d guests, %d HTTP requests for %d requests "
          "(%.2f per guest), invitations in %d requests"
          % (n, len(reqs), inner, len(reqs) / n, len(carriers)))
    assert len(reqs) <= 0.3 * n
    assert env.writes()["invitations"] == n


def test_invitations_in_a_throttling_storm_converge(make_env):
    """30% of writes answered 429 with Retry-After 1-3 s, each 429 holding
    the tenant: the batched invitations still get through, each throttled
    one is sent again and no guest is invited twice."""
    env = make_env(users=150)
    n = len(env.in_scope())
    env.cloud.set_knobs(throttle_write_fraction=0.3)
    fc.wait_for(lambda: env.run("sync", timeout=600).returncode == 0
                and env.status()["links"][0]["pending"] == 0,
                timeout=900, interval=0.1, what="convergence")
    st = env.status()["links"][0]
    assert st["failed"] == 0 and st["objects"] == n, st
    converged(env)
    guests = env.guests()
    assert len(guests) == n, "an invitation was answered twice"

    reqs = target_requests(env)
    carriers, invitations = invitation_requests(reqs)
    throttled = [i for i in invitations if i["status"] == 429]
    accepted = [i for i in invitations if i["status"] == 201]
    assert throttled, "the storm throttled no invitation"
    assert all("batch" in i for i in throttled[:1])
    assert len(accepted) == n
    # Throttled invitations were sent again, still mostly in company.
    assert len(carriers) < len(invitations) / 2, \
        (len(carriers), len(invitations))
    print("storm invitations: %d guests, %d invitations sent (%d "
          "throttled) in %d HTTP requests"
          % (n, len(invitations), len(throttled), len(carriers)))


def test_tokens_revoked_while_batches_fly(make_env):
    """Tokens revoked again and again while $batch requests are in flight
    (each fresh token refused soon after it is issued): a token refusal
    means a fresh token and a retry, on a $batch as on a single request;
    it never fails the ops inside for good, and the link converges once
    the revoking stops."""
    env = make_env(users=100)
    n = len(env.in_scope())
    env.cloud.set_knobs(latency_ms=60)
    seq = last_seq(env)

    def logins():
        return len(env.cloud.log(service="login", since=seq))

    with env.started("sync") as proc:
        fc.wait_for(lambda: any(e["path"].endswith("/$batch")
                                for e in env.cloud.log(service="graph",
                                                       since=seq)),
                    timeout=60, interval=0.01, what="batches in flight")
        for _ in range(12):
            if proc.poll() is not None:
                break
            seen = logins()
            env.cloud.set_knobs(revoke_tokens=True)
            # The next revocation once a fresh token has been issued.
            try:
                fc.wait_for(lambda: proc.poll() is not None
                            or logins() > seen, timeout=30, interval=0.01,
                            what="a fresh token")
            except TimeoutError:
                break
        env.cloud.set_knobs(revoke_tokens=False)
        _, err = proc.communicate(timeout=300)
    refused = [e for e in env.cloud.log(service="graph", since=seq)
               if e["status"] == 401]
    assert any(e["path"].endswith("/$batch") for e in refused), \
        "no $batch was refused: the storm missed the batches"
    assert proc.returncode in (0, 1), err
    st = env.status()["links"][0]
    print("revoked: %d refused (%d $batch), rc %d, pending %d"
          % (len(refused), sum(1 for e in refused
                               if e["path"].endswith("/$batch")),
             proc.returncode, st["pending"]))
    assert st["failed"] == 0, st["failures"]
    env.cloud.set_knobs(latency_ms=0)
    rounds_converge(env, n)
    assert env.writes()["invitations"] == n
