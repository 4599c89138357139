"""make install: what lands where, and whether systemd and man accept it.

`make install PREFIX=/usr DESTDIR=<tmp>` must put the binary, the systemd
unit (its ExecStart rewritten to the installed binary), the example config
and both man pages in place. The installed unit must pass
`systemd-analyze verify` cleanly, and both pages must render without a
warning from man, groff and mandoc. Checks whose tool is missing are
skipped, saying which tool.

The Makefile's install target runs in a staging directory that links to
the checkout's man/, etc/ and systemd/ and holds a copy of the binary under
test ($GALBRIDGE), with `-o galbridge` so that make installs that copy
instead of rebuilding ./galbridge: the test installs what the suite tests,
and never writes to the checkout (where ./galbridge may be running).

systemd-analyze verify looks at the files the unit names (ExecStart=,
ExecReload=, its man pages) and at the units it depends on. The installed
files exist only inside DESTDIR, so the unit is verified with --root
pointing at a copy of DESTDIR that also holds the host's unit directory and
the host's copies of any other program the unit runs (/bin/kill), with
MANPATH pointing at DESTDIR's man pages. Nothing is skipped or filtered:
the output must be empty.
"""
import os
import shlex
import shutil
import stat
import subprocess

import pytest

from conftest import GALBRIDGE, ROOT

UNIT = "usr/lib/systemd/system/galbridge.service"
PAGES = ("usr/share/man/man8/galbridge.8",
         "usr/share/man/man5/galbridge.conf.5")


