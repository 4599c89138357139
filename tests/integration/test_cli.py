"""The command line outside any command: -h/--help, -V/--version, -c and
--config, and what a bad invocation gets (usage on stderr, exit 2)."""
import os
import re
import subprocess

GALBRIDGE = os.environ.get("GALBRIDGE", "./galbridge")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def run(*args):
    return subprocess.run([GALBRIDGE] + list(args), capture_output=True,
                          text=True, timeout=30)


def version_h():
    with open(os.path.join(ROOT, "include", "version.h")) as f:
        return re.search(r'#define GALBRIDGE_VERSION "([^"]+)"',
                         f.read()).group(1)


def test_version_short_and_long():
    want = "galbridge %s\n" % version_h()
    for flag in ("-V", "--version"):
        r = run(flag)
        assert (r.returncode, r.stdout, r.stderr) == (0, want, ""), flag


def test_help_short_and_long():
    for flag in ("-h", "--help"):
        r = run(flag)
        assert r.returncode == 0 and r.stderr == "", flag
        assert r.stdout.startswith("usage: galbridge "), r.stdout
        assert "--config FILE" in r.stdout and "--version" in r.stdout


def test_bad_invocations_exit_2_with_usage_on_stderr():
    for args in ((), ("--no-such-option",), ("-x",), ("-c",),
                 ("--config",), ("no-such-command",)):
        r = run(*args)
        assert r.returncode == 2, (args, r)
        assert r.stdout == "", args
        assert "usage: galbridge" in r.stderr, (args, r.stderr)


def test_config_long_form_names_the_file(tmp_path):
    missing = str(tmp_path / "nowhere.conf")
    for args in (("-c", missing), ("--config", missing),
                 ("--config=" + missing,)):
        r = run(*(args + ("check-config",)))
        assert r.returncode != 0, args
        assert missing in r.stderr, (args, r.stderr)
