"""What the benchmarks share: the test harness's Env (in a scratch
directory), and one measured `galbridge sync`.

Importing it puts tests/integration and tests/fakecloud on sys.path, so a
benchmark can then import fakecloud's client as well."""
import contextlib
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tests/integration first: tests/fakecloud has a conftest.py too, and
# `conftest` here means the integration harness.
sys.path.insert(0, os.path.join(ROOT, "tests", "fakecloud"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from conftest import GALBRIDGE, Env  # noqa: E402,F401


@contextlib.contextmanager
def scratch_env(users):
    """An Env with `users` source users in a temporary directory; the Env
    is closed and the directory removed when the block ends, also on an
    error."""
    with tempfile.TemporaryDirectory() as tmp:
        env = Env(tmp, users=users)
        try:
            yield env
        finally:
            env.close()


def measured_sync(env):
    """One sync under GNU time (a child forked from this large Python
    process would count Python's pages in its own peak RSS). Returns wall
    seconds, CPU seconds, the requests fakecloud saw, peak RSS in KiB."""
    log = env.cloud.log()
    seq = log[-1]["seq"] if log else 0
    t0 = time.monotonic()
    r = subprocess.run(["/usr/bin/time", "-f", "TIME %U %S %M", GALBRIDGE,
                        "-c", env.conf, "sync"], capture_output=True,
                       text=True)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit("sync failed: " + r.stderr)
    user, system, rss_kib = r.stderr.strip().splitlines()[-1].split()[1:]
    # Inner requests of a $batch are logged too (key "batch"): they are
    # not HTTP requests of their own.
    reqs = [e for e in env.cloud.log(since=seq)
            if e["service"] != "admin" and "batch" not in e]
    return wall, float(user) + float(system), reqs, int(rss_kib)


def proc_figures(pid):
    """CPU seconds (user + system) and RSS in KiB of a running process,
    from /proc."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / tick
    rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return cpu, rss


def units_limit(factor):
    """galbridge's graph_resource_unit_limit for fakecloud's quota of the
    smallest tenants (3,500 per 10 s) scaled by `factor`: the same rate
    over a window of whole seconds."""
    window = max(1, int(10.0 / factor))
    return "%d/%ds" % (int(3500 * factor / 10.0 * window), window)
