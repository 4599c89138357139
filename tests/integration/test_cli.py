"""The command line itself: -h/--help, -V/--version, -c and --config
(before or after the command), each command's --help, and what a bad
invocation gets (a message naming what was expected, usage on stderr,
exit 2)."""
import os
import re
import subprocess

from conftest import example_config

GALBRIDGE = os.environ.get("GALBRIDGE", "./galbridge")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


DEFAULT = "/etc/galbridge/galbridge.conf"

# Each command, its synopsis and its one line, as galbridge(8) has them.
COMMANDS = {
    "run": ("", "run as a daemon in the foreground"),
    "sync": ("[--link NAME [--user WHO]]",
             "one round of every link (or of link NAME, or of its person "
             "WHO), then exit"),
    "plan": ("[--link NAME] [--json]",
             "show what the next round would change; nothing is written to "
             "any tenant"),
    "status": ("[--json]", "per link and source: objects, pending work"),
    "check-config": ("", "validate and print the effective config"),
    "doctor": ("", "check credentials and permissions online"),
    "approve-deletes": ("LINK", "release the deletes held for LINK"),
    "approve-creates": ("LINK",
                        "release the creates held for LINK (max_creates)"),
    "resync": ("LINK", "read LINK's source and target again in full and "
               "retry its failed operations"),
    "explain": ("LINK WHO [--json]",
                "why WHO (an object id, mail or user principal name in "
                "LINK's source or target) is or is not in the target's "
                "address list, and what the next round would do; "
                "read-only"),
    "migration-check": ("[LINK] [--json | --csv]",
                        "whether the people of the migration links (or "
                        "LINK) can be moved now, and the fix for each "
                        "failure; read-only"),
    "setup-trust": ("LINK [--yes]",
                    "print the cross-tenant access settings LINK's guests "
                    "need that are missing in its two tenants; with --yes, "
                    "write them"),
}


def run(*args):
    return subprocess.run([GALBRIDGE] + list(args), capture_output=True,
                          text=True, timeout=30)


def usage_line(cmd):
    synopsis = COMMANDS[cmd][0]
    return "usage: galbridge [-c FILE] %s%s" % (
        cmd, " " + synopsis if synopsis else "")


def usage_error(args, first, cmd=None):
    """args exit 2 with nothing on stdout, `first` as the first line of
    stderr, then the command's usage line (cmd) or the whole usage."""
    r = run(*args)
    assert (r.returncode, r.stdout) == (2, ""), (args, r)
    lines = r.stderr.splitlines()
    assert lines[0] == first, (args, r.stderr)
    if cmd is not None:
        assert lines[1:] == [usage_line(cmd)], (args, r.stderr)
    else:
        assert lines[1] == "usage: galbridge [-c FILE] COMMAND [ARGS]", \
            (args, r.stderr)
    return r


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


def test_help_lists_every_command():
    out = run("--help").stdout
    for cmd, (synopsis, _) in COMMANDS.items():
        assert re.search(r"^  %s%s( |$)" % (
            re.escape(cmd), re.escape(" " + synopsis if synopsis else "")),
            out, re.M), cmd
    assert "       galbridge COMMAND --help\n" in out
    assert "-c may come after the command too; the last one given wins.\n" \
        in out
    assert max(len(line) for line in out.splitlines()) <= 79


def test_each_command_help_on_stdout():
    for cmd, (synopsis, help_line) in COMMANDS.items():
        for flag in ("--help", "-h"):
            r = run(cmd, flag)
            assert (r.returncode, r.stderr) == (0, ""), (cmd, flag, r)
            lines = r.stdout.splitlines()
            assert lines[0] == usage_line(cmd), (cmd, r.stdout)
            assert lines[1] == "", r.stdout
            para = r.stdout.split("\n\n")[1]
            assert " ".join(para.split()) == help_line, (cmd, para)
            assert ("  -c, --config FILE  config file (default %s)"
                    % DEFAULT) in lines
            assert "  -h, --help         this help" in lines
            assert max(len(line) for line in lines) <= 79
            for opt in ("--link NAME", "--json", "--csv"):
                assert (opt in synopsis) == ("      " + opt in r.stdout), \
                    (cmd, opt)
            assert ("LINK" in synopsis) == any(
                line.startswith("  LINK  ") for line in lines), cmd
        # -c before the command, or --help after other arguments: the same.
        assert run("-c", "/nowhere", cmd, "--help").stdout == r.stdout


def test_sync_help_exactly():
    r = run("sync", "--help")
    assert r.stdout == (
        "usage: galbridge [-c FILE] sync [--link NAME [--user WHO]]\n"
        "\n"
        "one round of every link (or of link NAME, or of its person WHO), "
        "then exit\n"
        "\n"
        "options:\n"
        "      --link NAME    only the link NAME\n"
        "      --user WHO     only the person WHO of link NAME (an object "
        "id, mail or\n"
        "                     user principal name in its source): read now, "
        "planned and\n"
        "                     written at once\n"
        "  -c, --config FILE  config file (default %s)\n"
        "  -h, --help         this help\n" % DEFAULT)


