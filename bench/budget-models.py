#!/usr/bin/python3
"""bench/budget-models: galbridge's pacing against each limit model.

Graph's write, invitation and resource-unit limits at their real sizes
(3,000 writes per app and tenant, 18,000 per tenant, 150 invitations,
the resource-unit quota), with fakecloud's periods --time-factor times
shorter (default 5: 3,000 writes per 30 s, 150 invitations per second),
under three models fakecloud can enforce:

  bucket     what Microsoft documents: a token bucket of each limit, full
             at first, refilled at the limit per period;
  window     a sliding window of each period;
  other-app  the bucket, with a second application of the tenant
             spending half of the tenant-wide write limit (made 6,000
             per 5 min: with the documented 18,000, half of it still
             leaves more than one application's own 3,000 per 2.5 min).

For each: a first round of --users people (default 2,000) into an empty
target (under window and other-app, where galbridge has to learn, then a
second first round of --users new people, after learning); and, in a
link of --converged people (default 10,000) converged without limits,
--changes changes (default 2,500) until all are in the target (twice
under window and other-app: learning, then after learning). Each figure
is set against that model's floor, the least time its limits allow for
the writes, invitations and resource units fakecloud counted (at least
the time the same work takes here with no limits at all, for a burst
the bucket would allow at once); 429s are fakecloud's count. The naive
approach (bench/naive.py) runs the same first round and burst under the
bucket. Figures, not pass/fail.
"""
import argparse
import math
import os
import random
import sqlite3
import sys
import tempfile
import time

from benchlib import Env, scratch_env
from naive import naive_round, naive_update_round

import seed_demo

APP_WRITES, APP_PERIOD = 3000, 150.0
TENANT_WRITES, TENANT_PERIOD = 18000, 300.0
INVITATIONS, INVITATION_PERIOD = 150, 5.0
UNIT_PERIOD = 10.0
OTHER_APP_TENANT_WRITES = 6000
MODELS = ("bucket", "window", "other-app")
# The second first round adds as many people as the first: more creates
# than max_creates lets through unapproved, on purpose here.
BENCH_LINK = "max_creates = 1000000\n"


def knobs_for(model, factor):
    knobs = {"enforce_limits": True, "time_factor": factor,
             "limit_model": "window" if model == "window" else "bucket",
             "limit_tenant_writes": TENANT_WRITES,
             "limit_other_app_share": 0}
    if model == "other-app":
        knobs.update(limit_tenant_writes=OTHER_APP_TENANT_WRITES,
                     limit_other_app_share=0.5)
    return knobs


def limit_env(env, model, factor):
    """fakecloud enforcing `model`; galbridge given the documented limits,
    scaled like fakecloud's periods (whole seconds at factor 5)."""
    env.cloud.set_knobs(**knobs_for(model, factor))
    env.limits["fabrikam"] = (
        "%d/%ds" % (APP_WRITES, round(APP_PERIOD / factor)),
        "%d/%ds" % (INVITATIONS, max(1, round(INVITATION_PERIOD / factor))),
        "%d/%ds" % (3500, max(1, round(UNIT_PERIOD / factor))))
    env.write_config(link_extra=BENCH_LINK)


def no_limits(env):
    env.cloud.set_knobs(enforce_limits=False, limit_model="bucket",
                        limit_other_app_share=0)
    env.limits.pop("fabrikam", None)
    env.write_config(link_extra=BENCH_LINK)


def forget(env):
    """Drop what galbridge learnt (to start a model afresh)."""
    path = os.path.join(env.state_dir, "state.db")
    if os.path.exists(path):
        db = sqlite3.connect(path)
        try:
            db.execute("DELETE FROM budget_learnt")
            db.commit()
        except sqlite3.OperationalError:
            pass
        finally:
            db.close()


