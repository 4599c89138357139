"""Client-side budget against fakecloud's enforced Graph limits.

fakecloud enforces a small write limit (time_factor makes its periods
short, limit_app_writes makes the count small) and galbridge is given the
same limit in graph_write_limit: a first round of a few hundred guests
must converge with 429s under 1 % of the writes. The same for resource
units (limit_app_units, graph_resource_unit_limit), against the same
round unpaced. Then the models Microsoft does not document, where
galbridge must learn: a window (limit_model), and another application
spending half the tenant's limit (limit_other_app_share); what it learnt
is in the state and the next run starts from it. The figures (writes/s
achieved against the rate allowed, 429s) are printed, not asserted on:
run with -s to see them.
"""
import datetime
import os
import random
import sqlite3
import time

TIME_FACTOR = 30                  # fakecloud's 150 s window becomes 5 s
APP_WRITES = 200                  # per (tenant, app) window
WINDOW = 150 // TIME_FACTOR


def parse_time(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")


def test_first_round_paced_under_enforced_limit(make_env):
    env = make_env(users=300)
    target = env.tenants["fabrikam"]
    env.cloud.set_knobs(enforce_limits=True, time_factor=TIME_FACTOR,
                        limit_app_writes=APP_WRITES)
    # The limit on the galbridge side: the same count and window, for the
    # target (conftest turns pacing off elsewhere).
    env.limits["fabrikam"] = ("%d/%ds" % (APP_WRITES, WINDOW), "150/5s")
    env.write_config()
    assert env.run("check-config").returncode == 0

    r = env.run("sync", timeout=600)
    assert r.returncode == 0, r.stderr

    want = env.in_scope()
    got = env.copies()
    assert len(want) > 200
    assert set(got) == set(want)
    assert all(len(c) == 1 and c[0]["showInAddressList"] is True
               for c in got.values())

    stats = env.cloud.stats(target["id"])["limits"][target["client_id"]]
    writes, throttled = stats["writes"], stats["throttled"]
    assert writes >= 2 * len(want)          # an invitation and a PATCH each
    assert throttled < 0.01 * writes, (throttled, writes)

    times = sorted(parse_time(e["time"]) for e in env.cloud.log("graph")
                   if e["tenant"] == target["id"] and e["status"] < 400
                   and e["method"] in ("POST", "PATCH", "DELETE"))
    span = (times[-1] - times[0]).total_seconds()
    allowed = APP_WRITES / WINDOW
    achieved = (len(times) - 1) / span if span > 0 else float("inf")
    print("\nbudget: %d writes in %.1f s: %.1f writes/s, allowed %.1f/s "
          "(%.0f %%), 429s: %d, peak %d writes in one second"
          % (len(times), span, achieved, allowed, 100 * achieved / allowed,
             throttled, stats["peak_writes_per_second"]))


UNITS_PER_SECOND = 60             # fakecloud: limit_app_units per 1 s


def units_round(make_env, paced):
    """A first round of 150 guests against fakecloud enforcing a small
    resource-unit quota (60 per 10 s / time_factor 10), writes left
    ample; galbridge paced to the same quota or not at all. Returns the
    target's limit figures."""
    env = make_env(users=150)
    target = env.tenants["fabrikam"]
    env.cloud.set_knobs(enforce_limits=True, time_factor=10,
                        limit_app_writes=100000,
                        limit_tenant_writes=100000,
                        limit_app_units=UNITS_PER_SECOND)
    units = "%d/1s" % UNITS_PER_SECOND if paced else "off"
    for name in ("contoso", "fabrikam"):
        env.limits[name] = ("off", "off", units)
    env.write_config()
    r = env.run("sync", timeout=600)
    if r.returncode != 0:               # unpaced: ops left for a next round
        r = env.run("sync", timeout=600)
    assert r.returncode == 0, r.stderr
    want = env.in_scope()
    got = env.copies()
    assert set(got) == set(want) and len(want) > 100
    return env.cloud.stats(target["id"])["limits"][target["client_id"]]


def test_reads_paced_under_resource_unit_quota(make_env):
    """Paced at the quota, reads and writes alike stay under it; the same
    round unpaced meets the quota's 429s (what the pacing saves)."""
    paced = units_round(make_env, True)
    # An invitation, a PATCH and two lookups per person at least.
    assert paced["units"] >= 4 * 100
    assert paced["units_throttled"] <= 0.01 * paced["units"], paced
    unpaced = units_round(make_env, False)
    assert unpaced["units_throttled"] > paced["units_throttled"], \
        (paced, unpaced)
    print("\nunits: paced %d units, %d 429s; unpaced %d units, %d 429s"
          % (paced["units"], paced["units_throttled"], unpaced["units"],
             unpaced["units_throttled"]))


def learnt(env, bucket="writes"):
    """(model, capacity, rate) the state keeps for the target's Graph
    gate, or None."""
    t = env.tenants["fabrikam"]
    db = sqlite3.connect("file:%s?mode=ro" %
                         os.path.join(env.state_dir, "state.db"), uri=True)
    try:
        return db.execute("SELECT model, capacity, rate FROM budget_learnt"
                          " WHERE gate = ? AND bucket = ?",
                          ("%s/%s/graph" % (t["id"], t["client_id"]),
                           bucket)).fetchone()
    finally:
        db.close()


def target_figures(env):
    t = env.tenants["fabrikam"]
    stats = env.cloud.stats(t["id"])["limits"][t["client_id"]]
    return stats["writes"], stats["throttled"]


def first_run(env):
    """A first round into the empty target; returns its (writes, 429s)."""
    r = env.run("sync", timeout=600)
    assert r.returncode == 0, r.stderr
    assert set(env.copies()) == set(env.in_scope())
    return r, target_figures(env)


def next_run(env, before, n, tag):
    """A later run: `n` people changed in the source, then one sync that
    brings them all into the target; returns its (writes, 429s)."""
    picked = random.Random(n).sample(sorted(env.in_scope()), n)
    for sid in picked:
        env.cloud.patch_user(env.source["id"], sid, {"jobTitle": tag})
    r = env.run("sync", timeout=600)
    assert r.returncode == 0, r.stderr
    copies = env.copies()
    assert all(copies[sid][0].get("jobTitle") == tag for sid in picked)
    writes, throttled = target_figures(env)
    return writes - before[0], throttled - before[1]


def learning_env(make_env, **knobs):
    env = make_env(users=300)
    env.cloud.set_knobs(enforce_limits=True, time_factor=TIME_FACTOR,
                        limit_app_writes=APP_WRITES, **knobs)
    env.limits["fabrikam"] = ("%d/%ds" % (APP_WRITES, WINDOW), "150/5s")
    env.write_config()
    return env


def test_learns_a_window_and_keeps_it(make_env):
    """fakecloud counts a sliding window: the bucket's refill after the
    first burst meets 429s whose Retry-After is most of the window;
    galbridge learns the window, saves it, and the next run (a burst of
    more changes than the window holds) starts from it."""
    env = learning_env(make_env, limit_model="window")
    r, (writes1, throttled1) = first_run(env)
    assert throttled1 >= 1                   # what it learnt from
    assert learnt(env)[0] == "window"
    assert "budget: saved tenant=fabrikam bucket=writes model=window" \
        in r.stderr
    # The next run: the window it wrote in has slid away.
    time.sleep(WINDOW + 1)
    writes2, throttled2 = next_run(env, (writes1, throttled1), 250, "Window")
    assert writes2 >= 250
    assert throttled2 <= 0.01 * writes2, (throttled1, throttled2, writes2)
    print("\nwindow: first run %d writes, %d 429s; learnt %r; next run "
          "%d writes, %d 429s" % (writes1, throttled1, learnt(env), writes2,
                                  throttled2))


def test_learns_a_smaller_share_and_keeps_it(make_env):
    """Another application spends half of the tenant-wide limit (set to
    the app's, so that it binds): galbridge learns a smaller bucket (or
    rate) from the 429s that come with tokens left in its own, stays
    below it, and a restart starts from it."""
    env = learning_env(make_env, limit_tenant_writes=2 * APP_WRITES,
                       limit_other_app_share=0.5)
    r, (writes1, throttled1) = first_run(env)
    model, capacity, rate = learnt(env)
    assert model == "bucket"
    assert capacity < APP_WRITES or rate < 0.975 * APP_WRITES / WINDOW
    # Learning costs a few volleys of 429s (each $batch answered in
    # part): 2 to 15 % of the writes of this small round, where the
    # lessons weigh most.
    assert throttled1 <= 0.25 * writes1, (throttled1, writes1, learnt(env))
    time.sleep(2 * WINDOW + 1)                # the tenant's period
    writes2, throttled2 = next_run(env, (writes1, throttled1), 250, "Shared")
    assert throttled2 <= 0.02 * writes2, (throttled1, throttled2, writes2)
    print("\nshared: first run %d writes, %d 429s; learnt %r; next run "
          "%d writes, %d 429s" % (writes1, throttled1, learnt(env), writes2,
                                  throttled2))
