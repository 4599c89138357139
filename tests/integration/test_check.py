"""make check: every suite runs even after one fails, a table of results
ends the run, and the run fails if any suite did.

tests/check.sh is driven with stub suites (shell commands), and the
Makefile's check target through a scratch Makefile that includes the real
one and adds stub targets, with CHECK_SUITES naming them and deps taken as
done (-o deps): the real suites are far too heavy to run here, but their
list is read from the Makefile and checked.
"""
import os
import subprocess

from conftest import ROOT

CHECK = os.path.join(ROOT, "tests", "check.sh")


def _env():
    """The environment minus make's own variables: a `make check -j`
    jobserver is of no use to the nested make."""
    return {k: v for k, v in os.environ.items()
            if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}


def _check(*suites, cwd=None):
    return subprocess.run(["sh", CHECK] + list(suites), capture_output=True,
                          text=True, timeout=120, cwd=cwd, env=_env())


def _summary(out):
    """{suite: result} from the table after "check: summary"."""
    lines = out.split("check: summary\n", 1)[1].splitlines()
    assert lines[0].split() == ["suite", "result", "time"]
    rows = {}
    for line in lines[1:]:
        if line.startswith("check: "):
            break
        name, rest = line.split(None, 1)
        rows[name] = rest.rsplit(None, 1)[0].strip()
    return rows


def test_a_failing_first_suite_does_not_stop_the_others(tmp_path):
    marker = tmp_path / "second-ran"
    r = _check("first=echo first says hi; exit 3",
               "second=touch %s" % marker, "third=true")
    assert r.returncode == 1, r.stdout + r.stderr
    assert marker.exists(), "the suite after a failure did not run"
    assert "first says hi" in r.stdout
    assert _summary(r.stdout) == {"first": "FAILED (exit 3)",
                                  "second": "ok", "third": "ok"}
    assert r.stdout.rstrip().endswith("check: FAILED: first")
    # Output stays in order: each suite's header before its output.
    assert r.stdout.index("== check: first:") < r.stdout.index(
        "first says hi") < r.stdout.index("== check: second:")


def test_every_failure_is_named():
    r = _check("lint=exit 1", "build=true", "unit=exit 2")
    assert r.returncode == 1
    assert _summary(r.stdout) == {"lint": "FAILED (exit 1)", "build": "ok",
                                  "unit": "FAILED (exit 2)"}
    assert r.stdout.rstrip().endswith("check: FAILED: lint unit")


def test_all_passing():
    r = _check("a=true", "b=echo fine")
    assert r.returncode == 0, r.stdout
    assert _summary(r.stdout) == {"a": "ok", "b": "ok"}
    assert "check: every suite passed" in r.stdout


def test_usage():
    assert _check().returncode == 2
    r = _check("no-equals-sign")
    assert r.returncode == 2 and "NAME=COMMAND" in r.stderr


def _scratch_make(tmp_path, *args):
    with open(str(tmp_path / "Makefile"), "w") as f:
        f.write("include %s\n"
                "stub-fail: ; @echo stub failing; exit 4\n"
                "stub-ok: ; @touch %s\n"
                "show-suites: ; @echo '$(CHECK_SUITES)'\n"
                % (os.path.join(ROOT, "Makefile"), tmp_path / "ok-ran"))
    return subprocess.run(["make", "-s", "-o", "deps"] + list(args),
                          cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=120, env=_env())


def test_make_check_runs_on_and_fails(tmp_path):
    r = _scratch_make(tmp_path, "check",
                      "CHECK_SUITES=one:stub-fail two:stub-ok")
    assert r.returncode != 0, r.stdout
    assert (tmp_path / "ok-ran").exists()
    # The sub-make's own status (2) is the suite's.
    assert _summary(r.stdout) == {"one": "FAILED (exit 2)", "two": "ok"}


def test_make_check_suites(tmp_path):
    """The suites `make check` runs, in order, and the target of each."""
    r = _scratch_make(tmp_path, "show-suites")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [
        "lint:lint", "build:all", "unit:unit-check",
        "fakecloud:fakecloud-check", "integration:integration-check",
        "reliability:reliability-check", "fuzz:fuzz-check"]
