"""Set-up shared by fakecloud's own tests (helpers they import are in
fctest.py).

Each test module gets one real fakecloud, the `cloud` fixture, started in a
fresh temporary directory and stopped when the module ends; stopping must
exit 0.  Each module defines its own `fc` fixture that resets the server
and seeds the tenants its cases need, so no case sees another's state.

tests/integration has a conftest.py too and puts this directory on
sys.path: a script that imports both (bench/benchlib.py) must put
tests/integration first, so that `conftest` is that one.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

# fctest's assertions (assert_throttled) keep pytest's detailed messages.
pytest.register_assert_rewrite("fctest")

from client import FakeCloud  # noqa: E402


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    fc = FakeCloud().start(tmp_path_factory.mktemp("fakecloud"))
    yield fc
    assert fc.stop() == 0
