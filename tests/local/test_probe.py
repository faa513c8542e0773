"""The write check on a real server: sent at one test's teardown, read at the next checkout."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from pytest_neon.probe import WriteProbe, wal_inspector_available


@pytest.fixture
def branch_url(postgres_url: str) -> Iterator[str]:
    """A database standing in for a branch, with one table."""
    name = f"probe_{secrets.token_hex(4)}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = urlunsplit(urlsplit(postgres_url)._replace(path=f"/{name}"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
    yield url
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _inspector(postgres_url: str) -> str:
    """``postgres_url`` as the probe's inspector; skips without ``pg_walinspect``."""
    if not wal_inspector_available(postgres_url, install=True):
        pytest.skip("pg_walinspect is not available on this server")
    return postgres_url


@pytest.fixture(params=["inspector", "position"])
def probe(
    request: pytest.FixtureRequest, branch_url: str, postgres_url: str
) -> Iterator[WriteProbe]:
    """A probe that asks ``pg_walinspect``, and one that compares positions (as on Neon)."""
    inspector = _inspector(postgres_url) if request.param == "inspector" else None
    probe = WriteProbe(branch_url, inspector)
    yield probe
    probe.close()


def _write(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO t VALUES (1)")


def test_a_started_check_answers_as_a_check_does(probe: WriteProbe, branch_url: str) -> None:
    before = probe.position()
    _write(branch_url)
    probe.start_check(before)
    wrote, after = probe.finish_check()
    assert wrote
    assert after is not None
    probe.start_check(after)  # nothing written since
    wrote_again, later = probe.finish_check()
    if probe.position_survives_reset:  # pg_walinspect: other databases' WAL is told apart
        assert not wrote_again
    assert later is not None


def test_a_write_after_the_check_is_seen_by_the_next_one(
    probe: WriteProbe, branch_url: str
) -> None:
    before = probe.position()
    probe.start_check(before)
    _, after = probe.finish_check()
    _write(branch_url)
    probe.start_check(after)
    wrote, _ = probe.finish_check()
    assert wrote


def test_the_probe_stays_usable_around_a_started_check(probe: WriteProbe, branch_url: str) -> None:
    before = probe.position()
    probe.start_check(before)
    assert probe.position() is not None  # reads the started check's answer first
    probe.start_check(before)
    probe.close()  # its answer is dropped with the connection
    _write(branch_url)
    probe.start_check(before)
    assert probe.finish_check()[0]
    assert probe.finish_check() == (True, None)  # nothing started: counts as written


@pytest.fixture
def inspecting(branch_url: str, postgres_url: str) -> Iterator[WriteProbe]:
    """A probe that asks ``pg_walinspect``."""
    probe = WriteProbe(branch_url, _inspector(postgres_url))
    yield probe
    probe.close()


def _records_in(postgres_url: str, branch_url: str, since: str) -> list[str]:
    """The record types that touched the branch's database since ``since``."""
    name = urlsplit(branch_url).path.lstrip("/")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")  # the commit flushes what came before
        conn.execute("SELECT pg_logical_emit_message(true, 'flush', '')")
        rows = conn.execute(
            "SELECT resource_manager || ' ' || record_type"
            " FROM pg_get_wal_records_info(%s::pg_lsn, pg_current_wal_flush_lsn())"
            " WHERE block_ref ~ (' rel [0-9]+/' || (SELECT oid FROM pg_database"
            "  WHERE datname = %s) || '/')",
            [since, name],
        ).fetchall()
    return [r[0] for r in rows]


def test_statistics_of_the_shared_catalogs_are_not_a_write(
    inspecting: WriteProbe, branch_url: str, postgres_url: str
) -> None:
    # what autovacuum does from whichever database it visits: pg_database changes with
    # every clone, and its statistics go to the visited database's catalogs
    before = inspecting.position()
    assert before is not None
    with psycopg.connect(branch_url, autocommit=True) as conn:
        conn.execute("ANALYZE pg_database")
        conn.execute("ANALYZE pg_authid")
        conn.execute("VACUUM pg_database")
    assert _records_in(postgres_url, branch_url, before)  # the database's own WAL moved
    inspecting.start_check(before)
    assert inspecting.finish_check()[0] is False


def test_a_check_reads_wal_from_before_the_last_checkpoints(
    inspecting: WriteProbe, branch_url: str, postgres_url: str
) -> None:
    # every clone forces a checkpoint; a test's WAL must still be there when it is checked
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        if conn.execute("SELECT pg_size_bytes(current_setting('wal_keep_size'))").fetchone() == (
            0,
        ):
            pytest.skip("this server keeps no WAL past a checkpoint (wal_keep_size is 0)")
    before = inspecting.position()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for _ in range(3):  # WAL of another database, then a new segment
            conn.execute("SELECT pg_logical_emit_message(false, 'elsewhere', '')")
            conn.execute("SELECT pg_switch_wal()")
        conn.execute("CHECKPOINT")
    inspecting.start_check(before)
    assert inspecting.finish_check()[0] is False
    _write(branch_url)
    inspecting.start_check(before)
    assert inspecting.finish_check()[0] is True
