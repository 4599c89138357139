#!/usr/bin/python3
"""bench/first-round: filling an empty target at Microsoft's write budget.

N source users (default 10,000) into an empty target tenant, against a
fakecloud that enforces the documented Graph limits with every window
--time-factor times shorter (default 10: 3,000 writes per 15 s per app,
18,000 per 30 s per tenant, 150 invitations per 0.5 s). galbridge is
configured with the same scaled limit. Prints wall time, the writes/s
achieved over the allowed rate, 429s received, requests per object, CPU
seconds per 1,000 objects and peak RSS; then the naive approach (one
request after another, no batching, no pacing: bench/naive.py) against a
fresh fakecloud with the same limits, in the same sitting. Figures, not
pass/fail.
"""
import argparse
import tempfile

from benchlib import Env, measured_sync, units_limit
from naive import naive_round

APP_WRITES, APP_WINDOW = 3000, 150.0


def limited_env(tmp, users, factor):
    env = Env(tmp, users=users)
    env.cloud.set_knobs(enforce_limits=True, time_factor=factor)
    # The target's budget, scaled like fakecloud's windows. Invitations:
    # fakecloud allows 150 per 5/factor s; galbridge's windows are whole
    # seconds, so it keeps to 150 per second, never more than fakecloud
    # allows (writes, the limit that binds here, are scaled exactly).
    # Resource units: the smallest quota, 3,500 per 10/factor s.
    env.limits["fabrikam"] = ("%d/%ds" % (APP_WRITES, int(APP_WINDOW / factor)),
                              "150/1s", units_limit(factor))
    env.write_config()
    return env


def write_span(env, since_seq=0):
    """Seconds from the first to the last Graph write fakecloud saw."""
    times = [e["time"] for e in env.cloud.log(since=since_seq)
             if e["service"] == "graph"
             and e["method"] in ("POST", "PATCH", "DELETE")]
    if len(times) < 2:
        return 0.0
    import datetime
    parse = (lambda t: datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ"))
    return (parse(times[-1]) - parse(times[0])).total_seconds()


def client_figures(env):
    stats = env.cloud.stats(env.tenants["fabrikam"]["id"])
    limits = stats.get("limits", {})
    per_app = limits.get(env.tenants["fabrikam"]["client_id"], {})
    return per_app


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=10000)
    ap.add_argument("--time-factor", type=float, default=10.0)
    ap.add_argument("--skip-naive", action="store_true")
    args = ap.parse_args()
    allowed = APP_WRITES / (APP_WINDOW / args.time_factor)
    print("first round: %d source users, limits scaled by %g: %.0f writes/s "
          "allowed per app" % (args.users, args.time_factor, allowed))

    with tempfile.TemporaryDirectory() as tmp:
        env = limited_env(tmp, args.users, args.time_factor)
        try:
            n = len(env.in_scope())
            wall, cpu, reqs, rss = measured_sync(env)
            app = client_figures(env)
            writes = app.get("writes", 0)
            span = write_span(env)
            rate = writes / span if span else 0
            copies = env.copies()
            dupes = sum(1 for v in copies.values() if len(v) > 1)
            print("galbridge: %d objects in %.1f s wall; %d writes at %.1f/s "
                  "= %.2f of the budget; %d 429s (%.2f%% of writes); %.2f "
                  "requests per object; %.2f s CPU per 1,000 objects; peak "
                  "RSS %.1f MiB; %d copied, %d duplicated"
                  % (n, wall, writes, rate, rate / allowed,
                     app.get("throttled", 0),
                     100.0 * app.get("throttled", 0) / max(writes, 1),
                     len(reqs) / max(n, 1), cpu * 1000.0 / max(n, 1),
                     rss / 1024.0, len(copies), dupes))
        finally:
            env.close()

    if args.skip_naive:
        return
    with tempfile.TemporaryDirectory() as tmp:
        env = limited_env(tmp, args.users, args.time_factor)
        try:
            scope = env.in_scope()
            fig = naive_round(env, set(scope))
            app = client_figures(env)
            span = write_span(env)
            rate = fig["writes"] / span if span else 0
            print("naive:     %d objects in %.1f s wall; %d writes at %.1f/s "
                  "= %.2f of the budget; %d 429s (%.2f%% of writes); %.2f "
                  "requests per object"
                  % (fig["objects"], fig["seconds"], fig["writes"], rate,
                     rate / allowed, fig["throttled"],
                     100.0 * fig["throttled"] / max(fig["writes"], 1),
                     fig["requests"] / max(fig["objects"], 1)))
        finally:
            env.close()


if __name__ == "__main__":
    main()
