#!/usr/bin/env python3
"""The reliability report (`make reliability`, issue 6).

Runs, one after the other, against ./galbridge (built by `make all`):
the cloud fault tests (throttling storm of --storm-users source users),
hostile data, secrets, TLS, the crash test (--crash-kills SIGKILLs per
link kind on --crash-users users), the state directory tests, then
`make fuzz`, `make asan` and `make valgrind`. The tests write what they
measure through tests/reliability/record.py to a log this script names in
$GALBRIDGE_RELIABILITY_LOG; the sanitizer and valgrind runs are counted
from their output. One table comes out, on stdout and between the marker
comments of tests/reliability/README.md, with the date, the machine and
the commit.

Exit status: 0 when every step passed and every number that must be zero
is zero; 1 otherwise. Invariant: a step that fails, or a pytest step that
recorded nothing, makes the report fail whatever its numbers say.
"""
import argparse
import collections
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
README = os.path.join(HERE, "README.md")
START = "<!-- reliability-table:start -->"
END = "<!-- reliability-table:end -->"

# Sizes of a full run (the issue's); anything smaller is a reduced run.
FULL = {"storm_users": 5000, "crash_kills": 50, "crash_users": 2000,
        "fuzz_seconds": 60}

COLUMNS = ("injected", "rounds", "converged", "duplicates", "losses",
           "strays", "touched", "early", "crashes", "leaks", "secrets")
MUST_BE_ZERO = ("duplicates", "losses", "strays", "touched", "early",
                "crashes", "leaks", "secrets")
PYTEST = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs"]


def env_int(name, default):
    value = os.environ.get(name)
    return int(value) if value else default


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--storm-users", type=int,
                   default=env_int("GALBRIDGE_STORM_USERS",
                                   FULL["storm_users"]),
                   help="source users of the throttling storm "
                   "(GALBRIDGE_STORM_USERS, default 5000)")
    p.add_argument("--crash-kills", type=int,
                   default=env_int("GALBRIDGE_CRASH_KILLS",
                                   FULL["crash_kills"]),
                   help="SIGKILLs per link kind (GALBRIDGE_CRASH_KILLS, "
                   "default 50)")
    p.add_argument("--crash-users", type=int,
                   default=env_int("GALBRIDGE_CRASH_USERS",
                                   FULL["crash_users"]),
                   help="source users of the crash test "
                   "(GALBRIDGE_CRASH_USERS, default 2000)")
    p.add_argument("--crash-seed", type=int,
                   default=env_int("GALBRIDGE_CRASH_SEED", 1))
    p.add_argument("--fuzz-seconds", type=int,
                   default=env_int("FUZZ_SECONDS", FULL["fuzz_seconds"]),
                   help="seconds per fuzz target (FUZZ_SECONDS, default 60)")
    p.add_argument("--no-fuzz", action="store_true")
    p.add_argument("--no-asan", action="store_true")
    p.add_argument("--no-valgrind", action="store_true")
    p.add_argument("--log-dir", default=os.path.join(ROOT, "build",
                                                     "reliability"),
                   help="where each step's output and the records go")
    p.add_argument("--readme", default=README,
                   help="the README whose table is rewritten")
    p.add_argument("--no-readme", action="store_true",
                   help="print the table only")
    return p.parse_args(argv)


# -- running steps ------------------------------------------------------------

class Step:
    def __init__(self, name, cmd, env=None, pytest=False):
        self.name = name
        self.cmd = cmd
        self.env = env or {}
        self.pytest = pytest
        self.rc = None
        self.seconds = 0.0
        self.output = ""
        self.counts = {}
        self.failed_tests = []
        self.records = 0

    @property
    def ok(self):
        return self.rc == 0 and (self.records > 0 or not self.pytest)

    def summary(self):
        if self.rc is None:
            return "not run"
        text = ", ".join("%d %s" % (n, k) for k, n in self.counts.items())
        if self.pytest and self.records == 0:
            text += "; recorded nothing"
        if self.rc and not self.counts:
            # Failed before any test (a build error): say the first error.
            first = re.search(r"^(\S+: (?:fatal )?error: .*)$", self.output,
                              re.M)
            text = first.group(1).replace("|", "/")[:160] if first else ""
        verdict = "passed" if self.ok else "FAILED (exit %d)" % self.rc
        return "%s%s" % (verdict, " (%s)" % text if text else "")


