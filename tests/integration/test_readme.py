"""The README's way from the demo to two real tenants, run from the
README's own text against fakecloud.

Each step the README marks as tested sits under an HTML comment
`<!-- readme-test: NAME -->`: the fenced block (or table) after it is
what runs here, as an administrator would run it, with only what cannot
be the same on this machine replaced: /etc/galbridge becomes a scratch
directory, the example tenant and client ids become fakecloud's, and the
tenants' endpoints point at fakecloud. Steps done in Microsoft's portals
and PowerShell (registering the application, admin consent, the Exchange
role) have no block here: fakecloud registers the certificates the
certificate step made, as the upload would.
"""
import os
import re
import shlex
import subprocess

import pytest

import client as fc

from conftest import GALBRIDGE, ROOT as REPO

README = os.path.join(REPO, "README.md")

# The ids of the README's example config, in the order of its tenants.
EXAMPLE_IDS = {
    "contoso": ("11111111-1111-4111-8111-111111111111",
                "22222222-2222-4222-8222-222222222222"),
    "fabrikam": ("33333333-3333-4333-8333-333333333333",
                 "44444444-4444-4444-8444-444444444444"),
}
EXAMPLE_PERSON = "adele.vance@contoso.com"


def readme_step(name):
    """(kind, text) of the block the README marks `readme-test: name`:
    kind is the fence's language, or "table" for a table."""
    text = open(README, encoding="utf-8").read()
    m = re.search(r"<!-- readme-test: %s -->\n(```(\w+)\n(.*?)```|"
                  r"(\|.*?)\n\n)" % re.escape(name), text, re.S)
    assert m, "README has no step marked readme-test: %s" % name
    if m.group(2):
        return m.group(2), m.group(3)
    return "table", m.group(4)


