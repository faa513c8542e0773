"""Tests that move the clock (time-machine, freezegun, as many Django suites do) move
neither the branches' expiries nor the emulator's operations (``pytest_neon.clock``)."""

from __future__ import annotations

import pytest

from tests.support.pytest_runs import clean_neon_env, run_local

MIGRATIONS = """
import datetime, psycopg, pytest

@pytest.fixture(scope="session")
def neon_migration_fingerprint():
    return None  # migrated by every run: no cache

@pytest.fixture(scope="session")
def neon_apply_migrations(neon_migration_branch):
    with psycopg.connect(neon_migration_branch.connection_string) as conn:
        conn.execute("CREATE TABLE items (id serial, name text)")

PAST = datetime.datetime(2022, 2, 22, 2, 22)
"""

TIME_MACHINE = """
@pytest.fixture(autouse=True)
def moved(time_machine):
    time_machine.move_to(PAST)
    yield
"""

FREEZEGUN = """
@pytest.fixture(autouse=True)
def moved():
    from freezegun import freeze_time

    with freeze_time(PAST, tick=True):
        yield
"""

TESTS = """
import datetime, psycopg, pytest, time

@pytest.fixture
def branch(moved, request):  # made, migrated and reset while the clock is moved
    return request.getfixturevalue("neon_branch_readwrite")

@pytest.mark.parametrize("n", range(3))
def test_writes(branch, n):
    assert datetime.datetime.now().year == 2022
    with psycopg.connect(branch.connection_string) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
        conn.execute("INSERT INTO items (name) VALUES ('x')")
    time.sleep(1.2)  # (the emulator sweeps expired branches every 0.5 s)
"""


@pytest.mark.parametrize("library", ["time-machine", "freezegun"])
def test_moving_the_clock_breaks_no_branch(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch, library: str
) -> None:
    clean_neon_env(monkeypatch)
    mover = TIME_MACHINE if library == "time-machine" else FREEZEGUN
    pytester.makeconftest(MIGRATIONS + mover)
    pytester.makepyfile(test_moved=TESTS)
    result = run_local(pytester, postgres_url, subprocess=True)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*resets: 2 done*"])
    result.stdout.no_fnmatch_line("*WARNING*")
