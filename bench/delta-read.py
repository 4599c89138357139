#!/usr/bin/python3
"""bench/delta-read: figures for reading a source tenant with users/delta.

Seeds fakecloud with N users (default 2,000; --users N), runs one
`galbridge sync` from an empty store, then one after --changes changes, and
prints wall time, CPU time, requests made and galbridge's peak RSS for
each. The link's scope takes nobody, so the figures are those of reading
(the source, and the small target). Figures, not pass/fail.
"""
import argparse

from benchlib import measured_sync, scratch_env


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--changes", type=int, default=10)
    args = ap.parse_args()
    with scratch_env(args.users) as env:
        env.write_config(link_extra="scope_filter = department eq "
                                    "'nobody here'\n")
        wall, cpu, reqs, rss = measured_sync(env)
        pages = sum(1 for e in reqs if e["service"] == "graph"
                    and e["tenant"] == env.source["id"])
        print("first read: %d users in %.2f s wall, %.2f s CPU, "
              "%d requests (%d source pages, %d for the target, "
              "tokens included), peak RSS %.1f MiB"
              % (args.users, wall, cpu, len(reqs), pages,
                 len(reqs) - pages, rss / 1024.0))
        users = env.cloud.users(env.source["id"])[:args.changes]
        for i, u in enumerate(users):
            env.cloud.patch_user(env.source["id"], u["id"],
                                 {"jobTitle": "Bench %d" % i})
        wall, cpu, reqs, rss = measured_sync(env)
        print("after %d changes: %.2f s wall, %.2f s CPU, %d requests"
              % (args.changes, wall, cpu, len(reqs)))


if __name__ == "__main__":
    main()
