#!/usr/bin/python3
"""bench/change-burst: 1,000 changes in a converged large link.

Converges a guest link of --users source users (default 100,000; fakecloud
without limits), then turns on fakecloud's enforcement of Graph's write
limits (windows --time-factor times shorter) and galbridge's matching
budget, changes --changes people (default 1,000) in the source and times
the `galbridge sync` that brings them all into the target, against the
least time the budget allows for that many writes. Figures, not
pass/fail.
"""
import argparse
import random
import tempfile

from benchlib import Env, measured_sync, units_limit

APP_WRITES, APP_WINDOW = 3000, 150.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=100000)
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--time-factor", type=float, default=10.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = Env(tmp, users=args.users)
        try:
            for _ in range(3):
                measured_sync(env)
            env.cloud.set_knobs(enforce_limits=True,
                                time_factor=args.time_factor)
            window = int(APP_WINDOW / args.time_factor)
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
            print("%d changes in a converged %d-user link: all in the target "
                  "after %.1f s (%d of %d checked); the budget's least time "
                  "for %d writes is %.1f s: ratio %.2f; %.2f s CPU, %d "
                  "requests, peak RSS %.1f MiB"
                  % (args.changes, args.users, wall, done, args.changes,
                     args.changes, least, wall / least, cpu, len(reqs),
                     rss / 1024.0))
        finally:
            env.close()


if __name__ == "__main__":
    main()
