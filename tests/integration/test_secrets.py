"""Secrets stay secret (DESIGN.md invariant 6) and least privilege.

A canary client secret (fabrikam) and a canary certificate credential
(contoso: certificate and private key in one PEM file) go through a
realistic run: sync of guests one way and of mail contacts the other way,
plan --json,
status --json, check-config, doctor, the daemon with a metrics file, a
SIGHUP and a stop, all at log_level = debug. Then none of the canaries may
appear in any output, in any byte of the state directory (database, WAL,
everything), in the metrics file, or in anything fakecloud received on
Graph or Exchange (it records raw headers and bodies for this test); the
private key may not reach the token endpoint either (only a signed
assertion goes there). Searched forms: the secret as it is and
form-encoded; the key's PEM body (whole and line by line), its DER in
base64 and base64url, and its private exponent in hex and decimal.

Also: secret and key files readable by group or others are refused with
exit 78 before anything is sent; the state directory is 0700 and the
database 0600; the running daemon is not dumpable (so no core file and no
/proc/PID/mem for its own user).
"""
import base64
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import urllib.parse

import pytest

import client as fc
from conftest import GALBRIDGE, Env
from test_daemon import Daemon

# The reliability report's recorder (a no-op outside `make reliability`).
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "reliability"))
from record import crashes, record  # noqa: E402


