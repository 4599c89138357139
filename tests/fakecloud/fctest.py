"""Helpers shared by fakecloud's own tests (their shared fixture is in
conftest.py): the directory of Microsoft's documented bodies, loading one
of them, the user ids the seeds use, and the check that a reply is a 429
in the documented shape.

FIXTURES is tests/fakecloud/fixtures/ unless $FAKECLOUD_FIXTURES names
another copy; a missing body fails the test rather than skipping it.
"""

import json
import os
from pathlib import Path

import pytest

FIXTURES = Path(os.environ.get("FAKECLOUD_FIXTURES")
                or Path(__file__).resolve().parent / "fixtures")


def fixture(name):
    path = FIXTURES / name
    if not path.exists():
        pytest.fail(f"Microsoft fixture {path} not found")
    return json.loads(path.read_text(encoding="utf-8"))


def uid(n):
    return f"00000000-0000-4000-8000-{n:012d}"


def assert_throttled(reply, max_wait):
    """A 429 in Microsoft's documented shape, Retry-After 1..max_wait s."""
    assert reply.status == 429, reply.body
    retry = reply.header("Retry-After")
    assert retry is not None and retry.isdigit(), retry
    assert 1 <= int(retry) <= max_wait
    body = reply.json()
    documented = fixture("error-429-throttled.json")
    assert set(body["error"]) == set(documented["error"])
    assert set(body["error"]["innerError"]) == \
        set(documented["error"]["innerError"])
    assert body["error"]["code"] == "TooManyRequests"
