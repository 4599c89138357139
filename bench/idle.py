#!/usr/bin/python3
"""bench/idle: what a round costs when nothing changed, by tenant size.

For each size (default 10,000 and 100,000 source users): converge a guest
link (fakecloud without limits, galbridge without pacing), then run the
daemon (interval 1 s, log_level debug) for --rounds idle rounds and print
CPU milliseconds and SQLite statements per idle round (from the daemon's
"link round cost" debug line) and its RSS. The point: both stay the same
whatever the tenant's size. Then one round of the naive approach
(bench/naive.py: no delta, so both tenants listed in full). Figures, not
pass/fail.
"""
import argparse
import re
import signal
import subprocess
import threading
import time

from benchlib import GALBRIDGE, measured_sync, proc_figures, scratch_env
import client as fc  # noqa: E402  (benchlib puts it on the path)
from naive import naive_update_round


def converge(env):
    """First round, then rounds until one writes nothing."""
    t0 = time.monotonic()
    for _ in range(4):
        before = env.writes()
        wall, cpu, reqs, rss = measured_sync(env)
        after = env.writes()
        if sum(after[k] - before[k] for k in after) == 0:
            break
    return time.monotonic() - t0


def idle_rounds(env, rounds):
    text = open(env.conf).read().replace("log_level = info",
                                         "log_level = debug")
    with open(env.conf, "w") as f:
        f.write(text)
    proc = subprocess.Popen([GALBRIDGE, "-c", env.conf, "run"],
                            stderr=subprocess.PIPE, text=True)
    state = {"rounds": 0, "statements": [], "busy": 0}

    def read():
        for line in proc.stderr:
            m = re.search(r"link round cost .* store_statements=(\d+)", line)
            if m:
                state["statements"].append(int(m.group(1)))
                state["rounds"] += 1
            if re.search(r"created=[1-9]|updated=[1-9]|deleted=[1-9]", line):
                state["busy"] += 1
    threading.Thread(target=read, daemon=True).start()
    try:
        fc.wait_for(lambda: state["rounds"] >= 2, timeout=600)
        cpu0, rss0 = proc_figures(proc.pid)
        r0, s0 = state["rounds"], state["statements"][-1]
        fc.wait_for(lambda: state["rounds"] >= r0 + rounds,
                    timeout=rounds * 5 + 120, interval=0.5)
        cpu1, rss1 = proc_figures(proc.pid)
        n = state["rounds"] - r0
        stmts = (state["statements"][-1] - s0) / n
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return (cpu1 - cpu0) * 1000.0 / n, stmts, rss0, rss1, n, state["busy"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--rounds", type=int, default=100)
    args = ap.parse_args()
    for size in [int(x) for x in args.sizes.split(",")]:
        with scratch_env(size) as env:
            took = converge(env)
            ms, stmts, rss0, rss1, n, busy = idle_rounds(env, args.rounds)
            print("%7d users (converged in %.0f s): %d idle rounds, "
                  "%.2f ms CPU and %.1f SQLite statements per round, "
                  "RSS %.1f MiB -> %.1f MiB%s"
                  % (size, took, n, ms, stmts, rss0 / 1024.0,
                     rss1 / 1024.0,
                     "" if busy == 0 else " (%d busy rounds!)" % busy))
            fig = naive_update_round(env, set(env.in_scope()))
            print("%7d users, naive: an idle round lists both tenants "
                  "again: %.1f s wall, %d requests, %d writes"
                  % (size, fig["seconds"], fig["requests"],
                     fig["writes"]))


if __name__ == "__main__":
    main()