def canaries(env, key):
    """{label: bytes} of every form of the secrets to look for."""
    from cryptography.hazmat.primitives import serialization
    secret = env.tenants["fabrikam"]["secret"]
    pem = fc.key_pem(key)
    body_lines = [line for line in pem.splitlines()
                  if line and not line.startswith("-----")]
    der = key.private_bytes(serialization.Encoding.DER,
                            serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    d = key.private_numbers().d
    found = {
        "client secret": secret,
        "client secret, form-encoded": urllib.parse.quote_plus(secret),
        "PEM body": "".join(body_lines),
        "DER, base64": base64.b64encode(der).decode(),
        "DER, base64url": base64.urlsafe_b64encode(der).decode()
        .rstrip("="),
        "private exponent, hex": "%x" % d,
        "private exponent, decimal": str(d),
    }
    # Any 64-character line of the PEM body but the last (short) one.
    for i, line in enumerate(body_lines[:-1]):
        found["PEM line %d" % (i + 1)] = line
    # The key of the anchors' proof goes nowhere at all (it signs what
    # is sent; it is never sent).
    if env.anchor_key:
        with open(env.anchor_key) as f:
            found["anchor key"] = f.read().strip()
    return {label: text.encode() for label, text in found.items()}


def leaks(blob, marks, where):
    """[(where, label)] of the canaries found in blob (bytes)."""
    if isinstance(blob, str):
        blob = blob.encode("utf-8", "replace")
    low = blob.lower()
    out = []
    for label, mark in marks.items():
        if mark in blob or (label.startswith("private exponent, hex")
                            and mark.lower() in low):
            out.append((where, label))
    return out


def make_secret_env(tmp, users=40):
    cert_pem, key = fc.make_certificate()
    env = Env(tmp, users=users, cert_pem=cert_pem)
    cred = os.path.join(env.tmp, "contoso-cert.pem")
    fd = os.open(cred, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(cert_pem + fc.key_pem(key))
    env.cred_file = cred
    env.key = key
    return env


def write_full_config(env, metrics):
    # Guests one way, mail contacts the other: each credential reads
    # Graph, and writes to Graph (fabrikam) or Exchange (contoso).
    mail = ("[link fabrikam-to-contoso]\nsource = fabrikam\n"
            "target = contoso\nobject = mailcontact\n\n")
    env.write_config(contoso_credential="certificate_file = %s"
                     % env.cred_file, extra=mail)
    with open(env.conf) as f:
        text = f.read()
    text = text.replace("log_level = info\n", "log_level = debug\n")
    text = text.replace("interval = 1\n", "interval = 3600\n"
                        "metrics_file = %s\n" % metrics)
    with open(env.conf, "w") as f:
        f.write(text)


@pytest.fixture
def raw_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKECLOUD_RECORD_RAW", "1")
    env = make_secret_env(tmp_path)
    monkeypatch.delenv("FAKECLOUD_RECORD_RAW")
    yield env
    env.close()


def test_canaries_never_leak(raw_env):
    env = raw_env
    marks = canaries(env, env.key)
    metrics = os.path.join(env.tmp, "galbridge.prom")
    write_full_config(env, metrics)
    outputs = []

    codes = []

    def run(*args, ok=(0,)):
        r = env.run(*args)
        codes.append(r.returncode)
        outputs.append((" ".join(args), r.stdout + r.stderr))
        assert r.returncode in ok, (args, r.stderr[-3000:])
        return r

    run("check-config")
    run("plan", "--json")
    run("sync")
    run("status", "--json")
    # A change, so the next rounds write too.
    sid = sorted(env.in_scope())[0]
    env.cloud.patch_user(env.source["id"], sid, {"jobTitle": "Changed"})
    run("plan")
    run("sync")
    run("doctor")
    # Tokens expire: the next requests fetch new ones.
    env.cloud.set_knobs(revoke_tokens=True)

    d = Daemon(env)
    try:
        fc.wait_for(lambda: os.path.exists(metrics), timeout=60,
                    what="the metrics file")
        d.signal(signal.SIGHUP)
        d.wait_log(r"configuration reloaded")
        d.signal(signal.SIGUSR1)
        d.wait_log(r"(?s)configuration reloaded.*link round done")
    finally:
        codes.append(d.stop())
        assert codes[-1] == 0
    outputs.append(("run", d.log()))

    # The run really used both credentials, refreshed, and wrote.
    logins = env.cloud.log(service="login")
    assert any("client_assertion=" in e["body"] for e in logins)
    assert any("client_secret=" in e["body"] for e in logins)
    assert env.copies().get(sid, [{}])[0].get("jobTitle") == "Changed"
    assert env.status()["links"]

    found = []
    for what, text in outputs:
        found += leaks(text, marks, "output of " + what)
    for root, _, files in os.walk(env.state_dir):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found += leaks(f.read(), marks, path)
    with open(metrics, "rb") as f:
        found += leaks(f.read(), marks, "metrics file")
    for e in env.cloud.log():
        if e["service"] == "admin":
            continue
        if "batch" in e:
            # An inner request of a $batch: its text is in the body of
            # the $batch POST, recorded raw with that entry.
            assert "headers" not in e
        else:
            assert "headers" in e and "body" in e, e
        sent = "%s?%s\n%r\n%s" % (e["path"], e["query"],
                                  e.get("headers"), e.get("body", ""))
        if e["service"] == "login":
            # The secret's home; the key never goes there.
            key_marks = {k: v for k, v in marks.items()
                         if not k.startswith("client secret")}
            found += leaks(sent, key_marks, "token request")
        else:
            found += leaks(sent, marks, "%s request %s" % (e["service"],
                                                           e["path"]))
    record("canary secrets", injected=len(marks), secrets=len(found),
           crashes=crashes(*codes))
    assert found == []
    # The canaries are findable where they belong (the search works).
    assert leaks(open(env.cred_file).read(), marks, "key file")
    assert leaks("\n".join(e["body"] for e in logins), marks, "login")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_state_directory_private(make_env):
    env = make_env(users=5)
    assert not os.path.exists(env.state_dir)
    r = env.run("sync")
    assert r.returncode == 0, r.stderr
    assert mode(env.state_dir) == 0o700


def test_state_database_private(make_env):
    env = make_env(users=5)
    old = os.umask(0o022)             # what a shell or a plain unit gives
    try:
        r = env.run("sync")
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    assert mode(os.path.join(env.state_dir, "state.db")) == 0o600
    for name in os.listdir(env.state_dir):
        assert mode(os.path.join(env.state_dir, name)) & 0o077 == 0, name


def nothing_sent(env):
    return [e for e in env.cloud.log() if e["service"] != "admin"] == []


@pytest.mark.parametrize("bits", [0o640, 0o604, 0o660])
def test_loose_client_secret_refused(make_env, bits):
    env = make_env(users=5)
    path = os.path.join(env.tmp, "fabrikam.secret")
    os.chmod(path, bits)
    for args in (("check-config",), ("sync",), ("run",)):
        r = env.run(*args, timeout=60)
        record("loose credential file", injected=1,
               crashes=crashes(r.returncode))
        assert r.returncode == 78, (args, r.stderr)
        assert re.search(r"%s:\d+: .*client_secret_file %s is accessible "
                         r"by group or others" % (re.escape(env.conf),
                                                  re.escape(path)),
                         r.stderr), r.stderr
        assert "chmod" in r.stderr
    assert nothing_sent(env)
    assert not os.path.exists(os.path.join(env.state_dir, "state.db"))


@pytest.mark.parametrize("separate_key", [False, True])
def test_loose_private_key_refused(tmp_path, separate_key):
    env = make_secret_env(tmp_path, users=5)
    try:
        if separate_key:
            cert_pem = open(env.cred_file).read().split(
                "-----BEGIN PRIVATE KEY-----")[0]
            key_file = os.path.join(env.tmp, "contoso.key")
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(fc.key_pem(env.key))
            with open(env.cred_file, "w") as f:
                f.write(cert_pem)
            os.chmod(env.cred_file, 0o644)     # a certificate is public
            os.chmod(key_file, 0o644)
            cred = "certificate_file = %s\nkey_file = %s" % (env.cred_file,
                                                             key_file)
            loose = ("key_file", key_file)
        else:
            os.chmod(env.cred_file, 0o640)
            cred = "certificate_file = %s" % env.cred_file
            loose = ("certificate_file", env.cred_file)
        env.write_config(contoso_credential=cred)
        for args in (("check-config",), ("sync",)):
            r = env.run(*args)
            record("loose credential file", injected=1,
                   crashes=crashes(r.returncode))
            assert r.returncode == 78, (args, r.stderr)
            assert re.search(r"%s:\d+: .*%s %s is accessible by group or "
                             r"others" % (re.escape(env.conf), loose[0],
                                          re.escape(loose[1])),
                             r.stderr), r.stderr
        assert nothing_sent(env)
        # Tightened, the same config works.
        os.chmod(loose[1], 0o600)
        r = env.run("sync")
        assert r.returncode == 0, r.stderr[-3000:]
    finally:
        env.close()


def proc_uid(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError("no Uid line")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as nobody")
def test_daemon_not_dumpable():
    """The files of a process that is not dumpable, /proc/PID/status and
    /proc/PID/mem among them, are owned by root whatever the process's own
    uid (proc(5), PR_SET_DUMPABLE). Run the daemon as nobody and look; a
    plain process as nobody is the control."""
    nobody = 65534
    top = tempfile.mkdtemp(prefix="galbridge-dumpable-", dir="/tmp")
    env = None
    control = None
    daemon = None
    try:
        os.chmod(top, 0o755)
        env = Env(top, users=5)
        os.chown(env.tmp, nobody, nobody)
        for name in ("contoso.secret", "fabrikam.secret",
                     "anchor-key.secret", "galbridge.conf"):
            os.chown(os.path.join(env.tmp, name), nobody, nobody)
        errlog = open(os.path.join(top, "daemon.log"), "w")
        daemon = subprocess.Popen([GALBRIDGE, "-c", env.conf, "run"],
                                  stdout=subprocess.DEVNULL, stderr=errlog,
                                  user=nobody, group=nobody,
                                  extra_groups=[])
        db = os.path.join(env.state_dir, "state.db")
        fc.wait_for(lambda: daemon.poll() is not None or
                    env.copies(), timeout=60, what="the daemon's first round")
        assert daemon.poll() is None, open(errlog.name).read()
        assert os.path.exists(db)
        assert proc_uid(daemon.pid) == nobody
        for name in ("status", "mem", "environ"):
            assert os.stat("/proc/%d/%s" % (daemon.pid, name)).st_uid == 0

        control = subprocess.Popen(["/bin/cat"], stdin=subprocess.PIPE,
                                   user=nobody, group=nobody,
                                   extra_groups=[])
        assert proc_uid(control.pid) == nobody
        for name in ("status", "mem", "environ"):
            assert os.stat("/proc/%d/%s" % (control.pid,
                                             name)).st_uid == nobody
    finally:
        for proc in (daemon, control):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        if env is not None:
            env.close()
        shutil.rmtree(top, ignore_errors=True)
