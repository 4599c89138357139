"""The reliability report's recorder (tests/reliability/report.py).

A fault test calls record(fault_class, **figures) with what it measured;
when $GALBRIDGE_RELIABILITY_LOG names a file, one JSON line is appended
to it, otherwise nothing happens (a plain pytest run records nothing).
The report adds the lines up by fault class into its table.

Figures (each a count; a figure left out counts as 0):

  injected    faults made (fired fault rules, throttled answers, kills...)
  rounds      rounds that had to converge despite the faults
  converged   those of them that did
  duplicates  objects beyond the first for one source user
  losses      in-scope source users with no object (missing)
  strays      objects for no in-scope source user
  touched     objects galbridge did not make (or cannot prove it made)
              that a round changed or deleted
  early       requests sent before a Retry-After had passed
  crashes     galbridge runs ended by a signal or a sanitizer report
  secrets     canary occurrences found, or requests carrying a secret or
              token that reached a host they must never reach

Tests call record() before their own asserts, so that a test that fails
still leaves the numbers that made it fail. Invariant: a line is written
whole with one write() on a file opened for appending.
"""
import json
import os

FIGURES = ("injected", "rounds", "converged", "duplicates", "losses",
           "strays", "touched", "early", "crashes", "secrets")


def record(fault_class, **figures):
    """Append one line {"class", "test", figures...} to the log."""
    unknown = set(figures) - set(FIGURES)
    if unknown:
        raise ValueError("record: unknown figures %s" % sorted(unknown))
    path = os.environ.get("GALBRIDGE_RELIABILITY_LOG")
    if not path:
        return
    line = {"class": fault_class,
            "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]}
    line.update({k: int(v) for k, v in figures.items()})
    data = (json.dumps(line, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def tally(env, target="fabrikam", source="contoso"):
    """Duplicates, losses and strays of a guest link, as record() figures,
    read from fakecloud through an integration Env (copies, in_scope)."""
    want = set(env.in_scope(source))
    got = env.copies(target, source)
    return {"duplicates": sum(len(c) - 1 for c in got.values()),
            "losses": len(want - set(got)),
            "strays": len(set(got) - want)}


def crashes(*returncodes):
    """How many of these exit statuses are deaths by a signal."""
    return sum(1 for rc in returncodes if rc is not None and rc < 0)