def test_config_after_the_command(tmp_path):
    conf = example_config(tmp_path)
    before = run("-c", conf, "check-config")
    assert before.returncode == 0, before.stderr
    for args in (("check-config", "-c", conf),
                 ("check-config", "--config", conf),
                 ("check-config", "--config=" + conf),
                 ("check-config", "-c" + conf),
                 ("-c", str(tmp_path / "not-this"), "check-config", "-c",
                  conf)):
        r = run(*args)
        assert (r.returncode, r.stdout) == (0, before.stdout), (args, r)
    # The last one wins, before or after the command.
    missing = str(tmp_path / "nowhere.conf")
    for args in (("-c", conf, "check-config", "-c", missing),
                 ("-c", conf, "-c", missing, "check-config"),
                 ("check-config", "--config", conf, "--config=" + missing)):
        r = run(*args)
        assert r.returncode == 78, (args, r)
        assert r.stderr == "%s: No such file or directory\n" % missing, args
    # After a command that takes options of its own, mixed with them.
    r = run("status", "--json", "-c", missing)
    assert r.returncode == 78 and missing in r.stderr


def test_option_without_its_value():
    for args, first, cmd in (
            (("-c",), "galbridge: option '-c' needs a value (a config file)",
             None),
            (("--config",),
             "galbridge: option '--config' needs a value (a config file)",
             None),
            (("--config=", "sync"),
             "galbridge: option '--config' needs a value (a config file)",
             None),
            (("sync", "--link"),
             "galbridge: option '--link' needs a value (a link name)",
             "sync"),
            (("plan", "--json", "--link"),
             "galbridge: option '--link' needs a value (a link name)",
             "plan"),
            (("sync", "--link="),
             "galbridge: option '--link' needs a value (a link name)",
             "sync"),
            (("status", "-c"),
             "galbridge: option '-c' needs a value (a config file)",
             "status"),
            (("migration-check", "--config"),
             "galbridge: option '--config' needs a value (a config file)",
             "migration-check")):
        usage_error(args, first, cmd)


def test_unknown_commands_name_the_nearest():
    for args, first in (
            (("synk",),
             "galbridge: unknown command 'synk' (did you mean 'sync'?)"),
            (("stauts",),
             "galbridge: unknown command 'stauts' (did you mean 'status'?)"),
            (("check",), "galbridge: unknown command 'check' "
             "(did you mean 'check-config'?)"),
            (("-c", "/x", "aprove-deletes", "l"),
             "galbridge: unknown command 'aprove-deletes' "
             "(did you mean 'approve-deletes'?)"),
            (("bogus",), "galbridge: unknown command 'bogus'"),
            (("x",), "galbridge: unknown command 'x'")):
        r = usage_error(args, first)
        assert "\ncommands:\n" in r.stderr


def test_unknown_and_misplaced_options():
    for args, first, cmd in (
            (("--bogus",), "galbridge: unknown option '--bogus'", None),
            (("-x",), "galbridge: unknown option '-x'", None),
            (("--verison",), "galbridge: unknown option '--verison' "
             "(did you mean '--version'?)", None),
            (("--status",), "galbridge: unknown option '--status' "
             "(did you mean the command 'status'?)", None),
            (("--json", "status"), "galbridge: option '--json' goes after "
             "a command that takes it (plan, status, explain, migration-check)",
             None),
            (("status", "--jsno"), "galbridge: unknown option '--jsno' "
             "(did you mean '--json'?)", "status"),
            (("status", "--link", "l"),
             "galbridge: status has no option '--link'", "status"),
            (("sync", "-V"), "galbridge: sync has no option '-V'", "sync"),
            (("status", "--json=yes"),
             "galbridge: option '--json' takes no value", "status"),
            (("migration-check", "--c"), "galbridge: option '--c' is "
             "ambiguous: --config --csv", "migration-check"),
            (("-c", "/x"),
             "galbridge: a command is needed after the options", None)):
        usage_error(args, first, cmd)


def test_command_arguments():
    for cmd in ("approve-deletes", "resync"):
        usage_error((cmd,), "galbridge: %s needs an argument (a link name)"
                    % cmd, cmd)
        usage_error((cmd, "a", "b"), "galbridge: unexpected argument 'b'",
                    cmd)
    for cmd in ("run", "sync", "check-config", "doctor", "status"):
        usage_error((cmd, "extra"), "galbridge: unexpected argument 'extra'",
                    cmd)
    usage_error(("migration-check", "--json", "--csv"),
                "galbridge: --json and --csv cannot be combined",
                "migration-check")
    usage_error(("migration-check", "a", "--csv", "b"),
                "galbridge: unexpected argument 'b'", "migration-check")


def test_long_option_prefixes_and_end_of_options(tmp_path):
    """As with getopt_long: a unique prefix of a long option, "--" ends
    the options."""
    want = "galbridge %s\n" % version_h()
    assert run("--vers").stdout == want
    missing = str(tmp_path / "nowhere.conf")
    for args in (("--conf", missing, "check-config"),
                 ("check-config", "--con=" + missing),
                 ("-c", missing, "--", "check-config")):
        r = run(*args)
        assert r.returncode == 78 and missing in r.stderr, args
    usage_error(("sync", "--", "--link"),
                "galbridge: unexpected argument '--link'", "sync")
