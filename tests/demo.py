#!/usr/bin/python3
"""make demo: fakecloud with two demo tenants, galbridge running against it.

Starts fakecloud with contoso (3,000 people) and fabrikam (2,000), writes a
galbridge config with guest links in both directions into ./demo/, runs
`galbridge run`, and shows each target's GAL filling with the other
tenant's people; then changes a few people in contoso and shows the next
round carry just those over. Everything stays on 127.0.0.1.

Microsoft's rate limits are relaxed for the demo (fakecloud enforces none
and the config turns galbridge's own pacing off), which the demo says; once
the first round is done it prints how long that round would take at the
limits Microsoft documents, from the writes, invitations and resource
units fakecloud counted in it.

`--shell` (make demo-shell) sets the same up in ./demo-shell/, runs one
round (`galbridge sync`), prints the commands to try by hand and exits,
leaving fakecloud running; `--stop` (make demo-stop) stops it. `--dir`,
`--contoso` and `--fabrikam` change where and how many people (the tests
use small numbers).
"""
import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "fakecloud"))

import client as fc  # noqa: E402
import seed_demo  # noqa: E402
from cloud import limits as ms_limits  # noqa: E402

DEMO = os.path.join(ROOT, "demo")
SHELL_DIR = os.path.join(ROOT, "demo-shell")
GALBRIDGE = os.environ.get("GALBRIDGE") or os.path.join(ROOT, "galbridge")
# galbridge's client-side budget spends at most this share of each limit
# (README, "How fast").
BUDGET_SHARE = 0.975


def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def config_text(cloud, tenants, demo=DEMO):
    out = ["# galbridge demo config (made by tests/demo.py)",
           "[galbridge]", "state_dir = %s/state" % demo, "log_level = info",
           "interval = 2",
           "; the key of the proof in every anchor: back it up with the"
           " config",
           "anchor_key_file = %s/anchor.key" % demo, ""]
    for t in tenants:
        out += ["[tenant %s]" % t["name"], "tenant_id = %s" % t["id"],
                "client_id = %s" % t["apps"][0]["client_id"],
                "client_secret_file = %s/%s.secret" % (demo, t["name"]),
                "login_url = %s" % cloud.login_url,
                "graph_url = %s" % cloud.graph_url,
                "exchange_url = %s" % cloud.exchange_url,
                "ca_file = %s" % cloud.ca_file,
                "; fakecloud does not enforce Microsoft's limits in"
                " the demo,",
                "; so galbridge need not pace itself: a real tenant keeps"
                " the defaults",
                "graph_write_limit = off", "invitation_limit = off",
                "graph_resource_unit_limit = off", ""]
    out += ["[link contoso-to-fabrikam]", "source = contoso",
            "target = fabrikam", "object = guest", "",
            "[link fabrikam-to-contoso]", "source = fabrikam",
            "target = contoso", "object = guest", ""]
    return "\n".join(out)


def say_limits_relaxed(cloud):
    """Say on screen how the demo relaxes Microsoft's rate limits, from
    fakecloud's knobs and the config this script writes."""
    knobs = cloud.knobs()
    enforced = [k for k in ("enforce_limits", "enforce_invitation_limit")
                if knobs.get(k)]
    print("demo: Microsoft's rate limits are relaxed here: fakecloud %s,"
          % ("enforces " + " and ".join(enforced) if enforced
             else "enforces none of them"))
    print("  and the config turns galbridge's own pacing off"
          " (graph_write_limit,\n  invitation_limit and"
          " graph_resource_unit_limit = off); a real tenant keeps"
          "\n  galbridge's defaults.")


def unit_quota(knobs, live_users):
    """Resource units per 10 s of a tenant with live_users users: the
    knob when set, else Microsoft's quota by tenant size."""
    if knobs.get("limit_app_units") is not None:
        return knobs["limit_app_units"]
    for below, quota in ms_limits.UNIT_QUOTAS:
        if live_users < below:
            return quota
    return ms_limits.UNIT_QUOTA_LARGE


