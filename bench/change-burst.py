#!/usr/bin/python3
"""bench/change-burst: 1,000 changes in a converged large link.

Converges a guest link of --users source users (default 100,000; fakecloud
without limits), then turns on fakecloud's enforcement of Graph's write
limits (windows --time-factor times shorter) and galbridge's matching
budget, changes --changes people (default 1,000) in the source and times
the `galbridge sync` that brings them all into the target, against the
least time the budget allows for that many writes; then the naive
approach (bench/naive.py) on another burst of the same size. Figures, not
pass/fail.
"""
import argparse
import random
import time

from benchlib import measured_sync, scratch_env, units_limit
from naive import naive_update_round

APP_WRITES, APP_WINDOW = 3000, 150.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=100000)
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--time-factor", type=float, default=10.0)
    args = ap.parse_args()
    with scratch_env(args.users) as env:
        for _ in range(3):
            measured_sync(env)
        env.cloud.set_knobs(enforce_limits=True,
                            time_factor=args.time_factor)
        window = int(APP_WINDOW / args.time_factor)
        # fakecloud's windows count the writes of the converging
        # rounds too, and a new `galbridge sync` does not know them:
        # the burst comes once they have left the window, as changes
        # to a converged link do.
        time.sleep(window + 1)
        env.limits["fabrikam"] = ("%d/%ds" % (APP_WRITES, window),
                                  "150/1s",
                                  units_limit(args.time_factor))
        env.write_config()
        people = sorted(env.in_scope())
        picked = random.Random(3).sample(people, args.changes)
        for i, sid in enumerate(picked):
            env.cloud.patch_user(env.source["id"], sid,
                                 {"jobTitle": "Burst %d" % i})
        wall, cpu, reqs, rss = measured_sync(env)
        copies = env.copies()
        done = sum(1 for i, sid in enumerate(picked)
                   if copies[sid][0].get("jobTitle") == "Burst %d" % i)
        least = args.changes / (APP_WRITES / window)
        # The naive approach on the same link: another burst, then one
        # of its rounds (everything listed again, one PATCH after
        # another, no pacing).
        for i, sid in enumerate(picked):
            env.cloud.patch_user(env.source["id"], sid,
                                 {"jobTitle": "Naive %d" % i})
        time.sleep(window + 1)
        fig = naive_update_round(env, set(people))
        copies = env.copies()
        naive_done = sum(1 for i, sid in enumerate(picked)
                         if copies[sid][0].get("jobTitle") ==
                         "Naive %d" % i)
        print("%d changes in a converged %d-user link: all in the target "
              "after %.1f s (%d of %d checked); the budget's least time "
              "for %d writes is %.1f s: ratio %.2f; %.2f s CPU, %d "
              "requests, peak RSS %.1f MiB"
              % (args.changes, args.users, wall, done, args.changes,
                 args.changes, least, wall / least, cpu, len(reqs),
                 rss / 1024.0))
        print("naive: all in the target after %.1f s (%d of %d checked):"
              " ratio %.2f; %d requests, %d 429s"
              % (fig["seconds"], naive_done, args.changes,
                 fig["seconds"] / least, fig["requests"],
                 fig["throttled"]))


if __name__ == "__main__":
    main()
