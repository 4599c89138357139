#!/usr/bin/python3
"""bench/scale: galbridge's peak RSS and state.db size by tenant size.

For each size (default 10,000, 50,000 and 100,000 source users): a first
round of a guest link into an empty target (fakecloud without limits,
galbridge without pacing), then an idle round; prints peak RSS of each
(GNU time) and the size of the state directory. Target: peak RSS under
64 MB at 100,000. Figures, not pass/fail.
"""
import argparse
import os

from benchlib import measured_sync, scratch_env


def dir_size(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,50000,100000")
    args = ap.parse_args()
    for size in [int(x) for x in args.sizes.split(",")]:
        with scratch_env(size) as env:
            wall, cpu, reqs, rss = measured_sync(env)
            copies = len(env.copies())
            wall2, cpu2, reqs2, rss2 = measured_sync(env)
            wall3, cpu3, reqs3, rss3 = measured_sync(env)
            print("%7d users: first round %.0f s wall, %.1f s CPU, peak "
                  "RSS %.1f MiB, %d copies; next rounds peak RSS %.1f / "
                  "%.1f MiB; state directory %.1f MiB"
                  % (size, wall, cpu, rss / 1024.0, copies,
                     rss2 / 1024.0, rss3 / 1024.0,
                     dir_size(env.state_dir) / 1048576.0))


if __name__ == "__main__":
    main()