def limit_times(count, limit, window):
    """(floor, paced) seconds for count requests under limit per window
    seconds: the floor Microsoft's token bucket allows (a full bucket at
    once, the rest at limit / window per second), and galbridge's pace
    (README, "How fast": the same bucket, refilled at BUDGET_SHARE of the
    rate)."""
    rest = max(0, count - limit)
    floor = rest / (limit / window)
    paced = rest / (BUDGET_SHARE * limit / window)
    return floor, paced


def round_at_real_limits(cloud, tenants):
    """What the round so far cost each tenant, as fakecloud counted it,
    and the time Microsoft's documented limits would take for it:
    fakecloud's knob defaults, 3,000 writes per 150 s per app and tenant,
    18,000 per 300 s per tenant, 150 invitations per 5 s, resource units
    per 10 s by tenant size. Tenants have limits of their own and are
    written in parallel, so the round takes as long as its slowest tenant.
    Returns (rows, floor, paced, bound): one dict per tenant, the round's
    floor and paced seconds (limit_times), and the limit that binds the
    slowest tenant, as text."""
    knobs = cloud.knobs()
    rows = []
    for t in tenants:
        st = cloud.stats(t["id"])
        per_app = list(st.get("limits", {}).values())
        # One app per tenant in the demo; with more, the busiest one.
        writes = max([a.get("writes", 0) for a in per_app] or [0])
        units = max([a.get("units", 0) for a in per_app] or [0])
        all_writes = sum(a.get("writes", 0) for a in per_app)
        invitations = st.get("invitations", 0)
        live = sum(1 for u in cloud.users(t["id"]) if not u.get("deleted"))
        quota = unit_quota(knobs, live)
        limits = (
            (writes, knobs["limit_app_writes"], ms_limits.LIMIT_APP_WINDOW,
             "writes"),
            (all_writes, knobs["limit_tenant_writes"],
             ms_limits.LIMIT_TENANT_WINDOW, "writes (all apps)"),
            (invitations, knobs["limit_invitations"],
             ms_limits.INVITATION_WINDOW, "invitations"),
            (units, quota, ms_limits.UNIT_WINDOW, "resource units"))
        times = []
        for count, limit, window, what in limits:
            floor, paced = limit_times(count, limit, window)
            times.append((paced, floor, "{:,} {} at {:,} per {:g} s".format(
                count, what, limit, window)))
        paced, _, bound = max(times)
        rows.append({"tenant": t["name"], "writes": all_writes,
                     "invitations": invitations, "units": units,
                     "floor": max(f for _, f, _ in times), "paced": paced,
                     "bound": bound})
    slowest = max(rows, key=lambda r: r["paced"])
    return (rows, max(r["floor"] for r in rows), slowest["paced"],
            "%s, %s" % (slowest["tenant"], slowest["bound"]))


