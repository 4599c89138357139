"""make deb: the Debian package, its metadata, and an install into a
throwaway root.

The package is built the way test_install.py installs: in a staging
directory that links to the checkout's man/, etc/ and systemd/ and holds a
copy of the binary under test ($GALBRIDGE), with `-o galbridge` so that make
packages that copy and never writes to the checkout; BUILD points into the
test's directory.

The checks: dpkg-deb -c and -I (every file, its mode and owner, the
conffile, the version from include/version.h, Depends naming each library
package), the binary unpacked with dpkg -x running `--version` and
`check-config` on the example config the package carries, and `dpkg
--root` installing, removing and purging it in an empty dpkg database:
its maintainer scripts run there (DPKG_ROOT set, chrootless), enable the
unit inside that root and start nothing. No check touches the host's dpkg
database or systemd. dpkg-deb, dpkg-shlibdeps (dpkg-dev) and dpkg come
with `make deps`; nothing here is skipped.
"""
import os
import re
import shutil
import stat
import subprocess

import pytest

from conftest import GALBRIDGE, ROOT, example_config

CONFFILE = "/etc/galbridge/galbridge.conf.example"
UNIT = "/usr/lib/systemd/system/galbridge.service"
WANTS = "etc/systemd/system/multi-user.target.wants/galbridge.service"
# Every file the package holds, with its mode (directories left out).
FILES = {
    "/usr/bin/galbridge": 0o755,
    UNIT: 0o644,
    "/usr/share/man/man8/galbridge.8.gz": 0o644,
    "/usr/share/man/man5/galbridge.conf.5.gz": 0o644,
    CONFFILE: 0o644,
    "/usr/share/doc/galbridge/README.md": 0o644,
}
LIBRARIES = ("libcurl4", "libjansson4", "libuv1", "libsqlite3-0", "libssl3",
             "libinih1")


def _env(**extra):
    """The environment minus make's own variables (a `make check -j`
    jobserver is no use to the nested make), with the sbin directories
    dpkg looks for ldconfig and start-stop-daemon in."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    env["PATH"] = env.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
    env.update(extra)
    return env


def _run(*args, **kw):
    r = subprocess.run(list(args), capture_output=True, text=True,
                       timeout=kw.pop("timeout", 300), env=_env(), **kw)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def _version():
    with open(os.path.join(ROOT, "include", "version.h")) as f:
        return re.search(r'#define GALBRIDGE_VERSION "([^"]+)"',
                         f.read()).group(1)


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deb")
    stage = tmp / "stage"
    stage.mkdir()
    for name in ("man", "etc", "systemd"):
        os.symlink(os.path.join(ROOT, name), str(stage / name))
    shutil.copy2(GALBRIDGE, str(stage / "galbridge"))
    r = _run("make", "-s", "-f", os.path.join(ROOT, "Makefile"),
             "-o", "galbridge", "deb", "BUILD=%s" % (tmp / "build"),
             cwd=str(stage))
    path = r.stdout.strip().splitlines()[-1]
    if not os.path.isabs(path):
        path = str(stage / path)
    arch = _run("dpkg", "--print-architecture").stdout.strip()
    assert os.path.basename(path) == "galbridge_%s_%s.deb" % (_version(),
                                                             arch)
    return path


def _field(deb, name):
    return _run("dpkg-deb", "-f", deb, name).stdout.strip()


def test_metadata(deb):
    assert _field(deb, "Package") == "galbridge"
    assert _field(deb, "Version") == _version()
    assert _field(deb, "Architecture") == _run(
        "dpkg", "--print-architecture").stdout.strip()
    depends = {d.split()[0] for d in _field(deb, "Depends").split(", ")}
    missing = set(LIBRARIES) - depends
    assert not missing, "Depends lacks %s" % sorted(missing)

    info = _run("dpkg-deb", "-I", deb).stdout
    # The maintainer scripts, each marked executable (*) by dpkg-deb.
    for script in ("postinst", "prerm", "postrm"):
        assert re.search(r"\*\s+%s\s" % script, info), info


def test_contents(deb):
    listing = _run("dpkg-deb", "-c", deb).stdout.splitlines()
    files = {}
    for line in listing:
        mode, owner, _size, _date, _time, name = line.split(None, 5)
        assert owner == "root/root", line
        if mode.startswith("-"):
            files[name[1:]] = mode
    want = {path: stat.filemode(stat.S_IFREG | m) for path, m in
            FILES.items()}
    assert files == want


def test_control_files(deb, tmp_path):
    control = tmp_path / "DEBIAN"
    _run("dpkg-deb", "-e", deb, str(control))
    with open(str(control / "conffiles")) as f:
        assert f.read().split() == [CONFFILE]
    for script in ("postinst", "prerm", "postrm"):
        assert os.access(str(control / script), os.X_OK), script
        _run("sh", "-n", str(control / script))


def _stubbed_scripts(tmp_path):
    """A bin directory of stub deb-systemd-helper, deb-systemd-invoke and
    systemctl that append their arguments to calls.log; (bin, log)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls.log"
    for name in ("deb-systemd-helper", "deb-systemd-invoke", "systemctl"):
        path = bindir / name
        path.write_text('#!/bin/sh\necho "%s $*" >> %s\n' % (name, log))
        path.chmod(0o755)
    return str(bindir), log


