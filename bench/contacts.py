#!/usr/bin/python3
"""bench/contacts: Exchange cmdlets per mail contact (or mail user) in a
first round, and contacts per second when every Exchange request takes
--latency-ms (default 200) to answer.

Seeds fakecloud with N source users (default 1,000; --users N), runs
`galbridge sync` with a mail contact link (--object mailuser for mail
users) into an empty target, and prints: objects made, each cmdlet's
count and the total per object, wall time and objects per second, and
the cmdlets a second, idle round sends. Figures, not pass/fail. The
latency applies to every fakecloud answer (logins and Graph too), which
are few next to the cmdlets.
"""
import argparse

from benchlib import measured_sync, scratch_env


def exchange_counts(env, tenant):
    return dict(env.cloud.stats(env.tenants[tenant]["id"])["exchange"])


def diff(after, before):
    return {k: v - before.get(k, 0) for k, v in after.items()
            if v - before.get(k, 0)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--latency-ms", type=int, default=200)
    ap.add_argument("--object", default="mailcontact",
                    choices=("mailcontact", "mailuser"))
    args = ap.parse_args()
    with scratch_env(args.users) as env:
        text = open(env.conf).read().replace(
            "object = guest", "object = %s" % args.object)
        with open(env.conf, "w") as f:
            f.write(text)
        n = len(env.in_scope())
        env.cloud.set_knobs(latency_ms=args.latency_ms)
        print("source: %d users, %d in scope; %s link; every answer after "
              "%d ms" % (args.users, n, args.object, args.latency_ms))
        before = exchange_counts(env, "fabrikam")
        wall, cpu, reqs, rss = measured_sync(env)
        first = diff(exchange_counts(env, "fabrikam"), before)
        total = sum(first.values())
        print("first round: %d objects, %.1f s wall (%.1f objects/s), "
              "%.2f s CPU" % (n, wall, n / wall if wall else 0, cpu))
        for cmdlet, count in sorted(first.items()):
            print("  %-24s %6d  (%.2f per object)" % (cmdlet, count,
                                                      count / n))
        print("  %-24s %6d  (%.2f per object)" % ("all cmdlets", total,
                                                  total / n))
        before = exchange_counts(env, "fabrikam")
        wall, cpu, reqs, rss = measured_sync(env)
        idle = diff(exchange_counts(env, "fabrikam"), before)
        print("idle round: %.1f s wall, %d cmdlets %s"
              % (wall, sum(idle.values()), idle))


if __name__ == "__main__":
    main()