def shell_lines(text):
    """The commands of a sh block, comments and continuations folded."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split("  #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def make_certificates(tmp):
    """The certificate step, in `tmp` rather than /etc/galbridge."""
    kind, text = readme_step("certificate")
    assert kind == "sh"
    script = text.replace("/etc/galbridge", tmp)
    r = subprocess.run(["sh", "-e", "-c", script], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return {name: open(os.path.join(tmp, name + ".crt")).read()
            for name in ("contoso", "fabrikam")}


def readme_config(env, creds):
    """The config step with fakecloud's ids and endpoints, the state in
    the test's directory; the files it names are in `creds` (as
    $CREDENTIALS_DIRECTORY)."""
    kind, text = readme_step("config")
    assert kind == "ini"
    for name, (tid, cid) in EXAMPLE_IDS.items():
        assert tid in text and cid in text, name
        text = text.replace(tid, env.tenants[name]["id"])
        text = text.replace(cid, env.tenants[name]["client_id"])
        # Only the endpoints differ from a real tenant's section.
        endpoints = ("login_url = %s\ngraph_url = %s\nexchange_url = %s\n"
                     "ca_file = %s\ngraph_write_limit = off\n"
                     "invitation_limit = off\n"
                     "graph_resource_unit_limit = off\n"
                     % (env.cloud.login_url, env.cloud.graph_url,
                        env.cloud.exchange_url, env.cloud.ca_file))
        text = text.replace("[tenant %s]\n" % name,
                            "[tenant %s]\n%s" % (name, endpoints), 1)
    text = text.replace("[galbridge]\n", "[galbridge]\nstate_dir = %s\n"
                        % env.state_dir, 1)
    path = os.path.join(env.tmp, "readme.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def galbridge(conf, creds, line):
    """One `galbridge ...` line of the README, with -c CONF, under
    $CREDENTIALS_DIRECTORY as systemd sets it."""
    args = shlex.split(line)
    assert args[0] == "galbridge", line
    return subprocess.run([GALBRIDGE, "-c", conf] + args[1:],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, CREDENTIALS_DIRECTORY=creds))


@pytest.fixture
def readme_env(make_env, tmp_path):
    creds = str(tmp_path / "etc-galbridge")
    os.mkdir(creds, 0o700)
    certs = make_certificates(creds)
    env = make_env(users=30, cert_pem=certs)
    return env, creds, readme_config(env, creds)


def test_certificates_config_and_first_sync(readme_env):
    """Steps 2, 6 and 7: the certificates made by the README's commands
    sign galbridge in to both tenants, the README's config is accepted
    as written, and each command of the first sync succeeds; after it
    every in-scope person of contoso is a guest in fabrikam."""
    env, creds, conf = readme_env
    for name in ("contoso.key", "fabrikam.key", "anchor.key"):
        assert os.stat(os.path.join(creds, name)).st_mode & 0o077 == 0, name
    kind, text = readme_step("first-sync")
    assert kind == "sh"
    lines = shell_lines(text)
    assert [shlex.split(l)[1] for l in lines] == [
        "check-config", "doctor", "plan", "sync", "status", "explain"]
    person = sorted(u["mail"] for u in env.in_scope().values())[0]
    for line in lines:
        r = galbridge(conf, creds, line.replace(EXAMPLE_PERSON, person))
        assert r.returncode == 0, (line, r.stdout, r.stderr)
        assert "PRIVATE KEY" not in r.stdout + r.stderr
    logins = [e for e in env.cloud.log(service="login")
              if e["status"] == 200]
    assert {e["tenant"] for e in logins} == {
        env.tenants["contoso"]["id"], env.tenants["fabrikam"]["id"]}
    guests = {u["mail"].lower() for u in env.cloud.users(
        env.tenants["fabrikam"]["id"]) if u.get("userType") == "Guest"}
    assert {u["mail"].lower() for u in env.in_scope().values()} <= guests


def test_trust_step(readme_env):
    """Step 4: the first setup-trust prints the plan and changes nothing,
    the second (--yes) writes it; doctor then finds the trust in place."""
    env, creds, conf = readme_env
    kind, text = readme_step("trust")
    assert kind == "sh"
    dry, apply = shell_lines(text)
    before = len(env.cloud.log())
    r = galbridge(conf, creds, dry)
    assert r.returncode == 0, r.stderr
    assert "nothing changed; run again with --yes" in r.stdout
    assert not [e for e in env.cloud.log()[before:]
                if e["service"] == "graph" and e["method"] != "GET"]
    r = galbridge(conf, creds, apply)
    assert r.returncode == 0, r.stdout + r.stderr
    r = galbridge(conf, creds, "galbridge doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "WARN" not in r.stdout, r.stdout
    r = galbridge(conf, creds, dry)
    assert "already set" in r.stdout, r.stdout


def test_credentials_are_the_files_the_config_names(readme_env):
    """Step 8: the unit's LoadCredential= lines hand over exactly the
    files the config names, from where the certificate step put them."""
    env, creds, conf = readme_env
    kind, text = readme_step("credentials")
    assert kind == "ini"
    loaded = {}
    for line in text.splitlines():
        if line.startswith("LoadCredential="):
            name, source = line[len("LoadCredential="):].split(":", 1)
            loaded[name] = source
    _, config = readme_step("config")
    named = set(re.findall(r"^(?:certificate_file|key_file|anchor_key_file)"
                           r" = (\S+)$", config, re.M))
    assert set(loaded) == named
    for name, source in loaded.items():
        assert source == "/etc/galbridge/" + name
        assert os.path.exists(os.path.join(creds, name)), name


def test_alerts_name_metrics_galbridge_writes(readme_env):
    """Step 9: every metric the alert table uses is in the metrics file
    galbridge writes."""
    env, creds, conf = readme_env
    kind, table = readme_step("alerts")
    assert kind == "table"
    names = set(re.findall(r"galbridge_[a-z_]+", table))
    assert len(names) >= 6
    metrics = os.path.join(env.tmp, "galbridge.prom")
    text = open(conf).read().replace(
        "[galbridge]\n", "[galbridge]\nmetrics_file = %s\n" % metrics, 1)
    with open(conf, "w") as f:
        f.write(text)
    # The daemon writes it after each round.
    proc = subprocess.Popen([GALBRIDGE, "-c", conf, "run"],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ,
                                     CREDENTIALS_DIRECTORY=creds))
    try:
        fc.wait_for(lambda: os.path.exists(metrics), timeout=60,
                    what="the metrics file")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    written = set(re.findall(r"^(galbridge_[a-z_]+)", open(metrics).read(),
                             re.M))
    assert names <= written, names - written