def _env(**extra):
    """The environment minus make's own variables: a `make check -j` run
    passes jobserver descriptors that this nested make cannot use."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    env.update(extra)
    return env


def _install(tmp, *variables):
    """Run the install target into tmp/dest; return that DESTDIR."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    stage = os.path.join(str(tmp), "stage")
    dest = os.path.join(str(tmp), "dest")
    os.makedirs(stage)
    for name in ("man", "etc", "systemd"):
        os.symlink(os.path.join(ROOT, name), os.path.join(stage, name))
    shutil.copy2(GALBRIDGE, os.path.join(stage, "galbridge"))
    r = subprocess.run(["make", "-s", "-f", os.path.join(ROOT, "Makefile"),
                        "-o", "galbridge", "install", "DESTDIR=%s" % dest]
                       + list(variables), cwd=stage, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return dest


@pytest.fixture(scope="module")
def destdir(tmp_path_factory):
    return _install(tmp_path_factory.mktemp("pkg"), "PREFIX=/usr")


def _unit_lines(path):
    with open(path) as f:
        return [line.rstrip("\n") for line in f
                if line.strip() and not line.lstrip().startswith(("#", ";"))]


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_in_place(destdir):
    binary = os.path.join(destdir, "usr/bin/galbridge")
    assert _mode(binary) == 0o755
    with open(binary, "rb") as a, open(GALBRIDGE, "rb") as b:
        assert a.read() == b.read(), "installed binary is not $GALBRIDGE"
    r = subprocess.run([binary, "-V"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("galbridge "), r

    for rel, src in ((PAGES[0], "man/galbridge.8"),
                     (PAGES[1], "man/galbridge.conf.5"),
                     ("etc/galbridge/galbridge.conf.example",
                      "etc/galbridge.conf.example")):
        path = os.path.join(destdir, rel)
        assert _mode(path) == 0o644, rel
        with open(path, "rb") as a, open(os.path.join(ROOT, src), "rb") as b:
            assert a.read() == b.read(), rel

    unit = os.path.join(destdir, UNIT)
    assert _mode(unit) == 0o644
    lines = _unit_lines(unit)
    assert ("ExecStart=/usr/bin/galbridge -c /etc/galbridge/galbridge.conf"
            " run") in lines
    with open(unit) as f:
        assert "/usr/local" not in f.read()


def test_bindir_follows_prefix(tmp_path):
    """The unit names the binary where this install put it."""
    d = _install(tmp_path, "PREFIX=/opt/galbridge")
    unit = os.path.join(d, "opt/galbridge/lib/systemd/system/"
                           "galbridge.service")
    starts = [line for line in _unit_lines(unit)
              if line.startswith("ExecStart=")]
    assert starts == ["ExecStart=/opt/galbridge/bin/galbridge"
                      " -c /etc/galbridge/galbridge.conf run"]
    assert os.access(os.path.join(d, "opt/galbridge/bin/galbridge"),
                     os.X_OK)


def _host_unit_dir():
    for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if os.path.isfile(os.path.join(d, "sysinit.target")):
            return d
    return None


def _verify_root(destdir, tmp_path):
    """A root for --root: the host's units, DESTDIR on top, and the host's
    copy of every program the unit runs that DESTDIR does not hold."""
    host_units = _host_unit_dir()
    if host_units is None:
        pytest.skip("no systemd unit directory on this host")
    root = str(tmp_path / "root")
    shutil.copytree(host_units, os.path.join(root, "usr/lib/systemd/system"),
                    symlinks=True)
    shutil.copytree(destdir, root, symlinks=True, dirs_exist_ok=True)
    for line in _unit_lines(os.path.join(root, UNIT)):
        key, _, value = line.partition("=")
        if not key.startswith("Exec") or not value:
            continue
        program = shlex.split(value.lstrip("-@:+!"))[0]
        inside = os.path.join(root, program.lstrip("/"))
        if os.path.exists(inside):
            continue
        host = os.path.realpath(program)
        assert os.path.isfile(host), "%s= runs %s, missing on this host" % (
            key, program)
        os.makedirs(os.path.dirname(inside), exist_ok=True)
        shutil.copy2(host, inside)
    return root


def test_systemd_analyze_verify(destdir, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    root = _verify_root(destdir, tmp_path)
    # verify runs man(1) for the unit's Documentation= pages.
    man = "--man=yes" if shutil.which("man") else "--man=no"
    r = subprocess.run([analyze, "verify", man, "--root=%s" % root,
                        "/" + UNIT], cwd="/", capture_output=True, text=True,
                       timeout=120,
                       env=_env(MANPATH=os.path.join(destdir,
                                                     "usr/share/man")))
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 0 and out == "", out


def test_systemd_analyze_security(destdir, tmp_path):
    """The sandbox stays a sandbox: systemd's own exposure rating (0 best,
    10 worst) must stay at 2.0 or below."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    root = _verify_root(destdir, tmp_path)
    r = subprocess.run([analyze, "security", "--offline=yes",
                        "--threshold=20", "--no-pager", "--root=%s" % root,
                        "/" + UNIT], cwd="/", capture_output=True, text=True,
                       timeout=120, env=_env())
    if "--offline" in r.stderr and ("unrecognized" in r.stderr
                                    or "unknown" in r.stderr):
        pytest.skip("this systemd-analyze cannot rate a unit offline")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr


@pytest.mark.parametrize("page", PAGES)
def test_man_renders_without_warnings(destdir, page):
    if shutil.which("man") is None:
        pytest.skip("man is not installed")
    path = os.path.join(destdir, page)
    r = subprocess.run(["man", "--warnings", "-l", path],
                       capture_output=True, text=True, timeout=60,
                       env=_env(MANWIDTH="80", MANPAGER="cat", PAGER="cat"))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "galbridge" in r.stdout
    wide = [line for line in r.stdout.splitlines() if len(line) > 80]
    assert wide == [], "lines wider than 80 columns:\n" + "\n".join(wide)


@pytest.mark.parametrize("page", PAGES)
def test_groff_all_warnings(destdir, page):
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    r = subprocess.run(["groff", "-mandoc", "-ww", "-z",
                        os.path.join(destdir, page)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr


# Whether mandoc finds a page named in .Xr depends on the manuals installed
# on this host and on its mandoc.db, not on the page being checked.
MANDOC_HOST_NOTES = ("referenced manual not found", "outdated mandoc.db")


@pytest.mark.parametrize("page", PAGES)
def test_mandoc_lint(destdir, page):
    if shutil.which("mandoc") is None:
        pytest.skip("mandoc is not installed (apt-get install mandoc)")
    r = subprocess.run(["mandoc", "-T", "lint", "-W", "style",
                        os.path.join(destdir, page)],
                       capture_output=True, text=True, timeout=60)
    messages = [line for line in (r.stdout + r.stderr).splitlines()
                if not any(note in line for note in MANDOC_HOST_NOTES)]
    assert messages == [], "\n".join(messages)
