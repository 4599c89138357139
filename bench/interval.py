#!/usr/bin/python3
"""bench/interval: what an idle round costs, and how long a change takes to
reach the target, to choose the default `interval`.

For a guest link of --users people (default 10,000) and a mail contact
link of --contact-users (default 2,000: fakecloud's Exchange slows down
with the square of its recipients), each converged first: the daemon runs idle rounds at interval 1
and the bench prints, per idle round, the requests each tenant saw (Graph
and Exchange apart), the resource units fakecloud charged (counted with
its limits on but far out of reach) and galbridge's CPU. Then, for the
guest link, the daemon runs at each of --intervals and --samples changes
are made at random moments: the time until each is in the target. Last, a
table of what each interval costs a day against what it gives.
Figures, not pass/fail.
"""
import argparse
import random
import re
import signal
import subprocess
import threading
import time

from benchlib import GALBRIDGE, proc_figures, scratch_env
import client as fc  # noqa: E402  (benchlib puts it on the path)
from idle import converge

# Microsoft's resource units per 10 s for a tenant over 500 users
# (GRAPH-API.md §5), for the share an idle round takes.
UNITS_PER_10S = 8000
FAR = 10 ** 9


def set_object(env, kind):
    text = open(env.conf).read().replace("object = guest",
                                         "object = %s" % kind)
    with open(env.conf, "w") as f:
        f.write(text)


def set_interval(env, seconds):
    text = re.sub(r"^interval = \d+$", "interval = %d" % seconds,
                  open(env.conf).read(), flags=re.M)
    with open(env.conf, "w") as f:
        f.write(text)


def counts(env):
    """{tenant: (graph requests, exchange requests, resource units)}."""
    out = {}
    log = env.cloud.log()
    for name, t in env.tenants.items():
        graph = sum(1 for e in log if e["tenant"] == t["id"]
                    and e["service"] == "graph" and "batch" not in e)
        exo = sum(1 for e in log if e["tenant"] == t["id"]
                  and e["service"] == "exchange")
        units = sum(a.get("units", 0) for a in
                    env.cloud.stats(t["id"])["limits"].values())
        out[name] = (graph, exo, units)
    return out


class Daemon:
    """galbridge run, with its rounds counted from its log."""

    def __init__(self, env):
        self.proc = subprocess.Popen([GALBRIDGE, "-c", env.conf, "run"],
                                     stderr=subprocess.PIPE, text=True)
        self.rounds = 0
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for line in self.proc.stderr:
            if "link round done" in line:
                self.rounds += 1

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def idle_cost(env, rounds):
    env.cloud.set_knobs(enforce_limits=True, limit_app_writes=FAR,
                        limit_tenant_writes=FAR, limit_invitations=FAR,
                        limit_app_units=FAR)
    set_interval(env, 1)
    d = Daemon(env)
    try:
        fc.wait_for(lambda: d.rounds >= 2, timeout=600)
        cpu0, _ = proc_figures(d.proc.pid)
        c0, r0 = counts(env), d.rounds
        fc.wait_for(lambda: d.rounds >= r0 + rounds, timeout=rounds * 5 + 60,
                    interval=0.5)
        cpu1, _ = proc_figures(d.proc.pid)
        c1, n = counts(env), d.rounds - r0
    finally:
        d.stop()
    per = {name: tuple((c1[name][i] - c0[name][i]) / n for i in range(3))
           for name in c1}
    return per, (cpu1 - cpu0) * 1000.0 / n


def latency(env, interval, samples, rng):
    set_interval(env, interval)
    src, dst = env.source["id"], env.tenants["fabrikam"]["id"]
    people = sorted(env.in_scope())
    copies = {}
    for u in env.cloud.users(dst):
        ext = u.get("onPremisesExtensionAttributes") or {}
        a = str(ext.get("extensionAttribute15") or "").split(":")
        if len(a) >= 3:
            copies[a[2]] = u["id"]
    d = Daemon(env)
    took = []
    try:
        fc.wait_for(lambda: d.rounds >= 1, timeout=600)
        for i in range(samples):
            time.sleep(rng.uniform(0, interval))
            sid = rng.choice(people)
            title = "Interval %d sample %d" % (interval, i)
            t0 = time.monotonic()
            env.cloud.patch_user(src, sid, {"jobTitle": title})
            fc.wait_for(lambda: env.cloud.user(dst, copies[sid]).get(
                "jobTitle") == title, timeout=interval * 3 + 60,
                interval=0.1)
            took.append(time.monotonic() - t0)
    finally:
        d.stop()
    return took


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=10000)
    ap.add_argument("--contact-users", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--intervals", default="10,30,60")
    ap.add_argument("--samples", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(7)
    idle = {}
    for kind, users in (("guest", args.users),
                        ("mailcontact", args.contact_users)):
        with scratch_env(users) as env:
            set_object(env, kind)
            converge(env)
            per, ms = idle_cost(env, args.rounds)
            idle[kind] = (per, ms)
            for name, (graph, exo, units) in per.items():
                print("%s link, %d people, idle round: %s: %.1f Graph "
                      "requests, %.1f Exchange requests, %.1f resource "
                      "units" % (kind, users, name, graph, exo, units))
            print("%s link: %.2f ms CPU per idle round" % (kind, ms))
    lat = {}
    with scratch_env(args.users) as env:
        converge(env)
        for interval in [int(x) for x in args.intervals.split(",")]:
            took = latency(env, interval, args.samples, rng)
            lat[interval] = took
            print("interval %d s: change in the target after %s s (mean "
                  "%.1f s)" % (interval, ", ".join("%.1f" % t for t in took),
                               sum(took) / len(took)))
    print()
    print("interval | rounds a day | guest link: requests a day (source, "
          "target), units share | contact link: Exchange requests a day | "
          "CPU a day | change to target, mean")
    for interval in sorted(set([5, 10, 15, 30, 60, 120]) | set(lat)):
        day = 86400.0 / interval
        (gper, gms), (cper, cms) = idle["guest"], idle["mailcontact"]
        src, dst = gper["contoso"], gper["fabrikam"]
        share = max(src[2], dst[2]) / (UNITS_PER_10S * interval / 10.0)
        mean = (sum(lat[interval]) / len(lat[interval])
                if interval in lat else None)
        print("%4d s | %6.0f | %7.0f, %7.0f, %.4f%% | %7.0f | %5.1f s | %s"
              % (interval, day, src[0] * day, dst[0] * day, share * 100,
                 cper["fabrikam"][1] * day, max(gms, cms) * day / 1000.0,
                 "%.1f s" % mean if mean is not None else
                 "~%.0f s (half the interval)" % (interval / 2.0)))


if __name__ == "__main__":
    main()
