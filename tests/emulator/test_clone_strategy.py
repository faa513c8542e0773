"""The clone strategy: measured on the server, or fixed; and really used by the clones."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from pytest_neon.local.emulator.sql.clone_strategy import AUTO, FILE_COPY, WAL_LOG, CloneStrategy
from pytest_neon.local.emulator.sql.real_databases import RealDatabases
from pytest_neon.local.emulator.sql.server import SqlServer

ROWS = 20_000  # about 1 MB: a WAL_LOG copy writes all of it to the WAL


@pytest.fixture
def template(postgres_url: str) -> Iterator[tuple[SqlServer, str]]:
    server = SqlServer(postgres_url, pool_size=2)
    databases = RealDatabases(server, CloneStrategy(FILE_COPY))
    name = f"strategy_{uuid.uuid4().hex[:8]}"
    databases.create(name, "postgres", "test template")
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE t AS SELECT g, repeat('x', 40) AS pad FROM generate_series(1, {ROWS}) g"
        )
    try:
        yield server, name
    finally:
        for db in databases.all_names():
            if db.startswith(name):
                databases.drop(db)
        server.close()


def _wal_bytes_of_clone(
    databases: RealDatabases, server: SqlServer, template: str, name: str
) -> int:
    with server.connection() as conn:
        before = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()
        databases.clone(template, name, "postgres", "test clone", wait=10)
        row = conn.execute("SELECT pg_current_wal_insert_lsn() - %s::pg_lsn", before).fetchone()
    assert row is not None
    return int(row[0])


def test_each_strategy_is_measured_then_the_faster_one_is_kept(
    template: tuple[SqlServer, str],
) -> None:
    server, name = template
    strategy = CloneStrategy(AUTO)
    databases = RealDatabases(server, strategy)
    first = _wal_bytes_of_clone(databases, server, name, f"{name}_1")
    second = _wal_bytes_of_clone(databases, server, name, f"{name}_2")
    measured = strategy.measured()[name]
    assert set(measured) == {FILE_COPY, WAL_LOG}
    # the statement really changed: only WAL_LOG puts the pages in the WAL
    assert second > ROWS * 40 > first
    faster = min(measured, key=measured.__getitem__)
    assert strategy.pick(name) == faster
    third = _wal_bytes_of_clone(databases, server, name, f"{name}_3")
    assert (third > ROWS * 40) == (faster == WAL_LOG)
    # a choice that gets slower is dropped: the other one's figure now beats it
    other = WAL_LOG if faster == FILE_COPY else FILE_COPY
    for _ in range(8):
        strategy.record(name, faster, measured[other] * 4)
    assert strategy.pick(name) == other


def test_a_fixed_strategy_is_always_used(template: tuple[SqlServer, str]) -> None:
    server, name = template
    strategy = CloneStrategy(WAL_LOG)
    databases = RealDatabases(server, strategy)
    for n in range(2):
        assert _wal_bytes_of_clone(databases, server, name, f"{name}_w{n}") > ROWS * 40
    assert strategy.measured() == {}


def test_an_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="FILE_COPY, WAL_LOG, AUTO"):
        CloneStrategy("COPY")