def floor_seconds(model, factor, writes, invitations, units, quota):
    """The least time `model`'s limits allow for that much, from full
    buckets (empty windows)."""
    tenant = TENANT_WRITES
    if model == "other-app":
        tenant = OTHER_APP_TENANT_WRITES * 0.5
    limits = ((writes, APP_WRITES, APP_PERIOD),
              (writes, tenant, TENANT_PERIOD),
              (invitations, INVITATIONS, INVITATION_PERIOD),
              (units, quota, UNIT_PERIOD))
    worst = 0.0
    for count, limit, period in limits:
        period /= factor
        if model == "window":
            t = max(0, math.ceil(count / limit) - 1) * period
        else:
            t = max(0.0, count - limit) / (limit / period)
        worst = max(worst, t)
    return worst


def target_counts(env):
    t = env.tenants["fabrikam"]
    st = env.cloud.stats(t["id"])
    app = st.get("limits", {}).get(t["client_id"], {})
    return {"writes": app.get("writes", 0),
            "throttled": app.get("throttled", 0),
            "units": app.get("units", 0),
            "invitations": st.get("invitations", 0)}


def delta(after, before):
    return {k: after[k] - before.get(k, 0) for k in after}


def graph_requests(env, since):
    return sum(1 for e in env.cloud.log(since=since)
               if e["service"] == "graph" and "batch" not in e)


def last_seq(env):
    log = env.cloud.log()
    return log[-1]["seq"] if log else 0


LESSONS = False


def show_lessons(stderr):
    """With --lessons: each change of what the writes model holds
    (galbridge's "http budget learnt" lines)."""
    if not LESSONS:
        return
    for line in stderr.splitlines():
        if "budget learnt" in line and "bucket=writes" in line:
            keep = [w for w in line.split() if w.split("=")[0] in
                    ("model", "capacity", "rate", "retry_after", "scope")]
            print("    lesson: " + " ".join(keep))


def timed_sync(env, passes=3):
    """`galbridge sync` until it converges (at most `passes` runs);
    returns wall seconds."""
    t0 = time.monotonic()
    for _ in range(passes):
        r = env.run("sync", timeout=7200)
        show_lessons(r.stderr)
        if r.returncode == 0:
            return time.monotonic() - t0
    sys.exit("sync failed: " + r.stderr[-2000:])


def measured(env, model, factor, quota, work, people):
    """Run `work` (returns wall seconds); fakecloud's figures for it, its
    floor, and requests per person."""
    before, seq = target_counts(env), last_seq(env)
    wall = work()
    d = delta(target_counts(env), before)
    floor = floor_seconds(model, factor, d["writes"], d["invitations"],
                          d["units"], quota)
    return {"wall": wall, "floor": floor, "writes": d["writes"],
            "throttled": d["throttled"],
            "requests_per_person": graph_requests(env, seq) / max(people, 1)}


def report(label, fig, unlimited=None):
    least = max(fig["floor"], unlimited or 0.0)
    ratio = fig["wall"] / least if least > 0 else float("nan")
    print("  %-34s %7.1f s  floor %6.1f s%s  x%-5.2f 429s %5d (%.2f%% of "
          "%d writes)  %.2f req/person"
          % (label, fig["wall"], fig["floor"],
             "" if unlimited is None else " (no limits %.1f s)" % unlimited,
             ratio, fig["throttled"],
             100.0 * fig["throttled"] / max(fig["writes"], 1), fig["writes"],
             fig["requests_per_person"]))
    sys.stdout.flush()


def add_people(env, n, seed):
    """n new in-scope people in the source (a mail domain of their own, so
    that no address repeats one already there)."""
    for u in seed_demo.make_users("wave%d.onmicrosoft.com" % seed, n,
                                  random.Random(seed),
                                  employee_prefix="W%d" % seed):
        env.cloud.create_user(env.source["id"], u)


