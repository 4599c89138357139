#!/usr/bin/python3
"""make demo: fakecloud with two demo tenants, galbridge running against it.

Starts fakecloud with contoso (3,000 people) and fabrikam (2,000), writes a
galbridge config for links in both directions into ./demo/, runs
`galbridge run`, and shows each source tenant's users filling galbridge's
store; then changes a few people in contoso and shows the next round pick up
just those. Everything stays on 127.0.0.1; Ctrl-C stops it.
"""
import json
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
           "interval = 2", ""]
    for t in tenants:
        out += ["[tenant %s]" % t["name"], "tenant_id = %s" % t["id"],
                "client_id = %s" % t["apps"][0]["client_id"],
                "client_secret_file = %s/%s.secret" % (DEMO, t["name"]),
                "login_url = %s" % cloud.login_url,
                "graph_url = %s" % cloud.graph_url,
                "exchange_url = %s" % cloud.exchange_url,
                "ca_file = %s" % cloud.ca_file, ""]
    out += ["[link contoso-to-fabrikam]", "source = contoso",
            "target = fabrikam", "object = guest", "",
            "[link fabrikam-to-contoso]", "source = fabrikam",
            "target = contoso", "object = mailcontact", ""]
    return "\n".join(out)


def status():
    r = subprocess.run([GALBRIDGE, "-c", os.path.join(DEMO, "galbridge.conf"),
                        "status", "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)


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

        def sources_done():
            st = status()
            if not st or not st["sources"]:
                return None
            for s in st["sources"]:
                print("demo: source %-8s %5d users in galbridge's store" %
                      (s["name"], s["objects"]))
            return all(s["last_round"] for s in st["sources"]) and st

        fc.wait_for(sources_done, timeout=120, interval=0.5,
                    what="first rounds")

        contoso = seed["tenants"][0]
        people = [u for u in contoso["users"] if u.get("mail")][:3]
        print("demo: renaming 3 people in contoso and deleting 1 ...")
        for i, u in enumerate(people):
            cloud.patch_user(contoso["id"], u["id"],
                             {"jobTitle": "Demo Title %d" % (i + 1)})
        cloud.delete_user(contoso["id"], contoso["users"][10]["id"])
        seq = cloud.log()[-1]["seq"]

        def picked_up():
            for e in cloud.log(service="graph", since=seq):
                if (e["tenant"] == contoso["id"]
                        and "$deltatoken=" in e["query"]
                        and e["status"] == 200):
                    return True
            return False
        fc.wait_for(picked_up, timeout=30, what="the next contoso round")

        def stored():
            st = status()
            return st and any(s["name"] == "contoso" and s["soft_deleted"]
                              for s in st["sources"])
        fc.wait_for(stored, timeout=30, what="the round's commit")
        print("demo: final status:")
        subprocess.run([GALBRIDGE, "-c", conf, "status"])
        print("demo: galbridge read both tenants and then only what changed."
              " Writing guests and contacts to the targets comes with the "
              "next release.")
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
