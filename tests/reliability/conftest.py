"""Reliability tests: crashes, a lost, full or read-only state directory,
two processes on one state directory.

They reuse the integration tests' Env (a fakecloud with a source contoso
and a target fabrikam, a config file, helpers to run galbridge and read
its store) by loading tests/integration/conftest.py under another module
name, so that both directories can be collected in one pytest run.
"""
import importlib.util
import os
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "galbridge_integration_conftest",
    os.path.join(os.path.dirname(HERE), "integration", "conftest.py"))
integration = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(integration)

Env = integration.Env
make_env = integration.make_env
env = integration.env


@pytest.fixture(scope="session")
def fsfault(tmp_path_factory):
    """Path of fsfault.so, the LD_PRELOAD shim that fills a directory or
    makes it read-only (see fsfault.c), built for this session."""
    out = str(tmp_path_factory.mktemp("fsfault") / "fsfault.so")
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-Wall", "-Wextra",
                    "-Werror", "-shared", "-fPIC", "-o", out,
                    os.path.join(HERE, "fsfault.c"), "-ldl"], check=True)
    return out

