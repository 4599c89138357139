"""make demo-shell (tests/demo.py --shell) and the demo's figures.

demo.py --shell is run as make demo-shell runs it, with small tenants in
the test's directory: it must leave a fakecloud running, a config that
checks, one round done, and print the commands it promises; those
commands are then run against it (status, plan, doctor), and --stop must
end that fakecloud. The figures it prints for the first round must be the
ones fakecloud counted, and the time at Microsoft's limits is checked
against worked examples of the rule the README gives ("How fast").
"""
import importlib.util
import json
import os
import re
import signal
import subprocess

import pytest

from conftest import GALBRIDGE, ROOT, fc

DEMO_PY = os.path.join(ROOT, "tests", "demo.py")


def _demo_module():
    spec = importlib.util.spec_from_file_location("demo", DEMO_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _demo(*args):
    env = dict(os.environ, GALBRIDGE=GALBRIDGE)
    return subprocess.run(["/usr/bin/python3", DEMO_PY] + list(args),
                          capture_output=True, text=True, timeout=300,
                          env=env)


def _cloud_pid(directory):
    with open(os.path.join(directory, "cloud", "ready.json")) as f:
        return json.load(f)["pid"]


def _alive(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"fakecloud.py" in f.read()
    except OSError:
        return False


@pytest.fixture
def shell(tmp_path):
    """demo.py --shell in tmp_path/shell; yields (directory, stdout). The
    fakecloud it leaves is killed, by its pid, if the test did not stop
    it."""
    d = str(tmp_path / "shell")
    r = _demo("--shell", "--dir", d, "--contoso", "40", "--fabrikam", "30")
    pid = None
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        pid = _cloud_pid(d)
        yield d, r.stdout
    finally:
        if pid is None and os.path.exists(os.path.join(d, "cloud",
                                                       "ready.json")):
            pid = _cloud_pid(d)
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGTERM)


def test_shell_leaves_a_cloud_to_try_commands_on(shell):
    d, out = shell
    conf = os.path.join(d, "galbridge.conf")
    pid = _cloud_pid(d)
    assert _alive(pid), "fakecloud is not running after --shell"
    assert "Microsoft's rate limits are relaxed" in out
    assert "fakecloud keeps running (pid %d" % pid in out
    assert "kill %d" % pid in out and "make demo-stop" in out
    # The promised commands, exactly, with this config.
    shown = re.findall(r"^  (\S+) -c (\S+) (status|plan|doctor)$", out,
                       re.M)
    assert sorted(c for _, _, c in shown) == ["doctor", "plan", "status"]
    tried = re.findall(r"^  \S+ -c \S+ ((?:explain|setup-trust) .*)$", out,
                       re.M)
    assert [t.split()[0] for t in tried] == ["explain", "setup-trust"]
    assert {p for _, p, _ in shown} == {conf}
    binary = shown[0][0]
    assert os.path.samefile(os.path.join(ROOT, binary)
                            if not os.path.isabs(binary) else binary,
                            GALBRIDGE)

    # One round is done: every link has its copies, nothing pending.
    r = subprocess.run([GALBRIDGE, "-c", conf, "status", "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    links = {link["name"]: link for link in json.loads(r.stdout)["links"]}
    assert set(links) == {"contoso-to-fabrikam", "fabrikam-to-contoso"}
    for link in links.values():
        assert link["objects"] > 0 and link["pending"] == 0, link
        assert link["failed"] == 0 and link["last_success"], link
    # plan and doctor reach the running fakecloud; nothing left to do.
    r = subprocess.run([GALBRIDGE, "-c", conf, "plan", "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([GALBRIDGE, "-c", conf, "doctor"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    for line in tried:
        r = subprocess.run([GALBRIDGE, "-c", conf] + line.split(),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (line, r.stdout + r.stderr)

    # The figures printed are fakecloud's own counts of the round.
    cloud = fc.FakeCloud()
    with open(os.path.join(d, "cloud", "ready.json")) as f:
        cloud.admin_url = json.load(f)["admin_url"]
    seed = json.load(open(os.path.join(d, "cloud", "seed.json")))
    for t in seed["tenants"]:
        st = cloud.stats(t["id"])
        writes = sum(a["writes"] for a in st["limits"].values())
        m = re.search(r"^  %s\s+([\d,]+) writes \(([\d,]+) invitations\)"
                      % t["name"], out, re.M)
        assert m, out
        assert int(m.group(1).replace(",", "")) == writes > 0
        assert int(m.group(2).replace(",", "")) == st["invitations"] > 0

    r = _demo("--stop", "--dir", d)
    assert r.returncode == 0 and "stopped" in r.stdout, r
    assert not _alive(pid)


def test_time_at_real_limits():
    """README, "How fast": Microsoft's token bucket lets a full bucket go
    at once and the rest at the average rate; galbridge spends the same
    bucket, then refills at 97.5% of the rate."""
    demo = _demo_module()
    # Within one bucket: no wait at all, from Microsoft or galbridge.
    assert demo.limit_times(100, 3000, 150) == (0, 0.0)
    # 5,600 writes: 3,000 at once, 2,600 at 20 (19.5) per s.
    floor, paced = demo.limit_times(5600, 3000, 150)
    assert floor == pytest.approx(130) and \
        paced == pytest.approx(2600 / 19.5)
    # README's figures: 2,000 guests (4,000 writes) in under a minute;
    # 10,000 guests, 20,000 writes, at least 14 minutes.
    floor, paced = demo.limit_times(4000, 3000, 150)
    assert floor == pytest.approx(50) and paced < 60
    floor, paced = demo.limit_times(20000, 3000, 150)
    assert floor == pytest.approx(850) and 14 * 60 < paced < 15 * 60
