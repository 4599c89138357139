"""Tokens that expire while requests wait: galbridge sync against fakecloud
with two-second tokens (token_lifetime) and a small client-side write
budget on the target, so that writes queue in http for longer than a
token lives.

A request carries the token that is current when it actually leaves, not
the one it was given when it was queued; a 401 on a token that was past
its prime is retried, never a permanent failure. So the round converges
with no failed operation.
"""
from test_batch import converged, when

TOKEN_LIFETIME = 2
USERS = 250
# 200 writes per 10 s: the budget sends a window's allowance (195) and
# then waits for the window to slide, so the first round (two writes per
# guest, about 470) lasts many token lifetimes and writes wait in the
# queue for several token lifetimes: the token is refreshed as it stops
# being fresh, whether anyone asks or not.
WRITE_LIMIT = "200/10s"


def test_writes_queued_longer_than_a_token_lives(make_env):
    env = make_env(users=USERS)
    env.limits["fabrikam"] = (WRITE_LIMIT, "150/5s")
    env.write_config()
    env.cloud.set_knobs(token_lifetime=TOKEN_LIFETIME)
    n = len(env.in_scope())

    r = env.run("sync", timeout=600)
    assert r.returncode == 0, r.stderr
    assert "failed for good" not in r.stderr, r.stderr
    st = env.status()["links"][0]
    assert st["failed"] == 0 and st["pending"] == 0, st
    assert st["objects"] == n
    converged(env)
    # Exactly one invitation per guest: a refused request was sent again,
    # never a second create.
    assert env.writes()["invitations"] == n

    # The tokens did run out mid-round: the target's writes spanned many
    # token lifetimes, and galbridge fetched a token for each.
    logins = [e for e in env.cloud.log(service="login")
              if e["status"] == 200]
    target = env.tenants["fabrikam"]["id"]
    graph = [e for e in env.cloud.log(service="graph")
             if e["tenant"] == target]
    span = (when(graph[-1]) - when(graph[0])).total_seconds()
    assert span > 4 * TOKEN_LIFETIME, span
    assert len(logins) >= span / TOKEN_LIFETIME / 2, (len(logins), span)
