"""kill -9 of a run on the local backend: a watchdog stops its PostgreSQL and removes its
files, or drops its databases from a server given by URL."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from pytest_neon.local.emulator.sql.metadata import comment_for
from pytest_neon.xdist import coordination_path
from tests.support.pytest_runs import clean_neon_env
from tests.support.reliability import start_pytest, wait_for_file

KILLED = """
import json, os, pathlib, time
from pytest_neon.plugin import STATE

def test_waits_for_the_kill(neon_branch_readwrite, request):
    local = request.config.stash[STATE].local
    data_dir = local.postgres.data_dir if local.postgres else None
    pid = int((data_dir / "postmaster.pid").read_text().split()[0]) if data_dir else None
    from pytest_neon.xdist import coordination_path
    run_dir = coordination_path(request.config.stash[STATE].run_id)
    assert run_dir.is_dir()  # the migration gate's files are there
    report = {"data_dir": str(data_dir) if data_dir else None, "postmaster": pid,
              "project_id": local.project_id, "run_dir": str(run_dir)}
    marker = pathlib.Path(os.environ["RELIABILITY_MARKER"])
    partial = marker.with_suffix(".partial")
    partial.write_text(json.dumps(report))
    os.replace(partial, marker)  # the outer test never sees a half-written file
    time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # not a zombie
    except OSError:
        return False


MIGRATION = """
import psycopg, pytest

@pytest.fixture(scope="session")
def neon_apply_migrations(_neon_migration_branch):
    with psycopg.connect(_neon_migration_branch.connection_string) as conn:
        conn.execute("CREATE TABLE migrated (x int)")
"""


def _kill_mid_test(pytester: pytest.Pytester, *args: str) -> dict[str, object]:
    pytester.makeconftest(MIGRATION)
    pytester.makepyfile(test_killed=KILLED)
    marker = pytester.path / "arrived.json"
    env = {**os.environ, "RELIABILITY_MARKER": str(marker)}
    proc = start_pytest(pytester.path, "-p", "no:cacheprovider", "--neon-backend=local", *args,
                        env=env)  # fmt: skip
    try:
        wait_for_file(marker, proc)
        report: dict[str, object] = json.loads(marker.read_text())
    finally:
        proc.kill()  # SIGKILL: the run itself cleans up nothing
        proc.communicate()
    return report


def _eventually(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_killed_runs_throwaway_cluster_is_stopped_and_removed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    report = _kill_mid_test(pytester)
    data_dir, postmaster = Path(str(report["data_dir"])), int(str(report["postmaster"]))
    assert data_dir.exists()
    _eventually(lambda: not _alive(postmaster), "the killed run's PostgreSQL still runs")
    _eventually(lambda: not data_dir.parent.exists(), "the killed run's cluster files remain")
    run_dir = Path(str(report["run_dir"]))
    _eventually(lambda: not run_dir.exists(), "the killed run's coordination directory remains")


def test_a_killed_runs_databases_are_dropped_from_a_given_server(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    report = _kill_mid_test(pytester, f"--neon-local-postgres-url={postgres_url}")
    comment = comment_for(str(report["project_id"]))

    def remaining() -> int:
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_database"
                " WHERE pg_catalog.shobj_description(oid, 'pg_database') = %s",
                (comment,),
            ).fetchone()
        return int(row[0]) if row else 0

    assert remaining() > 0  # the run's branches were there
    _eventually(lambda: remaining() == 0, "the killed run's databases were not dropped")


def test_a_run_that_ends_normally_dismisses_its_watchdog(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    report = pytester.path / "watchdog.txt"
    pytester.makepyfile(
        test_normal=f"""
        from pytest_neon.plugin import STATE

        def test_notes_the_watchdog(neon_branch_readwrite, request):
            reaper = request.config.stash[STATE].local.reaper
            open({str(report)!r}, "w").write(str(reaper.pid))
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--neon-backend=local")
    result.assert_outcomes(passed=1)
    watchdog = int(report.read_text())
    _eventually(lambda: not _alive(watchdog), "the watchdog outlived a normal run", timeout=10)


def test_run_directories_of_runs_killed_long_ago_are_swept(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    old, recent, long_running = (coordination_path(secrets.token_hex(4)) for _ in range(3))
    for path in (old, recent, long_running):
        path.mkdir()
        (path / "migrations.json").write_text("{}")
    (long_running / "owner.pid").write_text(str(os.getpid()))  # a live process owns it
    two_days_ago = time.time() - 2 * 86400
    for path in (old, long_running):
        os.utime(path, (two_days_ago, two_days_ago))
    try:
        pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--neon-backend=local")
        result.assert_outcomes(passed=1)
        assert not old.exists()
        assert recent.exists()  # maybe a run just starting
        assert long_running.exists()
    finally:
        for path in (old, recent, long_running):
            shutil.rmtree(path, ignore_errors=True)
