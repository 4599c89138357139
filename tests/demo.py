#!/usr/bin/python3
"""make demo: fakecloud with two demo tenants, galbridge running against it.

Starts fakecloud with contoso (3,000 people) and fabrikam (2,000), writes a
galbridge config with guest links in both directions into ./demo/, runs
`galbridge run`, and shows each target's GAL filling with the other
tenant's people; then changes a few people in contoso and shows the next
round carry just those over. Everything stays on 127.0.0.1.
"""
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "fakecloud"))

import client as fc  # noqa: E402
import seed_demo  # noqa: E402

DEMO = os.path.join(ROOT, "demo")
GALBRIDGE = os.environ.get("GALBRIDGE") or os.path.join(ROOT, "galbridge")


def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def config_text(cloud, tenants):
    out = ["# galbridge demo config (made by tests/demo.py)",
           "[galbridge]", "state_dir = %s/state" % DEMO, "log_level = info",
           "interval = 2",
           "; the key of the proof in every anchor: back it up with the"
           " config",
           "anchor_key_file = %s/anchor.key" % DEMO, ""]
    for t in tenants:
        out += ["[tenant %s]" % t["name"], "tenant_id = %s" % t["id"],
                "client_id = %s" % t["apps"][0]["client_id"],
                "client_secret_file = %s/%s.secret" % (DEMO, t["name"]),
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


def pump(stream):
    for line in stream:
        sys.stdout.write("  | " + line)
        sys.stdout.flush()


def main():
    if not os.path.exists(GALBRIDGE):
        sys.exit("demo: build galbridge first (make)")
    shutil.rmtree(DEMO, ignore_errors=True)
    os.makedirs(DEMO)
    secrets_by_name = {n: secrets.token_urlsafe(30)
                       for n in ("contoso", "fabrikam")}
    seed = seed_demo.make_seed(contoso=3000, fabrikam=2000,
                               client_secrets=secrets_by_name)
    for name, value in secrets_by_name.items():
        write_private(os.path.join(DEMO, name + ".secret"), value + "\n")
    if not os.path.exists(os.path.join(DEMO, "anchor.key")):
        write_private(os.path.join(DEMO, "anchor.key"),
                      secrets.token_urlsafe(32) + "\n")

    print("demo: starting fakecloud (contoso: 3,000 people, "
          "fabrikam: 2,000) ...")
    cloud = fc.FakeCloud().start(os.path.join(DEMO, "cloud"), seed=seed)
    proc = None
    try:
        conf = os.path.join(DEMO, "galbridge.conf")
        with open(conf, "w") as f:
            f.write(config_text(cloud, seed["tenants"]))
        print("demo: config written to %s; galbridge check-config says:"
              % conf)
        subprocess.run([GALBRIDGE, "-c", conf, "check-config"], check=True,
                       stdout=subprocess.DEVNULL)
        print("  ok")

        print("demo: starting `galbridge run` (its log lines follow) ...")
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
    main()
