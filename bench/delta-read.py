#!/usr/bin/python3
"""bench/delta-read: figures for reading a source tenant with users/delta.

Seeds fakecloud with N users (default 2,000; --users N), runs one
`galbridge sync` from an empty store, then one after --changes changes, and
prints wall time, CPU time, requests made and galbridge's peak RSS for
each. Figures, not pass/fail: this machine is noisy.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "tests", "fakecloud"))

from conftest import GALBRIDGE, Env  # noqa: E402


def measured_sync(env):
    """Run one sync under GNU time: a child forked from this (large) Python
    process would count Python's pages in its own peak RSS."""
    log = env.cloud.log()
    seq = log[-1]["seq"] if log else 0
    t0 = time.monotonic()
    r = subprocess.run(["/usr/bin/time", "-f", "TIME %U %S %M", GALBRIDGE,
                        "-c", env.conf, "sync"], capture_output=True,
                       text=True)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit("sync failed: " + r.stderr)
    user, system, rss_kib = r.stderr.strip().splitlines()[-1].split()[1:]
    reqs = [e for e in env.cloud.log(since=seq) if e["service"] != "admin"]
    return wall, float(user) + float(system), reqs, int(rss_kib)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--changes", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = Env(tmp, users=args.users)
        try:
            wall, cpu, reqs, rss = measured_sync(env)
            graph = sum(1 for e in reqs if e["service"] == "graph")
            login = sum(1 for e in reqs if e["service"] == "login")
            print("first read: %d users in %.2f s wall, %.2f s CPU, "
                  "%d requests (%d Graph pages, %d token), peak RSS %.1f MiB"
                  % (args.users, wall, cpu, len(reqs), graph, login,
                     rss / 1024.0))
            users = env.cloud.users(env.source["id"])[:args.changes]
            for i, u in enumerate(users):
                env.cloud.patch_user(env.source["id"], u["id"],
                                     {"jobTitle": "Bench %d" % i})
            wall, cpu, reqs, rss = measured_sync(env)
            print("after %d changes: %.2f s wall, %.2f s CPU, %d requests"
                  % (args.changes, wall, cpu, len(reqs)))
        finally:
            env.close()


if __name__ == "__main__":
    main()