@pytest.mark.parametrize("dpkg_root", (False, True))
def test_scripts_start_nothing_without_systemd(deb, tmp_path, dpkg_root):
    """postinst enables the unit, and only starts it (prerm only stops it)
    when systemd runs this host and dpkg works on it, not on another root
    (DPKG_ROOT) or in a chroot (no /run/systemd/system)."""
    control = tmp_path / "DEBIAN"
    _run("dpkg-deb", "-e", deb, str(control))
    bindir, log = _stubbed_scripts(tmp_path)
    env = _env(PATH=bindir + ":/usr/bin:/bin")
    env.pop("DPKG_ROOT", None)
    if dpkg_root:
        env["DPKG_ROOT"] = str(tmp_path / "root")
    for script, args in (("postinst", ["configure", ""]),
                         ("prerm", ["remove"]), ("postrm", ["remove"]),
                         ("postrm", ["purge"])):
        r = subprocess.run([str(control / script)] + args, env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (script, r.stderr)
    calls = log.read_text().splitlines()
    assert "deb-systemd-helper enable galbridge.service" in calls
    assert "deb-systemd-helper mask galbridge.service" in calls
    assert "deb-systemd-helper purge galbridge.service" in calls
    live = not dpkg_root and os.path.isdir("/run/systemd/system")
    starts = [c for c in calls if c.startswith(("deb-systemd-invoke",
                                                "systemctl"))]
    if live:
        assert "deb-systemd-invoke start galbridge.service" in starts
        assert "deb-systemd-invoke stop galbridge.service" in starts
    else:
        assert starts == []


def test_unpacked_binary_runs(deb, tmp_path):
    root = tmp_path / "root"
    _run("dpkg", "-x", deb, str(root))
    binary = str(root / "usr/bin/galbridge")
    r = _run(binary, "--version")
    assert r.stdout.strip() == "galbridge %s" % _version()

    conf = example_config(tmp_path, source=str(root) + CONFFILE)
    r = _run(binary, "-c", conf, "check-config")
    assert "[link " in r.stdout

    with open(str(root) + UNIT) as f:
        unit = f.read().splitlines()
    assert ("ExecStart=/usr/bin/galbridge -c /etc/galbridge/galbridge.conf"
            " run") in unit
    assert "ConditionPathExists=/etc/galbridge/galbridge.conf" in unit
    assert "DynamicUser=yes" in unit and "StateDirectory=galbridge" in unit


def _dpkg_root(root, *args):
    return _run("dpkg", "--root=%s" % root, "--log=%s.log" % root,
                "--force-not-root", "--force-script-chrootless", *args)


def test_install_remove_purge_in_a_root(deb, tmp_path):
    root = tmp_path / "root"
    admin = root / "var/lib/dpkg"
    for d in ("info", "updates", "triggers"):
        (admin / d).mkdir(parents=True)
    (admin / "status").touch()

    # The libraries are not in this empty root: their absence is the one
    # problem let through.
    _dpkg_root(str(root), "--force-depends", "-i", deb)
    status = _dpkg_root(str(root), "-s", "galbridge").stdout
    assert "Status: install ok installed" in status
    assert "Version: %s" % _version() in status
    for path, mode in FILES.items():
        assert stat.S_IMODE(os.stat(str(root) + path).st_mode) == mode, path
    # postinst enabled the unit inside the root, as on a first install.
    wants = root / WANTS
    assert os.readlink(str(wants)) == UNIT
    r = _run(str(root / "usr/bin/galbridge"), "-V")
    assert r.stdout.startswith("galbridge ")

    # Remove: the files go but the conffile; the unit is masked, and its
    # enablement kept like a conffile (Debian's way) until a purge.
    _dpkg_root(str(root), "-r", "galbridge")
    assert not (root / "usr/bin/galbridge").exists()
    assert (root / CONFFILE.lstrip("/")).exists()
    assert os.readlink(str(root / "etc/systemd/system/galbridge.service")) \
        == "/dev/null"

    # Purge: the conffile, the enablement and the mask go too.
    _dpkg_root(str(root), "-P", "galbridge")
    assert not (root / CONFFILE.lstrip("/")).exists()
    assert not os.path.lexists(str(wants))
    assert not os.path.lexists(
        str(root / "etc/systemd/system/galbridge.service"))
    r = subprocess.run(["dpkg", "--root=%s" % root, "-s", "galbridge"],
                       capture_output=True, text=True, env=_env())
    assert r.returncode != 0
