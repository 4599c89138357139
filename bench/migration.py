#!/usr/bin/python3
"""bench/migration: a migration link's first round and an idle round.

A mail user link with migration = yes from a source of --users people
(default 2,000; nearly all with a mailbox) into an empty target: the first
`galbridge sync` (every copy made and stamped) and then an idle one. Prints
wall and CPU time, and requests per copied person on each side (Graph and
Exchange, source and target, cmdlets by name). Figures, not pass/fail.
"""
import argparse
import collections
import sys

from benchlib import measured_sync, scratch_env


def cmdlets(env, tenant):
    return collections.Counter(env.cloud.stats(tenant).get("exchange") or {})


def round_figures(env, label, people):
    ids = {name: t["id"] for name, t in env.tenants.items()}
    before = {name: cmdlets(env, tid) for name, tid in ids.items()}
    wall, cpu, reqs, rss = measured_sync(env)
    print("%s: %.1f s wall, %.1f s CPU, peak RSS %.1f MiB, %d requests"
          % (label, wall, cpu, rss / 1024, len(reqs)))
    for name, tid in ids.items():
        side = "source" if name == "contoso" else "target"
        by = collections.Counter(e["service"] for e in reqs
                                 if e.get("tenant") == tid)
        used = cmdlets(env, tid) - before[name]
        print("  %s %s: graph %d (%.3f per person), exchange %d (%.3f per "
              "person): %s"
              % (side, name, by["graph"], by["graph"] / people,
                 by["exchange"], by["exchange"] / people,
                 ", ".join("%s %d" % kv for kv in sorted(used.items()))
                 or "no cmdlet"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=2000)
    args = ap.parse_args()
    with scratch_env(args.users) as env:
        env.write_migration_config()
        people = len(env.in_scope())
        if people == 0:
            sys.exit("no one in scope")
        print("migration link, %d people in scope" % people)
        round_figures(env, "first round", people)
        round_figures(env, "idle round", people)


if __name__ == "__main__":
    main()