def first_rounds(args, model):
    factor, n = args.time_factor, args.users
    print("first round, %d people, %s:" % (n, model))
    with tempfile.TemporaryDirectory() as tmp:
        env = Env(tmp, users=n)
        try:
            limit_env(env, model, factor)
            quota = 8000 if n > 500 else 5000
            people = len(env.in_scope())
            fig = measured(env, model, factor, quota,
                           lambda: timed_sync(env), people)
            report("galbridge" if model == "bucket" else
                   "galbridge (learning)", fig)
            if model != "bucket":
                time.sleep(TENANT_PERIOD / factor + 1)
                add_people(env, n, 2)
                people = len(env.in_scope()) - people
                fig = measured(env, model, factor, quota,
                               lambda: timed_sync(env), people)
                report("galbridge, %d more (learnt)" % n, fig)
        finally:
            env.close()
    if model != "bucket" or args.skip_naive:
        return
    with tempfile.TemporaryDirectory() as tmp:
        env = Env(tmp, users=n)
        try:
            limit_env(env, model, factor)
            people = env.in_scope()
            before = target_counts(env)
            fig = naive_round(env, set(people))
            d = delta(target_counts(env), before)
            report("naive", {
                "wall": fig["seconds"], "writes": d["writes"],
                "throttled": d["throttled"],
                "floor": floor_seconds(model, factor, d["writes"],
                                       d["invitations"], d["units"], 8000),
                "requests_per_person": fig["requests"] / max(len(people),
                                                             1)})
        finally:
            env.close()


def burst(env, picked, tag):
    for i, sid in enumerate(picked):
        env.cloud.patch_user(env.source["id"], sid,
                             {"jobTitle": "%s %d" % (tag, i)})


def all_in(env, picked, tag):
    copies = env.copies()
    return sum(1 for i, sid in enumerate(picked)
               if copies[sid][0].get("jobTitle") == "%s %d" % (tag, i))


def bursts(args):
    factor, k = args.time_factor, args.changes
    print("%d changes in a converged %d-person link:" % (k, args.converged))
    with scratch_env(args.converged) as env:
        timed_sync(env)
        timed_sync(env)
        people = sorted(env.in_scope())
        rng = random.Random(3)
        # The same burst with no limits at all: what this machine needs.
        picked = rng.sample(people, k)
        burst(env, picked, "Free")
        free = timed_sync(env)
        print("  no limits: %.1f s" % free)
        for model in args.models:
            forget(env)
            rounds = ["learning", "learnt"] if model != "bucket" else [""]
            for phase in rounds:
                # The last writes have left every period.
                time.sleep(TENANT_PERIOD / factor + 1)
                limit_env(env, model, factor)
                tag = "%s%s" % (model, phase)
                picked = rng.sample(people, k)
                burst(env, picked, tag)
                fig = measured(env, model, factor, 8000,
                               lambda: timed_sync(env), k)
                done = all_in(env, picked, tag)
                report("galbridge, %s%s (%d/%d in)"
                       % (model, ", " + phase if phase else "", done, k),
                       fig, free)
                no_limits(env)
        if args.skip_naive:
            return
        time.sleep(TENANT_PERIOD / factor + 1)
        limit_env(env, "bucket", factor)
        picked = rng.sample(people, k)
        burst(env, picked, "Naive")
        before = target_counts(env)
        fig = naive_update_round(env, set(people))
        d = delta(target_counts(env), before)
        report("naive, bucket (%d/%d in)" % (all_in(env, picked, "Naive"),
                                            k),
               {"wall": fig["seconds"], "writes": d["writes"],
                "throttled": d["throttled"],
                "floor": floor_seconds("bucket", factor, d["writes"], 0,
                                       d["units"], 8000),
                "requests_per_person": fig["requests"] / k}, free)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--converged", type=int, default=10000)
    ap.add_argument("--changes", type=int, default=2500)
    ap.add_argument("--time-factor", type=float, default=5.0)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--skip-first", action="store_true")
    ap.add_argument("--skip-burst", action="store_true")
    ap.add_argument("--lessons", action="store_true",
                    help="print each lesson the writes model took")
    args = ap.parse_args()
    global LESSONS
    LESSONS = args.lessons
    args.models = [m for m in args.models.split(",") if m]
    for m in args.models:
        if m not in MODELS:
            sys.exit("unknown model %s (one of %s)" % (m, ", ".join(MODELS)))
    print("limits at their real sizes, periods %g times shorter"
          % args.time_factor)
    if not args.skip_first:
        for model in args.models:
            first_rounds(args, model)
    if not args.skip_burst:
        bursts(args)


if __name__ == "__main__":
    main()
