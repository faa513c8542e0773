"""NeonSession and its worker pool, driven directly (no inner pytest) against the emulator.

Each test makes a session over a fresh emulated project on the suite's PostgreSQL, with
``pg_walinspect`` as the write check's inspector: counts are exact.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest

from pytest_neon.api import NeonClient
from pytest_neon.config import resolve
from pytest_neon.housekeeping import delete_created, sweep_stale
from pytest_neon.local.emulator import Emulator
from pytest_neon.migrations import Migrations, WrongBranchError
from pytest_neon.naming import run_annotations
from pytest_neon.neon_branch import NeonBranch
from pytest_neon.neon_session import NeonSession
from pytest_neon.worker_pool import SlotState
from pytest_neon.xdist import new_run_id, remove_coordination_dir


@pytest.fixture
def project(postgres_url: str) -> Iterator[Emulator]:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
    emulator = Emulator(postgres_url, api_key=secrets.token_urlsafe(16))
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop(drop=True)


@pytest.fixture
def run_id() -> Iterator[str]:
    run = new_run_id()
    yield run
    remove_coordination_dir(run)  # the migration gate's files


def _session(
    emulator: Emulator, postgres_url: str, run_id: str, *, worker_branches: int = 1
) -> NeonSession:
    settings = resolve(
        {"project_id": emulator.project_id, "worker_branches": worker_branches}, {}, {}
    )
    client = NeonClient(emulator.api_key or "", api_host=emulator.api_host)
    return NeonSession(client, settings, run_id=run_id, worker="main", inspector_url=postgres_url)


def _write(branch: NeonBranch, table: str = "written") -> None:
    with psycopg.connect(branch.connection_string) as conn:
        conn.execute(f"CREATE TABLE {table} (x int)")


def _has(branch: NeonBranch, table: str = "written") -> bool:
    with psycopg.connect(branch.connection_string) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def _started(session: NeonSession) -> NeonBranch:
    session.create_worker_branch()
    session.adopt_source(session.parent_id)
    return session.checkout()


def test_a_test_that_wrote_is_reset_in_the_background(
    project: Emulator, postgres_url: str, run_id: str
) -> None:
    session = _session(project, postgres_url, run_id)
    branch = _started(session)
    before = session.pool.write_position()
    _write(branch)
    session.pool.finish_test(before)
    session.between_tests()  # the answer is read: the reset starts in the background
    assert session.pool.slots[0].state in (SlotState.BUSY, SlotState.CLEAN)
    again = session.checkout()  # waits for what is left of it
    assert again == branch
    assert session.pool.slots[0].state is SlotState.CLEAN
    assert not _has(again)
    assert (session.counters.resets_done, session.counters.resets_skipped) == (1, 0)
    session.shutdown()


def test_a_test_that_wrote_nothing_keeps_its_branch(
    project: Emulator, postgres_url: str, run_id: str
) -> None:
    session = _session(project, postgres_url, run_id)
    branch = _started(session)
    _write(branch, "kept")  # before the test: part of its starting state here
    before = session.pool.write_position()
    with psycopg.connect(branch.connection_string) as conn:
        conn.execute("SELECT count(*) FROM kept").fetchone()
    session.pool.finish_test(before)
    session.between_tests()
    assert session.pool.slots[0].state is SlotState.CLEAN
    assert _has(session.checkout(), "kept")
    assert (session.counters.resets_done, session.counters.resets_skipped) == (0, 1)
    assert session.client.stats.by_call.get("restore_branch", 0) == 0
    session.shutdown()


def test_with_two_branches_the_next_test_takes_the_clean_one(
    project: Emulator, postgres_url: str, run_id: str
) -> None:
    project.configure_faults(operation_delay=0.5)  # resets take a while, as on Neon
    session = _session(project, postgres_url, run_id, worker_branches=2)
    first = _started(session)
    assert len(session.pool.slots) == 1  # the other one is made for the first test that
    before = session.pool.write_position()  # may write
    assert session.pool.slots[1].state is SlotState.MAKING
    _write(first)
    session.pool.finish_test(before)
    session.between_tests()  # the write is seen: the first one's reset starts
    assert session.pool.slots[0].state is SlotState.BUSY
    for slot in session.pool.slots:
        assert slot.pending is not None
        slot.pending.result(timeout=60)
    used = session.checkout()
    before = session.pool.write_position()
    _write(used)
    session.pool.finish_test(before)
    second = session.checkout()
    assert second != used  # no wait for the reset of the one just used
    assert [s.state for s in session.pool.slots if s.branch == used] == [SlotState.BUSY]
    assert not _has(second)
    session.shutdown()
    assert session.counters.resets_done == 2


def test_a_forced_reset_and_rolled_back_work(
    project: Emulator, postgres_url: str, run_id: str
) -> None:
    session = _session(project, postgres_url, run_id)
    branch = _started(session)
    session.pool.finish_test(session.pool.write_position(), force=True)
    assert session.pool.slots[0].state is SlotState.BUSY
    session.checkout()
    assert session.counters.resets_done == 1
    # rolled-back work leaves WAL: forgetting the kept position keeps it from counting
    session.pool.finish_test(session.pool.write_position())
    session.between_tests()
    with psycopg.connect(branch.connection_string) as conn:
        conn.execute("CREATE TABLE rolled_back (x int)")
        conn.rollback()
    session.pool.forget_position()
    before = session.pool.write_position()
    session.pool.finish_test(before)
    session.between_tests()
    assert (session.counters.resets_done, session.counters.resets_skipped) == (1, 2)
    session.shutdown()


def test_migrations_once_then_adopted(project: Emulator, postgres_url: str, run_id: str) -> None:
    session = _session(project, postgres_url, run_id)
    session.create_worker_branch()
    migrations = Migrations(session)
    ran: list[str] = []

    def apply() -> None:
        branch = migrations.branch()
        ran.append(branch.branch_id)
        _write(branch, "migrated")

    source = migrations.prepare(apply=apply, fingerprint=lambda: None, describe=str)
    migrations.adopt(source)
    assert source.branch_id == ran[0]
    assert source.expires
    assert _has(session.checkout(), "migrated")
    # a second process of the same run finds the recorded result
    other = _session(project, postgres_url, run_id)
    other_source = Migrations(other).prepare(
        apply=lambda: ran.append("again"), fingerprint=lambda: None, describe=str
    )
    assert other_source == source
    assert len(ran) == 1
    session.shutdown()


def test_migrations_that_miss_their_branch_are_an_error(
    project: Emulator, postgres_url: str, run_id: str
) -> None:
    session = _session(project, postgres_url, run_id)
    worker = session.create_worker_branch()
    migrations = Migrations(session)

    def apply() -> None:
        migrations.branch()
        _write(worker, "misplaced")  # as an env.py with a URL read at start would

    with pytest.raises(WrongBranchError, match="this worker's branch changed"):
        migrations.prepare(apply=apply, fingerprint=lambda: None, describe=str)
    session.shutdown()


def test_sweep_deletes_only_stale_branches_of_other_runs(
    project: Emulator, postgres_url: str, run_id: str
) -> None:
    session = _session(project, postgres_url, run_id)
    client, project_id = session.client, project.project_id
    for name, marks in {
        "pytest-neon-0000dead-main": run_annotations("0000dead"),  # another run's: swept
        "pytest-neon-cache-0123": run_annotations("0000dead"),  # a cache branch: kept
        "pytest-neon-0000beef-main": {},  # not made by pytest-neon: kept
    }.items():
        client.create_branch(project_id, name=name, annotations=marks)
    own = session.create_worker_branch()  # this run's: kept
    # no expiry, and "older than 0 s": stale if it is another run's and ours
    swept = sweep_stale(session.ops, client.list_branches(project_id), max_age=0)
    assert swept == ["pytest-neon-0000dead-main"]
    names = {b.name for b in client.list_branches(project_id)}
    assert {"pytest-neon-cache-0123", "pytest-neon-0000beef-main"} <= names
    assert own.branch_id in {b.id for b in client.list_branches(project_id)}
    assert delete_created(session.ops) == ([], False)
    assert own.branch_id not in {b.id for b in client.list_branches(project_id)}
    session.shutdown()
