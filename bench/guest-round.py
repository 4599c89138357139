#!/usr/bin/python3
"""bench/guest-round: figures for a guest link's first and idle rounds.

Seeds fakecloud with N source users (default 2,000; --users N), runs
`galbridge sync` into an empty target, then an idle `sync`, and prints for
each: wall time, CPU seconds, requests (and per object written), writes,
and galbridge's peak RSS. Figures, not pass/fail.
"""
import argparse

from benchlib import measured_sync, scratch_env


def report(name, env, before, figures, objects):
    wall, cpu, reqs, rss = figures
    after = env.writes()
    writes = sum(after[k] - before[k] for k in after)
    print("%s: %.2f s wall, %.2f s CPU, %d requests (%.2f per object), "
          "%d writes, peak RSS %.1f MiB"
          % (name, wall, cpu, len(reqs), len(reqs) / objects, writes,
             rss / 1024.0))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=2000)
    args = ap.parse_args()
    with scratch_env(args.users) as env:
        n = len(env.in_scope())
        print("source: %d users, %d in scope" % (args.users, n))
        before = env.writes()
        report("first round", env, before, measured_sync(env), n)
        # The next round reads the target's delta, which holds the new
        # guests once; after that a round with no change is idle.
        before = env.writes()
        report("second round", env, before, measured_sync(env), n)
        before = env.writes()
        report("idle round", env, before, measured_sync(env), n)


if __name__ == "__main__":
    main()