def run_step(step, log_dir, index):
    """Run one step, its output both shown and kept in a log file."""
    log = os.path.join(log_dir, "%02d-%s.log" % (
        index, re.sub(r"[^a-z0-9]+", "-", step.name.lower()).strip("-")))
    env = dict(os.environ)
    for name, value in step.env.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    print("\n== %s: %s" % (step.name, " ".join(step.cmd)), flush=True)
    start = time.monotonic()
    chunks = []
    with open(log, "wb") as out:
        proc = subprocess.Popen(step.cmd, cwd=ROOT, env=env,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        while True:
            data = os.read(proc.stdout.fileno(), 65536)
            if not data:
                break
            out.write(data)
            chunks.append(data)
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        step.rc = proc.wait()
    step.seconds = time.monotonic() - start
    step.output = b"".join(chunks).decode("utf-8", "replace")
    step.counts = test_counts(step.output)
    step.failed_tests = re.findall(r"^(?:FAILED|ERROR) (\S+)",
                                   step.output, re.M)
    print("== %s: exit %d after %.0f s" % (step.name, step.rc,
                                             step.seconds), flush=True)


def test_counts(output):
    """{passed, failed, ...} from pytest's closing lines and cmocka's
    [  PASSED  ] / [  FAILED  ] lines, added up."""
    counts = collections.Counter()
    for line in output.splitlines():
        if re.match(r"^=*\s*\d+ (passed|failed|skipped|deselected|xfailed|"
                    r"xpassed|errors?|warnings?)\b", line.strip()) \
                and " in " in line:
            for n, what in re.findall(r"(\d+) (passed|failed|skipped|"
                                      r"xfailed|xpassed|errors?)", line):
                counts["error" if what.startswith("error") else what] += \
                    int(n)
        m = re.match(r"^\[\s+(PASSED|FAILED)\s+\] (\d+) test", line)
        if m:
            counts[m.group(1).lower()] += int(m.group(2))
    return dict(counts)


# -- figures ------------------------------------------------------------------

def read_records(path):
    """Rows {fault class: {column: sum}} of the records, in the order
    their classes first appear."""
    rows = collections.OrderedDict()
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            row = rows.setdefault(rec["class"], dict.fromkeys(COLUMNS, 0))
            for k in COLUMNS:
                row[k] += rec.get(k, 0)
    return rows


def summaries(output):
    """Sanitizer and libFuzzer SUMMARY lines: (crashes, leaks)."""
    leaks = crashes = 0
    for line in output.splitlines():
        if "SUMMARY: LeakSanitizer" in line:
            leaks += 1
        elif re.search(r"SUMMARY: (AddressSanitizer|UndefinedBehavior"
                       r"Sanitizer|libFuzzer|MemorySanitizer)", line):
            crashes += 1
    return crashes, leaks


def fuzz_row(step, seconds):
    crashes, leaks = summaries(step.output)
    execs = sum(int(n) for n in re.findall(
        r"stat::number_of_executed_units:\s*(\d+)", step.output))
    targets = step.output.count("== fuzz_")
    name = "fuzzing (%d targets, %d s each)" % (targets, seconds)
    return name, dict(dict.fromkeys(COLUMNS, 0), injected=execs,
                      crashes=crashes, leaks=leaks)


def suite_figures(step):
    """(tests run, tests failed) of a make step running test suites. A
    step that failed before its tests (a build error) counts none: its
    failure shows in the steps table."""
    failed = step.counts.get("failed", 0) + step.counts.get("error", 0)
    runs = failed + sum(step.counts.get(k, 0)
                        for k in ("passed", "xfailed", "xpassed"))
    return runs, failed


def suite_name(name, step):
    if step.rc and not suite_figures(step)[0]:
        return name + " (no test ran: the step failed, see its log)"
    return name


def asan_row(step):
    """Every failed unit or integration test under ASan/UBSan counts as a
    crash (a sanitizer report ends the process: the test fails); leak
    reports seen in the output are counted apart as well."""
    _, leaks = summaries(step.output)
    runs, failed = suite_figures(step)
    return suite_name("ASan/UBSan: unit + integration suites", step), dict(
        dict.fromkeys(COLUMNS, 0), rounds=runs, converged=runs - failed,
        crashes=failed, leaks=leaks)


def valgrind_row(step):
    """galbridge under valgrind exits 99 on any memory error or leak: each
    failed integration test counts as a leak (see the step's log)."""
    runs, failed = suite_figures(step)
    crashes, _ = summaries(step.output)
    return suite_name("valgrind: integration suite", step), dict(
        dict.fromkeys(COLUMNS, 0), rounds=runs, converged=runs - failed,
        crashes=crashes, leaks=failed)


def bad_numbers(rows):
    """[(class, column, value)] of every must-be-zero number that is not,
    rounds that did not converge included."""
    out = []
    for name, row in rows.items():
        if row["rounds"] != row["converged"]:
            out.append((name, "not converged",
                        row["rounds"] - row["converged"]))
        for k in MUST_BE_ZERO:
            if row[k]:
                out.append((name, k, row[k]))
    return out


# -- the table ----------------------------------------------------------------

def machine():
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = "%.0f GiB" % (int(line.split()[1]) / 1048576.0)
    except OSError:
        pass
    return "%d cores, %s memory, Linux %s" % (os.cpu_count() or 0, mem,
                                              platform.release())


def commit():
    def git(*args):
        r = subprocess.run(["git"] + list(args), cwd=ROOT,
                           capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no", "--", "src",
           "include", "tests", "Makefile"):
        head += " with uncommitted changes"
    return head


def render(args, rows, steps, bad, started):
    lines = []
    reduced = [
        what for what, small in (
            ("storm of %d users" % args.storm_users,
             args.storm_users < FULL["storm_users"]),
            ("%d kills on %d users" % (args.crash_kills, args.crash_users),
             args.crash_kills < FULL["crash_kills"]
             or args.crash_users < FULL["crash_users"]),
            ("fuzzing %d s per target" % args.fuzz_seconds,
             not args.no_fuzz and args.fuzz_seconds < FULL["fuzz_seconds"]),
            ("no fuzzing", args.no_fuzz), ("no ASan run", args.no_asan),
            ("no valgrind run", args.no_valgrind)) if small]
    lines.append("Run of %s UTC, commit %s, on %s; %.0f minutes." % (
        started.strftime("%Y-%m-%d %H:%M"), commit(), machine(),
        sum(s.seconds for s in steps) / 60.0))
    lines.append("")
    lines.append("Parameters: throttling storm %d users; crash test %d "
                 "kills per link kind on %d users (seed %d); fuzzing %s; "
                 "ASan %s; valgrind %s." % (
                     args.storm_users, args.crash_kills, args.crash_users,
                     args.crash_seed,
                     "not run" if args.no_fuzz else
                     "%d s per target" % args.fuzz_seconds,
                     "not run" if args.no_asan else "run",
                     "not run" if args.no_valgrind else "run"))
    if reduced:
        lines.append("")
        lines.append("**Reduced run** (%s): not the full report." %
                     "; ".join(reduced))
    lines.append("")
    lines.append("| fault class | " + " | ".join(COLUMNS) + " |")
    lines.append("|---|" + "---:|" * len(COLUMNS))
    for name, row in rows.items():
        lines.append("| %s | %s |" % (name, " | ".join(
            str(row[k]) for k in COLUMNS)))
    lines.append("")
    lines.append("| step | result | seconds |")
    lines.append("|---|---|---:|")
    for s in steps:
        lines.append("| %s | %s | %.0f |" % (s.name, s.summary(),
                                              s.seconds))
    lines.append("")
    failed = [s.name for s in steps if s.rc is not None and not s.ok]
    if bad or failed:
        lines.append("**Not clean.** %s" % "; ".join(
            ["%s: %s = %d" % b for b in bad] +
            ["step failed: %s" % n for n in failed]) + ".")
        lines.append("")
        for s in steps:
            for test in s.failed_tests:
                lines.append("- %s: failed `%s`" % (s.name, test))
    else:
        lines.append("Every number that must be zero is zero (duplicates, "
                     "losses, strays, touched, early, crashes, leaks, "
                     "secrets, rounds not converged), and every step "
                     "passed.")
    return "\n".join(lines) + "\n"


def write_readme(path, table):
    with open(path) as f:
        text = f.read()
    start = text.index(START) + len(START)
    end = text.index(END)
    with open(path + ".tmp", "w") as f:
        f.write(text[:start] + "\n" + table + text[end:])
    os.replace(path + ".tmp", path)


# -- main ---------------------------------------------------------------------

def main(argv):
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.timezone.utc)
    os.makedirs(args.log_dir, exist_ok=True)
    records = os.path.join(args.log_dir, "records.jsonl")
    open(records, "w").close()
    galbridge = os.environ.get("GALBRIDGE") or os.path.join(ROOT,
                                                            "galbridge")
    if not os.access(galbridge, os.X_OK):
        sys.exit("report: no %s: build it first (make all)" % galbridge)
    print("report: galbridge %s; storm of %d users; %d kills per link "
          "kind on %d users; logs in %s" % (
              galbridge, args.storm_users, args.crash_kills,
              args.crash_users, args.log_dir), flush=True)
    py = sys.executable
    tests = {"GALBRIDGE": galbridge, "GALBRIDGE_RELIABILITY_LOG": records}
    steps = [
        Step("cloud faults", [py] + PYTEST + [
            "tests/integration/test_faults.py"], dict(
                tests, GALBRIDGE_STORM_USERS=str(args.storm_users)),
            pytest=True),
        Step("hostile data", [py] + PYTEST + [
            "tests/integration/test_hostile.py"], tests, pytest=True),
        Step("trust", [py] + PYTEST + [
            "tests/integration/test_trust.py",
            "tests/integration/test_delta.py::test_graph_url_changes",
            "tests/integration/test_guests.py::"
            "test_proxy_address_conflict_then_resync"],
             tests, pytest=True),
        Step("secrets", [py] + PYTEST + [
            "tests/integration/test_secrets.py"], tests, pytest=True),
        Step("TLS", [py] + PYTEST + ["tests/integration/test_tls.py"],
             tests, pytest=True),
        Step("crash (SIGKILL)", [py] + PYTEST + [
            "tests/reliability/test_crash.py"], dict(
                tests, GALBRIDGE_CRASH_KILLS=str(args.crash_kills),
                GALBRIDGE_CRASH_USERS=str(args.crash_users),
                GALBRIDGE_CRASH_SEED=str(args.crash_seed)), pytest=True),
        Step("state directory", [py] + PYTEST + [
            "tests/reliability/test_statedir.py"], tests, pytest=True),
    ]
    # The make steps run whole suites at their own sizes: nothing of them
    # goes to the records, and the Makefile names its own binaries.
    quiet = {"GALBRIDGE_RELIABILITY_LOG": None, "GALBRIDGE": None}
    fuzz = asan = valgrind = None
    if not args.no_fuzz:
        fuzz = Step("fuzz", ["make", "fuzz", "FUZZ_SECONDS=%d" %
                             args.fuzz_seconds], quiet)
        steps.append(fuzz)
    if not args.no_asan:
        asan = Step("asan", ["make", "asan"], quiet)
        steps.append(asan)
    if not args.no_valgrind:
        valgrind = Step("valgrind", ["make", "valgrind"], quiet)
        steps.append(valgrind)

    for i, step in enumerate(steps, 1):
        before = sum(1 for _ in open(records))
        run_step(step, args.log_dir, i)
        step.records = sum(1 for _ in open(records)) - before

    rows = read_records(records)
    if fuzz:
        name, row = fuzz_row(fuzz, args.fuzz_seconds)
        rows[name] = row
    if asan:
        name, row = asan_row(asan)
        rows[name] = row
    if valgrind:
        name, row = valgrind_row(valgrind)
        rows[name] = row
    bad = bad_numbers(rows)
    table = render(args, rows, steps, bad, started)
    print("\n" + table)
    if not args.no_readme:
        write_readme(args.readme, table)
        print("report: table written to %s" % args.readme)
    failed = [s for s in steps if not s.ok]
    return 1 if bad or failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
