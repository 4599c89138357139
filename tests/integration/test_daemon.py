"""galbridge run as a service: notify protocol, signals, reload, metrics.

A fake NOTIFY_SOCKET (a datagram socket the test binds) collects what the
daemon tells systemd; stderr is collected line by line. Every wait is for
a condition, with a timeout.
"""
import os
import re
import signal
import socket
import subprocess
import threading

import client as fc
import pytest
from conftest import GALBRIDGE
from test_guests import check_converged


class Daemon:
    """`galbridge run` with a fake notify socket and collected stderr."""

    def __init__(self, env, watchdog_usec=None):
        self.env = env
        self.sock_path = os.path.join(env.tmp, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        self.sock.settimeout(0.2)
        self.messages = []
        self.lines = []
        self.lock = threading.Lock()
        environ = dict(os.environ, NOTIFY_SOCKET=self.sock_path)
        if watchdog_usec:
            environ["WATCHDOG_USEC"] = str(watchdog_usec)
        self.proc = subprocess.Popen([GALBRIDGE, "-c", env.conf, "run"],
                                     stderr=subprocess.PIPE, text=True,
                                     env=environ)
        self.done = False
        threading.Thread(target=self._notify, daemon=True).start()
        threading.Thread(target=self._stderr, daemon=True).start()

    def _notify(self):
        while not self.done:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.messages.append(data.decode())

    def _stderr(self):
        for line in self.proc.stderr:
            with self.lock:
                self.lines.append(line)

    def keys(self):
        """Every KEY=VALUE told so far, in order."""
        with self.lock:
            return [kv for m in self.messages for kv in m.split("\n") if kv]

    def log(self):
        with self.lock:
            return "".join(self.lines)

    def wait_log(self, pattern, timeout=30):
        return fc.wait_for(lambda: re.search(pattern, self.log()),
                           timeout=timeout, what=pattern)

    def wait_key(self, prefix, count=1, timeout=30):
        return fc.wait_for(
            lambda: len([k for k in self.keys() if k.startswith(prefix)])
            >= count, timeout=timeout, what=prefix)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.done = True
            self.sock.close()
        return self.proc.returncode


def wait_all_copied(env, what="condition"):
    """Waits (up to 60 s) until every in-scope source user has a copy in
    the target: the daemon's first round is done."""
    fc.wait_for(lambda: set(env.copies()) == set(env.in_scope()),
                timeout=60, what=what)


def test_ready_then_changes_flow_within_the_interval(make_env):
    env = make_env(users=40)
    env.write_config(extra="", link_extra="interval = 3\n")
    d = Daemon(env)
    try:
        d.wait_key("READY=1")
        wait_all_copied(env, what="first round")
        sid = sorted(env.in_scope())[0]
        env.cloud.patch_user(env.source["id"], sid, {"jobTitle": "Moved"})
        fc.wait_for(lambda: env.copies()[sid][0].get("jobTitle") == "Moved",
                    timeout=3 * 3 + 10, what="the change in the target")
        d.wait_log(r"link round done link=contoso-to-fabrikam read=\d+ "
                   r"created=\d+ .*duration=")
        d.wait_key("STATUS=")
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize("broken", ["half_link", "no_links"])
def test_broken_reload_keeps_running(make_env, broken):
    """A reload to an invalid config, or to one without links, is refused:
    the running links go on."""
    env = make_env(users=20)
    d = Daemon(env)
    try:
        d.wait_key("READY=1")
        wait_all_copied(env)
        good = open(env.conf).read()
        if broken == "half_link":
            with open(env.conf, "a") as f:
                f.write("[link broken]\nsource = contoso\n")
            where = r"(\S+):(\d+): "
        else:
            with open(env.conf, "w") as f:
                f.write(good[:good.index("[link ")])
            where = r"(\S+): no \[link\] sections: nothing to sync"
        d.signal(signal.SIGHUP)
        m = d.wait_log(r"error: reload failed, keeping the running "
                       r"configuration: " + where)
        assert m.group(1) == env.conf
        d.wait_key("READY=1", count=2)
        assert d.proc.poll() is None
        assert "configuration checked" not in d.log()
        # Still syncing with the old configuration.
        with open(env.conf, "w") as f:
            f.write(good)
        sid = sorted(env.in_scope())[0]
        env.cloud.patch_user(env.source["id"], sid, {"city": "Tromsø"})
        d.signal(signal.SIGUSR1)
        fc.wait_for(lambda: env.copies()[sid][0].get("city") == "Tromsø",
                    timeout=30)
    finally:
        assert d.stop() == 0


def test_reload_adds_a_link(make_env):
    env = make_env(users=20)
    d = Daemon(env)
    try:
        d.wait_key("READY=1")
        wait_all_copied(env)
        env.write_config(reverse=True)
        d.signal(signal.SIGHUP)
        d.wait_log(r"configuration reloaded .*links=2")
        keys = [k for k in d.keys() if k in ("READY=1", "RELOADING=1")]
        assert keys[:3] == ["READY=1", "RELOADING=1", "READY=1"]
        assert any(k.startswith("MONOTONIC_USEC=") for k in d.keys())
        fc.wait_for(lambda: set(env.copies("contoso", "fabrikam")) ==
                    set(env.in_scope("fabrikam")), timeout=60,
                    what="the new link's copies")
    finally:
        assert d.stop() == 0


def test_usr1_starts_a_round_now(make_env):
    env = make_env(users=20)
    env.write_config(link_extra="interval = 3600\n")
    d = Daemon(env)
    try:
        wait_all_copied(env)
        sid = sorted(env.in_scope())[1]
        env.cloud.patch_user(env.source["id"], sid, {"department": "Now"})
        d.signal(signal.SIGUSR1)
        fc.wait_for(lambda: env.copies()[sid][0].get("department") == "Now",
                    timeout=30, what="a round after SIGUSR1")
    finally:
        assert d.stop() == 0


def test_sigterm_mid_round_then_restart_finishes(make_env):
    env = make_env(users=300)
    env.cloud.set_knobs(latency_ms=20)
    d = Daemon(env)
    try:
        fc.wait_for(lambda: env.writes()["invitations"] >= 20, timeout=60)
        d.signal(signal.SIGTERM)
        assert d.stop(timeout=25) == 0
        assert "STOPPING=1" in d.keys()
    finally:
        d.stop()
    assert len(env.copies()) < len(env.in_scope())
    env.cloud.set_knobs(latency_ms=0)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    check_converged(env)


def test_sigterm_mid_first_round_is_not_a_success(make_env):
    """A first round stopped by SIGTERM is interrupted, not a success:
    status shows no last success and the operations still pending, the
    metrics file no last success, and the log says so."""
    env = make_env(users=300)
    metrics = os.path.join(env.tmp, "galbridge.prom")
    # Invitations paced at 50 a second: the round takes seconds, so the
    # signal lands in it with room to spare.
    env.limits["fabrikam"] = ("off", "50/1s")
    env.write_config(extra="")
    with open(env.conf) as f:
        text = f.read().replace("interval = 1\n", "interval = 1\n"
                                "metrics_file = %s\n" % metrics, 1)
    with open(env.conf, "w") as f:
        f.write(text)
    d = Daemon(env)
    try:
        fc.wait_for(lambda: env.writes()["invitations"] >= 20, timeout=60,
                    interval=0.01)
        d.signal(signal.SIGTERM)
        assert d.stop(timeout=25) == 0
    finally:
        d.stop()
    made = env.writes()["invitations"]
    assert 0 < made < len(env.in_scope()), made
    link = env.status()["links"][0]
    assert link["last_success"] is None, link
    assert link["pending"] > 0, link
    m = re.search(r"notice: link round interrupted "
                  r"link=contoso-to-fabrikam pending=(\d+) ", d.log())
    assert m, d.log()
    assert int(m.group(1)) == link["pending"]
    assert "link round done" not in d.log()
    series = parse_prometheus(open(metrics).read())
    name = frozenset({("link", "contoso-to-fabrikam")})
    assert series[("galbridge_link_last_success_timestamp_seconds",
                   name)] == 0
    assert series[("galbridge_link_pending_ops", name)] == link["pending"]


def test_watchdog_pings(make_env):
    env = make_env(users=5)
    d = Daemon(env, watchdog_usec=200000)
    try:
        d.wait_key("WATCHDOG=1", count=3, timeout=10)
    finally:
        assert d.stop() == 0


def parse_prometheus(text):
    """{(name, frozenset(labels)): value}, checking the text format."""
    series, typed = {}, set()
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#") or not line:
            continue
        m = line_re.match(line)
        assert m, "not a Prometheus line: %r" % line
        assert m.group(1) in typed, "no # TYPE before %s" % m.group(1)
        labels = frozenset(label_re.findall(m.group(3) or ""))
        key = (m.group(1), labels)
        assert key not in series, "duplicate series %r" % (key,)
        series[key] = float(m.group(4))
    return series


def test_metrics_match_fakecloud(make_env):
    env = make_env(users=30)
    metrics = os.path.join(env.tmp, "galbridge.prom")
    env.write_config(link_extra="interval = 3600\n")
    with open(env.conf) as f:
        text = f.read().replace("interval = 1\n",
                                "interval = 3600\nmetrics_file = %s\n"
                                % metrics)
    with open(env.conf, "w") as f:
        f.write(text)
    d = Daemon(env)
    try:
        fc.wait_for(lambda: os.path.exists(metrics), timeout=60,
                    what="the metrics file")
        series = parse_prometheus(open(metrics).read())
    finally:
        assert d.stop() == 0
    link = frozenset({("link", "contoso-to-fabrikam")})
    assert series[("galbridge_link_rounds_total", link)] == 1
    assert series[("galbridge_link_pending_ops", link)] == 0
    n = len(env.in_scope())
    assert series[("galbridge_link_ops_total", link | {
        ("kind", "create"), ("result", "ok")})] == n
    # Every request the daemon made, as fakecloud logged it.
    names = {t["id"]: name for name, t in env.tenants.items()}
    want = {}
    for e in env.cloud.log():
        # Requests inside a $batch are logged too; they are not HTTP
        # requests of their own.
        if e["service"] in ("login", "graph") and e["tenant"] in names \
                and "batch" not in e:
            key = (names[e["tenant"]], e["service"], str(e["status"]))
            want[key] = want.get(key, 0) + 1
    got = {}
    for (name, labels), value in series.items():
        if name == "galbridge_http_requests_total":
            lab = dict(labels)
            got[(lab["tenant"], lab["service"], lab["status"])] = int(value)
    assert got == want


def test_reload_refuses_a_changed_link_identity(make_env):
    env = make_env(users=10)
    d = Daemon(env)
    try:
        d.wait_key("READY=1")
        text = open(env.conf).read()
        with open(env.conf, "w") as f:
            f.write(text.replace("[link contoso-to-fabrikam]\n"
                                 "source = contoso\ntarget = fabrikam\n",
                                 "[link contoso-to-fabrikam]\n"
                                 "source = fabrikam\ntarget = contoso\n"))
        d.signal(signal.SIGHUP)
        m = d.wait_log(r"reload failed, keeping the running configuration: "
                       r"(\S+):(\d+): link 'contoso-to-fabrikam': source "
                       r"cannot change")
        assert m.group(1) == env.conf
        assert d.proc.poll() is None
    finally:
        assert d.stop() == 0
