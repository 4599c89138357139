#!/usr/bin/python3
"""bench/latency: how long a source change takes to reach the target.

Runs `galbridge run` with interval 30 (--interval) on a converged link and
makes --changes changes (default 20) at random moments, one at a time;
for each it measures the time until the target guest shows it. Prints the
median and the worst. Figures, not pass/fail.
"""
import argparse
import random
import signal
import statistics
import subprocess
import sys
import time

from benchlib import GALBRIDGE, scratch_env
import client as fc  # noqa: E402  (benchlib puts it on the path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interval", type=int, default=30)
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--users", type=int, default=200)
    args = ap.parse_args()
    rng = random.Random(5)
    with scratch_env(args.users) as env:
        text = open(env.conf).read().replace(
            "interval = 1\n", "interval = %d\n" % args.interval)
        with open(env.conf, "w") as f:
            f.write(text)
        if env.run("sync").returncode != 0:
            sys.exit("first round failed")
        guests = {sid: c[0]["id"] for sid, c in env.copies().items()}
        fab = env.tenants["fabrikam"]["id"]
        proc = subprocess.Popen([GALBRIDGE, "-c", env.conf, "run"],
                                stderr=subprocess.DEVNULL)
        latencies = []
        try:
            for i in range(args.changes):
                # A random moment within the interval.
                pause = rng.uniform(0, args.interval)
                deadline = time.monotonic() + pause
                fc.wait_for(lambda: time.monotonic() >= deadline,
                            timeout=pause + 5, interval=0.2)
                sid = rng.choice(sorted(guests))
                title = "Latency %d" % i
                env.cloud.patch_user(env.source["id"], sid,
                                     {"jobTitle": title})
                t0 = time.monotonic()
                fc.wait_for(lambda: env.cloud.user(fab, guests[sid])
                            .get("jobTitle") == title,
                            timeout=args.interval * 3, interval=0.1)
                latencies.append(time.monotonic() - t0)
                print("change %2d: %.1f s" % (i + 1, latencies[-1]),
                      flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        print("interval %d s, %d changes: median %.1f s, worst %.1f s"
              % (args.interval, len(latencies),
                 statistics.median(latencies), max(latencies)))


if __name__ == "__main__":
    main()
