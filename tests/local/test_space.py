"""RAM or disk for the local branches: chosen from what an earlier run of the project held,
before anything starts; said in the header when it is large."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from pytest_neon.local.shared_server import stop_shared_server
from pytest_neon.local.space import (
    WAL_ROOM,
    Estimate,
    Room,
    copies_needed,
    default_base_dir,
    free_bytes,
    remember_size,
    remembered_size,
    throwaway_place,
)
from pytest_neon.local.unavailable import PostgresUnavailableError
from tests.support.pytest_runs import clean_neon_env, run_pytest

TABLESPACE_OF_THE_TEST = """
import psycopg

def test_where(neon_branch_readwrite):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        conn.execute("CREATE TABLE filler AS SELECT g FROM generate_series(1, 50000) g")
        row = conn.execute(
            "SELECT t.spcname FROM pg_database d JOIN pg_tablespace t"
            " ON t.oid = d.dattablespace WHERE d.datname = current_database()"
        ).fetchone()
    print("TABLESPACE", row[0])
"""


@pytest.fixture
def cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    clean_neon_env(monkeypatch)
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


def _too_big_for_ram(copies: int) -> int:
    """A database size whose copies do not fit in the RAM disk (but do on disk here)."""
    ram = default_base_dir()
    assert ram is not None, "these tests need a RAM disk (/dev/shm)"
    free = free_bytes(ram)
    assert free is not None
    return free // copies + 1


def test_the_estimate_counts_every_copy_and_the_wal() -> None:
    assert copies_needed(workers=1, branches_per_worker=1) == 5  # 2 + 1 * 1 * (1 + 2)
    assert copies_needed(workers=4, branches_per_worker=2) == 26  # 2 + 4 * 2 * (1 + 2)
    estimate = Estimate(size=100 << 20, copies=4)
    assert estimate.total == (400 << 20) + WAL_ROOM
    assert estimate.fits(estimate.total * 2)
    assert not estimate.fits(estimate.total)  # RAM keeps room for everything else
    assert estimate.describe() == "about 720 MB: 4 copies of 100 MB + 320 MB of WAL"


def test_sizes_are_remembered_per_project(cache_home: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert remembered_size(one) is None
    remember_size(one, 123)
    remember_size(two, 456)
    remember_size(one, 789)
    assert (remembered_size(one), remembered_size(two)) == (789, 456)
    for n in range(100):  # the record keeps the newest projects only
        remember_size(tmp_path / f"p{n}", n + 1)
    assert remembered_size(one) is None
    assert remembered_size(tmp_path / "p99") == 100
    (cache_home / "pytest-neon" / "sizes.json").write_text("not json")
    assert remembered_size(one) is None  # a broken record is no estimate


def test_branches_that_do_not_fit_in_ram_go_to_disk(cache_home: Path) -> None:
    assert throwaway_place(None) == (None, "")  # nothing known: the default
    copies = copies_needed(1, 1)
    place, note = throwaway_place(Estimate(_too_big_for_ram(copies), copies))
    assert place == Path(tempfile.gettempdir())
    assert "; on disk: the branches take about " in note
    with pytest.raises(PostgresUnavailableError, match="--neon-local-postgres-url"):
        throwaway_place(Estimate(1 << 60, copies))  # more than any disk here


def test_a_run_notes_its_size_and_the_next_one_chooses_from_it(
    cache_home: Path, pytester: pytest.Pytester
) -> None:
    pytester.makepyfile(test_where=TABLESPACE_OF_THE_TEST)
    result = run_pytest(pytester, "-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=1)
    noted = remembered_size(pytester.path)
    assert noted is not None
    assert noted > 1 << 20  # the test's branch, with its table
    record = cache_home / "pytest-neon" / "sizes.json"
    copies = copies_needed(1, 1)
    sizes = json.loads(record.read_text())
    sizes = {key: _too_big_for_ram(copies) for key in sizes}  # as if it had grown
    record.write_text(json.dumps(sizes))
    result = run_pytest(pytester, "-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["neon: backend local*throwaway cluster*; on disk: the branches*"])


def test_the_kept_server_puts_a_big_run_on_disk(
    cache_home: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(tempfile.mkdtemp(prefix="pn-kept-")) / "pg"
    monkeypatch.setenv("NEON_LOCAL_REUSE", "true")
    monkeypatch.setenv("NEON_LOCAL_DIR", str(root))
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(test_where=TABLESPACE_OF_THE_TEST)
    try:
        result = run_pytest(pytester, "-p", "no:cacheprovider", "-s")
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(["*TABLESPACE pytest_neon_ram"])
        copies = copies_needed(1, 1)
        remember_size(pytester.path, _too_big_for_ram(copies))
        result = run_pytest(pytester, "-p", "no:cacheprovider", "-s")
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(
            ["neon: backend local*; this run's branches on disk: they take about *"]
        )
        result.stdout.fnmatch_lines(["*TABLESPACE pg_default"])
        # the project the first run parked in RAM is not taken over; this one is parked
        result.stdout.no_fnmatch_line("*taken over*")
        (record,) = (root / "parked").glob("place-*.json")
        assert json.loads(record.read_text())["in_ram"] is False
    finally:
        stop_shared_server(root)


def test_a_room_without_a_noted_size_estimates_nothing(cache_home: Path, tmp_path: Path) -> None:
    assert Room(tmp_path, 4).estimate() is None
    remember_size(tmp_path, 10 << 20)
    assert Room(tmp_path, 4).estimate() == Estimate(10 << 20, 4)