def minutes(seconds):
    if seconds < 10:
        return "%.1f s" % seconds
    seconds = int(round(seconds))
    if seconds < 60:
        return "%d s" % seconds
    return "%d min %02d s" % (seconds // 60, seconds % 60)


def say_real_time(cloud, tenants, took):
    """Print the first round's figures and its time at the real limits
    (round_at_real_limits); returns (floor, paced) seconds."""
    rows, floor, paced, bound = round_at_real_limits(cloud, tenants)
    print("demo: the first round took %s here; what it cost each tenant:"
          % minutes(took))
    for r in rows:
        print("  {:<9} {:>7,} writes ({:,} invitations), {:>8,} resource"
              " units".format(r["tenant"], r["writes"], r["invitations"],
                              r["units"]))
    print("demo: at the limits Microsoft documents, the same round would"
          " take\n  about %s with galbridge's pacing (a full bucket, then"
          " %.1f%% of each\n  limit's rate), held by %s;\n  no tool could do it"
          " in less than %s." % (minutes(paced), BUDGET_SHARE * 100, bound,
                                  minutes(floor)))
    return floor, paced


def make_demo_dir(demo, contoso, fabrikam):
    """A fresh demo directory with the secrets and the anchor key, and the
    seed for fakecloud."""
    shutil.rmtree(demo, ignore_errors=True)
    os.makedirs(demo)
    secrets_by_name = {n: secrets.token_urlsafe(30)
                       for n in ("contoso", "fabrikam")}
    seed = seed_demo.make_seed(contoso=contoso, fabrikam=fabrikam,
                               client_secrets=secrets_by_name)
    for name, value in secrets_by_name.items():
        write_private(os.path.join(demo, name + ".secret"), value + "\n")
    write_private(os.path.join(demo, "anchor.key"),
                  secrets.token_urlsafe(32) + "\n")
    return seed


def start_demo(demo, contoso, fabrikam, who, log=None):
    """A fresh demo directory, fakecloud started in it with the demo
    tenants (its output to log, if given), the limits said, and a config
    written and checked. Returns (cloud, seed, config path); on an error
    fakecloud is stopped again."""
    seed = make_demo_dir(demo, contoso, fabrikam)
    print("{}: starting fakecloud (contoso: {:,} people, fabrikam: {:,})"
          " ...".format(who, contoso, fabrikam))
    cloud = fc.FakeCloud().start(os.path.join(demo, "cloud"), seed=seed,
                                 log=log)
    try:
        say_limits_relaxed(cloud)
        conf = os.path.join(demo, "galbridge.conf")
        with open(conf, "w") as f:
            f.write(config_text(cloud, seed["tenants"], demo))
        subprocess.run([GALBRIDGE, "-c", conf, "check-config"], check=True,
                       stdout=subprocess.DEVNULL)
        print("%s: config written to %s; galbridge check-config: ok"
              % (who, conf))
    except BaseException:
        cloud.stop()
        raise
    return cloud, seed, conf


def is_fakecloud(pid):
    """Whether pid runs fakecloud (neither gone nor a zombie)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read().split(b"\0")
    except OSError:
        return False
    return any(arg.endswith(b"fakecloud.py") for arg in cmdline)


def running_cloud(demo):
    """The pid of the fakecloud a --shell left in demo, or None: its
    ready.json names the pid, and /proc says it still runs fakecloud."""
    try:
        with open(os.path.join(demo, "cloud", "ready.json")) as f:
            pid = int(json.load(f)["pid"])
    except (OSError, ValueError, KeyError):
        return None
    return pid if is_fakecloud(pid) else None


def stop(demo):
    pid = running_cloud(demo)
    if pid is None:
        print("demo: no fakecloud running in %s" % demo)
        return 0
    os.kill(pid, signal.SIGTERM)
    # By the pid: fakecloud removes its ready.json before it is done.
    fc.wait_for(lambda: not is_fakecloud(pid), timeout=30,
                what="fakecloud %d to stop" % pid)
    print("demo: fakecloud (pid %d) stopped" % pid)
    return 0


def shell(demo, contoso, fabrikam):
    """make demo-shell: fakecloud with the demo tenants, a config, one
    round, then instructions; fakecloud stays running."""
    if running_cloud(demo) is not None:
        stop(demo)
    cloud, seed, conf = start_demo(demo, contoso, fabrikam, "demo-shell",
                                   log=os.path.join(demo, "fakecloud.log"))
    ok = False
    try:
        print("demo-shell: running a first round (galbridge sync; its log"
              " goes to\n  %s) ..." % os.path.join(demo, "sync.log"))
        start = time.monotonic()
        with open(os.path.join(demo, "sync.log"), "w") as log:
            r = subprocess.run([GALBRIDGE, "-c", conf, "sync"], stdout=log,
                               stderr=subprocess.STDOUT)
        took = time.monotonic() - start
        if r.returncode != 0:
            print("demo-shell: galbridge sync exited %d; see %s"
                  % (r.returncode, os.path.join(demo, "sync.log")))
            return 1
        say_real_time(cloud, seed["tenants"], took)
        ok = True
    finally:
        if not ok:
            cloud.stop()
    g = os.path.relpath(GALBRIDGE)
    if not g.startswith((".", "/")):
        g = "./" + g
    who = next(u["mail"] for t in seed["tenants"] if t["name"] == "contoso"
               for u in t["users"] if u.get("mail"))
    print("""
demo-shell: fakecloud keeps running (pid {pid}, log {demo}/fakecloud.log).
Try galbridge by hand:

  {g} -c {conf} status
  {g} -c {conf} plan
  {g} -c {conf} doctor
  {g} -c {conf} explain contoso-to-fabrikam {who}
  {g} -c {conf} setup-trust contoso-to-fabrikam
      (what it would change; --yes writes it, then doctor has no warning)
  {g} -c {conf} sync
  {g} -c {conf} run
      (the daemon in the foreground; Ctrl-C stops it)

Stop fakecloud when done:

  make demo-stop            (or: kill {pid})
""".format(pid=cloud.pid, demo=demo, g=g, conf=conf, who=who))
    return 0


def pump(stream):
    for line in stream:
        sys.stdout.write("  | " + line)
        sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--shell", action="store_true",
                      help="set up, run one round, leave fakecloud running")
    mode.add_argument("--stop", action="store_true",
                      help="stop the fakecloud --shell left running")
    parser.add_argument("--dir", help="the demo directory (default "
                        "./demo, ./demo-shell with --shell and --stop)")
    parser.add_argument("--contoso", type=int, default=3000)
    parser.add_argument("--fabrikam", type=int, default=2000)
    args = parser.parse_args()
    demo = os.path.abspath(args.dir or (SHELL_DIR if args.shell or args.stop
                                        else DEMO))
    if args.stop:
        return stop(demo)
    if not os.path.exists(GALBRIDGE):
        sys.exit("demo: build galbridge first (make)")
    if args.shell:
        return shell(demo, args.contoso, args.fabrikam)
    cloud, seed, conf = start_demo(demo, args.contoso, args.fabrikam,
                                   "demo")
    proc = None
    try:
        print("demo: starting `galbridge run` (its log lines follow) ...")
        start = time.monotonic()
        proc = subprocess.Popen([GALBRIDGE, "-c", conf, "run"],
                                stderr=subprocess.PIPE, text=True)
        threading.Thread(target=pump, args=(proc.stderr,),
                         daemon=True).start()

        contoso, fabrikam = seed["tenants"][0], seed["tenants"][1]

        def gal(target, source):
            """Visible galbridge guests in target made from source."""
            prefix = "galbridge:%s:" % source["id"]
            n = 0
            for u in cloud.users(target["id"]):
                ext = u.get("onPremisesExtensionAttributes") or {}
                if (not u.get("deleted") and u.get("showInAddressList")
                        and str(ext.get("extensionAttribute15") or "")
                        .startswith(prefix)):
                    n += 1
            return n

        def in_scope(tenant):
            return sum(1 for u in tenant["users"]
                       if u.get("userType", "Member") == "Member"
                       and u.get("accountEnabled", True) and u.get("mail")
                       and u.get("creationType") != "Invitation")

        want = (in_scope(contoso), in_scope(fabrikam))
        last = [None]

        def filled():
            now = (gal(fabrikam, contoso), gal(contoso, fabrikam))
            if now != last[0]:
                print("demo: GAL of fabrikam: %5d/%d contoso people | "
                      "GAL of contoso: %5d/%d fabrikam people"
                      % (now[0], want[0], now[1], want[1]), flush=True)
                last[0] = now
            return now == want

        fc.wait_for(filled, timeout=600, interval=1.0,
                    what="both GALs filled")
        say_real_time(cloud, seed["tenants"], time.monotonic() - start)

        people = [u for u in contoso["users"] if u.get("mail")
                  and u.get("accountEnabled", True)][:3]
        print("demo: giving 3 contoso people new job titles ...")
        for i, u in enumerate(people):
            cloud.patch_user(contoso["id"], u["id"],
                             {"jobTitle": "Demo Title %d" % (i + 1)})

        def carried():
            titles = {}
            for u in cloud.users(fabrikam["id"]):
                ext = u.get("onPremisesExtensionAttributes") or {}
                anchor = str(ext.get("extensionAttribute15") or "")
                # galbridge:<tenant>:<id>, then its proof
                parts = anchor.split(":")
                if len(parts) >= 3:
                    titles[parts[2]] = u.get("jobTitle")
            return all(titles.get(u["id"]) == "Demo Title %d" % (i + 1)
                       for i, u in enumerate(people))
        fc.wait_for(carried, timeout=60, what="the change in fabrikam")
        print("demo: fabrikam's GAL now shows the new titles:")
        for i, u in enumerate(people):
            print("  %-28s Demo Title %d" % (u["displayName"], i + 1))
        print("demo: final status:")
        subprocess.run([GALBRIDGE, "-c", conf, "status"])
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        cloud.stop()


if __name__ == "__main__":
    sys.exit(main())
