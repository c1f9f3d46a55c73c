"""Shared fixtures. Each package has its own folder of tests mirroring it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]

# Property tests draw the same examples on every run (same tree, same result) and keep no
# example database in the checkout.
settings.register_profile("repo", derandomize=True, database=None)
settings.load_profile("repo")

# Notebooks and the pipeline read this to pick their quick setting.
os.environ.setdefault("RMAAT_QUICK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# The rmaat command fixes glibc's malloc thresholds for its process (rmaat_model/allocator.py);
# tests that call it in this process, or in children that inherit this environment, keep glibc's
# defaults, so no test's memory depends on which tests ran before it. tests/rmaat_model/
# test_allocator.py and tests/test_bad_inputs.py switch it on where they test it.
os.environ.setdefault("RMAAT_MALLOC_TUNING", "0")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.fixture
def run_cli():
    """Run ``rmaat ARGS...`` in a fresh process; returns the CompletedProcess (text)."""
    def run(*args: str, cwd: str | os.PathLike | None = None, timeout: float = 600,
            check: bool = False) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "rmaat_app", *map(str, args)],
                              cwd=cwd or REPO, env=_env(), capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"rmaat {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc
    return run


@pytest.fixture(autouse=True)
def _fresh_run_registry():
    """Each test starts with no run directory marked 'created by this process', so a CLI
    error in one test never removes an unfinished run another test left on purpose."""
    from astro_rmaat import runs
    runs._CREATED.clear()
    yield
    runs._CREATED.clear()


@pytest.fixture(scope="session", autouse=True)
def _cpp_block_built():
    """The C++ block (rmaat_model/native.py) built, or loaded, once per test process before the
    first test: no test's output or timing then holds the one-off compile of a clean machine
    (it prints a line, and takes about 25 s)."""
    if os.environ.get("RMAAT_NATIVE", "auto").strip() != "0":
        from rmaat_model import native
        native.extension()
    yield
