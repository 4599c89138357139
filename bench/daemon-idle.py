#!/usr/bin/python3
"""bench/daemon-idle: the daemon's cost when nothing changes.

Runs `galbridge run` (interval 1 s) against a converged link until it has
done --rounds idle rounds (default 1,000), then prints CPU seconds per
round, CPU per hour at interval 60 and at interval 1, and RSS before and
after (from /proc). Figures, not pass/fail.
"""
import argparse
import re
import signal
import subprocess
import sys
import threading
import time

from benchlib import GALBRIDGE, proc_figures, scratch_env
import client as fc  # noqa: E402  (benchlib puts it on the path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--users", type=int, default=2000)
    args = ap.parse_args()
    with scratch_env(args.users) as env:
        if env.run("sync").returncode != 0 or \
                env.run("sync").returncode != 0:
            sys.exit("first rounds failed")
        proc = subprocess.Popen([GALBRIDGE, "-c", env.conf, "run"],
                                stderr=subprocess.PIPE, text=True)
        rounds = [0]

        def count():
            for line in proc.stderr:
                if "link round done" in line:
                    rounds[0] += 1
                if re.search(r"created=[1-9]|updated=[1-9]", line):
                    print("not idle: " + line.strip())
        threading.Thread(target=count, daemon=True).start()
        fc.wait_for(lambda: rounds[0] >= 2, timeout=60)
        cpu0, rss0 = proc_figures(proc.pid)
        r0, t0 = rounds[0], time.monotonic()
        fc.wait_for(lambda: rounds[0] >= r0 + args.rounds,
                    timeout=args.rounds * 3 + 60, interval=1.0)
        cpu1, rss1 = proc_figures(proc.pid)
        n, wall = rounds[0] - r0, time.monotonic() - t0
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        per = (cpu1 - cpu0) / n
        print("%d idle rounds in %.0f s: %.2f ms CPU per round; CPU per "
              "hour %.2f s at interval 60, %.1f s at interval 1; RSS "
              "%.1f MiB after 2 rounds, %.1f MiB after %d more"
              % (n, wall, per * 1000, per * 60, per * 3600,
                 rss0 / 1024, rss1 / 1024, n))


if __name__ == "__main__":
    main()
