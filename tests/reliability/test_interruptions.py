"""Ctrl-C (SIGINT) and SIGTERM during setup, a test, or teardown: the run's branches are
deleted before the process exits, and a local backend's PostgreSQL and emulator stop."""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.pytest_runs import NeonProject, clean_neon_env
from tests.support.reliability import (
    ours,
    processes_mentioning,
    start_pytest,
    wait_for_file,
)

CONFTEST = """
import os, pathlib, time
import psycopg, pytest

def arrive(phase):
    # Say where the run is, then wait there for the signal.
    if os.environ.get("RELIABILITY_STOP_AT") == phase:
        pathlib.Path(os.environ["RELIABILITY_MARKER"]).write_text(phase)
        time.sleep(60)

@pytest.fixture(scope="session")
def neon_apply_migrations(_neon_migration_branch):
    with psycopg.connect(_neon_migration_branch.connection_string) as conn:
        conn.execute("CREATE TABLE items (id int)")
    arrive("setup")

@pytest.fixture
def slow_teardown():
    yield
    arrive("teardown")
"""

TESTS = """
from conftest import arrive

def test_a_module_branch(neon_branch_shared):
    pass

def test_b_stops(neon_branch_readwrite, slow_teardown):
    arrive("test")

def test_c_never_runs(neon_branch_readwrite):
    raise AssertionError("the run should have stopped")
"""

SIGNALS = [signal.SIGINT, signal.SIGTERM]
PHASES = ["setup", "test", "teardown"]


#: these runs count branches and resets exactly: one branch per worker
ONE_BRANCH = "--neon-worker-branches=1"


def _interrupt(
    cwd: Path,
    args: list[str],
    sig: signal.Signals,
    marker: Path,
    before: Callable[[], None],
) -> tuple[str, float]:
    """Start pytest, wait until it is at ``marker``, check ``before()``, send ``sig``.

    Returns the run's output and the seconds it took to exit after the signal.
    """
    proc = start_pytest(cwd, *args)
    try:
        wait_for_file(marker, proc)
        before()
        sent = time.monotonic()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    return out, elapsed


def _prepare(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, phase: str) -> Path:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_stop=TESTS)
    marker = pytester.path / "arrived"
    monkeypatch.setenv("RELIABILITY_STOP_AT", phase)
    monkeypatch.setenv("RELIABILITY_MARKER", str(marker))
    return marker


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_signal_deletes_the_runs_branches(
    neon: NeonProject, monkeypatch: pytest.MonkeyPatch, sig: signal.Signals, phase: str
) -> None:
    marker = _prepare(neon.pytester, monkeypatch, phase)

    def before() -> None:
        # the worker and migration branches exist from setup on; the module branch after
        assert len(ours(neon)) == (2 if phase == "setup" else 3)

    out, elapsed = _interrupt(neon.pytester.path, [*neon.args, ONE_BRANCH], sig, marker, before)
    assert "KeyboardInterrupt" in out
    assert ours(neon) == []
    assert elapsed < 15


@pytest.fixture
def system_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A TMPDIR for the inner run, outside pytest's own 0700 temp dirs (the ``postgres``
    user runs the throwaway cluster under it when the tests run as root)."""
    path = Path(tempfile.mkdtemp(prefix="pytest-neon-test-"))
    monkeypatch.setenv("TMPDIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(
    ("sig", "phase"),
    [(signal.SIGTERM, "setup"), (signal.SIGINT, "test"), (signal.SIGTERM, "teardown")],
    ids=["SIGTERM-setup", "SIGINT-test", "SIGTERM-teardown"],
)
def test_signal_stops_the_local_backend(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    system_tmp: Path,
    sig: signal.Signals,
    phase: str,
) -> None:
    clean_neon_env(monkeypatch)
    marker = _prepare(pytester, monkeypatch, phase)
    args = ["-p", "no:cacheprovider", "--neon-backend=local"]

    def before() -> None:
        assert list(system_tmp.glob("pytest-neon-pg-*"))  # the throwaway cluster's files
        assert processes_mentioning(str(system_tmp))  # and its server

    out, elapsed = _interrupt(pytester.path, args, sig, marker, before)
    assert "KeyboardInterrupt" in out
    assert elapsed < 15
    assert list(system_tmp.iterdir()) == []  # no data dir, no coordination dir
    assert processes_mentioning(str(system_tmp)) == []
