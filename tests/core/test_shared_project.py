"""Runs that share one Neon project, driven directly against the emulator: the migration
cache is claimed, built once and published whole; the branch limit is waited out;
pruning spares the caches live runs may use."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
import requests

from pytest_neon.api import NeonClient
from pytest_neon.config import resolve
from pytest_neon.errors import NeonLimitError
from pytest_neon.housekeeping import sweep_stale
from pytest_neon.local.emulator import Emulator
from pytest_neon.migrations import Migrations
from pytest_neon.migrations.cache import CACHE_PREFIX, prune
from pytest_neon.neon_session import NeonSession
from pytest_neon.xdist import new_run_id, remove_coordination_dir


@pytest.fixture
def project(emulator: Emulator) -> Emulator:
    """A fresh emulated project (the suite's ``emulator``)."""
    return emulator


@pytest.fixture
def runs() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for run in made:
        remove_coordination_dir(run)  # the migration gates' files


def _session(emulator: Emulator, runs: list[str], **settings: object) -> NeonSession:
    run = new_run_id()
    runs.append(run)
    resolved = resolve({"project_id": emulator.project_id, **settings}, {}, {})
    client = NeonClient(emulator.api_key or "", api_host=emulator.api_host)
    session = NeonSession(client, resolved, run_id=run, worker="main")
    session.check_project(sweep_after=0)  # (sees the other runs, as a run's start does)
    return session


def _names(emulator: Emulator) -> list[str]:
    answer = requests.get(
        f"{emulator.api_host}/projects/{emulator.project_id}/branches",
        headers={"Authorization": f"Bearer {emulator.api_key}"},
        timeout=30,
    )
    answer.raise_for_status()
    return sorted(b["name"] for b in answer.json()["branches"])


def _has_items(session: NeonSession, source: str) -> bool:
    branch = session.checkout()
    assert session.source_id == source
    with psycopg.connect(branch.connection_string) as conn:
        row = conn.execute("SELECT to_regclass('items') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _migrating(session: NeonSession, log: list[str], seconds: float) -> Callable[[], None]:
    def apply() -> None:
        log.append(session.run_id)
        branch = Migrations(session).branch()
        time.sleep(seconds)  # the other runs look for the cache meanwhile
        with psycopg.connect(branch.connection_string) as conn:
            conn.execute("CREATE TABLE items (x int)")

    return apply


def _prepare(session: NeonSession, apply: Callable[[], None]) -> str:
    migrations = Migrations(session)
    source = migrations.prepare(apply=apply, fingerprint=lambda: "v1", describe=str)
    migrations.adopt(source)
    return source.branch_id


def test_runs_started_together_migrate_once_and_share_the_cache(
    project: Emulator, runs: list[str]
) -> None:
    first = _session(project, runs)
    first.admit()  # alone on the project: no migration branch made ahead
    sessions = [first, *(_session(project, runs) for _ in range(3))]
    for session in sessions[1:]:
        session.admit()  # others run: a migration branch is made with the worker's
    assert sum(s.reserved_migration is not None for s in sessions) == 3
    log: list[str] = []
    sources: dict[str, str] = {}
    seen: list[list[str]] = []

    def run(session: NeonSession) -> None:
        sources[session.run_id] = _prepare(session, _migrating(session, log, 1.5))

    def watch() -> None:  # the cache's name never shows before it is migrated
        while len(sources) < len(sessions):
            seen.append(_names(project))
            time.sleep(0.05)

    threads = [threading.Thread(target=run, args=(s,)) for s in sessions]
    threads.append(threading.Thread(target=watch))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(log) == 1  # one migration for all
    assert len(set(sources.values())) == 1
    cache = [n for n in _names(project) if n.startswith(CACHE_PREFIX)]
    assert len(cache) == 1
    assert not cache[0].endswith("-building")
    for session in sessions:
        assert _has_items(session, sources[session.run_id])
        assert session.migration_branch is None
        session.shutdown()  # (the unused migration branches' deletes end)
    claims = [names for names in seen if any(n.endswith("-building") for n in names)]
    assert claims  # the claim was seen while the migrations ran...
    assert all(cache[0] not in names for names in claims)  # ...and never beside the cache
    leftover = [n for n in _names(project) if "migrations" in n]
    assert leftover == []  # the unused reserved migration branches were deleted


def test_a_failed_claimer_lets_a_waiting_run_migrate(project: Emulator, runs: list[str]) -> None:
    first = _session(project, runs)
    first.admit()
    second = _session(project, runs)
    second.admit()
    log: list[str] = []
    failing_started = threading.Event()

    def broken() -> None:
        Migrations(first).branch()
        failing_started.set()
        time.sleep(1.0)
        raise RuntimeError("migration 0042 is broken")

    def run_first() -> None:
        with pytest.raises(RuntimeError):
            _prepare(first, broken)

    thread = threading.Thread(target=run_first)
    thread.start()
    assert failing_started.wait(30)
    assert claim_name_in(project)  # held by the first run
    source = _prepare(second, _migrating(second, log, 0.1))  # waits, then claims
    thread.join(timeout=60)
    assert log == [second.run_id]
    assert _has_items(second, source)
    assert any(n.startswith(CACHE_PREFIX) and not n.endswith("-building") for n in _names(project))
    first.shutdown()
    second.shutdown()


def claim_name_in(emulator: Emulator) -> bool:
    return any(n.endswith("-building") for n in _names(emulator))


def test_a_run_at_the_branch_limit_waits_for_another_to_free_one(
    project: Emulator, runs: list[str]
) -> None:
    project.control_plane.max_branches = 3  # the default branch and one run's two
    holder = _session(project, runs)
    holder.admit()
    waiting = _session(project, runs, wait_timeout=60)
    threading.Timer(1.5, lambda: holder.delete_branches(whole_run=False)).start()
    started = time.monotonic()
    waiting.admit()  # its worker and migration branches, once the first run's are gone
    assert time.monotonic() - started >= 1.0
    assert waiting.counters.phases["wait for branches"] > 0
    waiting.delete_branches(whole_run=False)


def test_at_the_branch_limit_a_run_holds_nothing_while_it_waits(
    project: Emulator, runs: list[str]
) -> None:
    project.control_plane.max_branches = 3  # the default branch, the other run's, one
    other = _session(project, runs)
    other.admit()
    session = _session(project, runs, wait_timeout=2)
    with pytest.raises(NeonLimitError, match=r"after waiting \d+s .*1 other pytest-neon run"):
        session.admit()  # its worker branch fits, its migration branch does not
    assert session.counters.phases["wait for branches"] > 0
    assert len(_names(project)) == 2  # what it made, it deleted (all or none)
    other.delete_branches(whole_run=False)
    project.control_plane.max_branches = 1  # no room at all, and no run to free any
    alone = _session(project, runs, wait_timeout=60)
    started = time.monotonic()
    with pytest.raises(NeonLimitError, match="this run needs up to"):
        alone.admit()
    assert time.monotonic() - started < 10  # nobody could free a branch: no wait


def test_pruning_spares_a_cache_a_live_run_may_use(project: Emulator, runs: list[str]) -> None:
    builder = _session(project, runs)
    builder.admit()
    old = builder.ops.create_kept_copy(
        CACHE_PREFIX + "0ld0000000000000",
        annotations={"created-by": "pytest-neon"},
        source_id=builder.parent_id,
    )
    for key in ("0ld1000000000000", "0ld2000000000000"):
        builder.ops.create_kept_copy(
            CACHE_PREFIX + key, annotations={"created-by": "pytest-neon"}, source_id=old
        )
    live = _session(project, runs)
    live.admit()  # a run started after every cache: it may use any of them
    prune(builder.ops, "ffffffffffffffff")
    assert len([n for n in _names(project) if n.startswith(CACHE_PREFIX)]) == 3
    live.delete_branches(whole_run=False)  # that run is over
    prune(builder.ops, "ffffffffffffffff")
    kept = [n for n in _names(project) if n.startswith(CACHE_PREFIX)]
    assert kept == [CACHE_PREFIX + "0ld2000000000000"]  # the newest other one
    builder.delete_branches(whole_run=False)


def test_the_sweep_leaves_a_live_run_of_another_alone(project: Emulator, runs: list[str]) -> None:
    live = _session(project, runs)
    live.admit()  # its branches' expiry is in the future: its keep-alive pushes it
    sweeper = _session(project, runs)
    swept = sweep_stale(sweeper.ops, sweeper.client.list_branches(project.project_id), 0)
    assert swept == []
    assert live.worker_branch is not None
    assert live.worker_branch.branch_id in {
        b.id for b in sweeper.client.list_branches(project.project_id)
    }
    live.delete_branches(whole_run=False)


def test_extra_worker_branches_take_only_the_room_there_is(
    project: Emulator, runs: list[str]
) -> None:
    project.control_plane.max_branches = 3  # the default branch, another run's, one
    other = _session(project, runs)
    other.admit()
    session = _session(project, runs, worker_branches=3, wait_timeout=60)
    started = time.monotonic()
    session.create_worker_branch()
    session.adopt_source(session.parent_id)  # the extra two are made in the background
    for slot in session.pool.slots[1:]:
        assert slot.pending is not None
        slot.pending.result(timeout=60)
    assert time.monotonic() - started < 10  # no wait for room: one fewer will do
    assert len([s for s in session.pool.slots if s.branch is not None]) == 1
    session.shutdown()
    session.delete_branches(whole_run=False)
    other.delete_branches(whole_run=False)


def test_a_second_publisher_keeps_its_own_and_leaves_one_cache(
    project: Emulator, runs: list[str]
) -> None:
    first, second = _session(project, runs), _session(project, runs)
    first.admit()
    second.admit()
    assert first.claim_migration_branch("k" * 16)
    source = first.publish_migration_branch("k" * 16)
    # a run that claimed the same key meanwhile (its claim made before the rename)
    late = second.ops.create("late", name=CACHE_PREFIX + "k" * 16 + "-late")
    second.migration_branch = late
    assert second.publish_migration_branch("k" * 16) == late.branch_id  # name taken: its own
    assert second.migration_branch is late  # still the run's, deleted at its end
    caches = [n for n in _names(project) if n == CACHE_PREFIX + "k" * 16]
    assert caches == [CACHE_PREFIX + "k" * 16]
    assert source not in second.ops.created
    assert f"pytest-neon-{second.run_id}-migrated" in _names(project)  # named as the run's
    second.delete_branches(whole_run=True)
    assert [n for n in _names(project) if n.startswith(CACHE_PREFIX)] == caches
    assert not any(second.run_id in n for n in _names(project))
