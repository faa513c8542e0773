"""On a server that syncs to disk, a copy swapped out by a restore waits while spares are
being cloned and is dropped once none is; elsewhere, or past the limit, it goes at once.
Such a server keeps three spares of a branch ahead (clones there are slow), others two."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from pytest_neon.local.cluster import RunningPostgres
from pytest_neon.local.emulator import Emulator
from pytest_neon.local.emulator.sql import spares
from pytest_neon.local.launcher import start_postgres
from tests.support.emulator_http import NeonHttp, sql, wait_for_spares

DROPPED_WITHIN = 10.0  # seconds a drop that does not wait may take
WAITS_AT_LEAST = 0.6  # seconds a held copy is seen to stay (a drop takes far less)


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPostgres]:
    """A server of this module's own, whose ``fsync`` the tests turn on and off."""
    with start_postgres(base_dir=Path(tmp_path_factory.mktemp("held"))) as server:
        yield server


def _set_fsync(url: str, on: bool) -> None:
    value = "on" if on else "off"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET fsync = {value}")
        conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10
        while conn.execute("SHOW fsync").fetchone() != (value,):
            assert time.monotonic() < deadline, "fsync was not reloaded"
            time.sleep(0.02)


def _databases(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


def _hold_clones_of(url: str, real_name: str) -> psycopg.Connection[Any]:
    """A session whose open transaction makes every clone of database ``real_name`` wait
    (``COMMENT ON DATABASE`` locks it against ``CREATE DATABASE ... TEMPLATE``)."""
    conn = psycopg.connect(url)
    row = conn.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        (real_name,),
    ).fetchone()
    assert row is not None
    statement = pgsql.SQL("COMMENT ON DATABASE {} IS {}")
    conn.execute(statement.format(pgsql.Identifier(real_name), pgsql.Literal(row[0])))
    return conn


def _until(what: str, done: Any, timeout: float = DROPPED_WITHIN) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(what)
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("syncs", "limit", "waits"),
    [(True, None, True), (False, None, False), (True, 0, False)],
    ids=["fsync-on", "fsync-off", "fsync-on-past-the-limit"],
)
def test_a_swapped_out_copy_waits_for_the_clones_only_on_a_server_that_syncs(
    own_server: RunningPostgres,
    monkeypatch: pytest.MonkeyPatch,
    syncs: bool,
    limit: int | None,
    waits: bool,
) -> None:
    if limit is not None:
        monkeypatch.setattr(spares, "HELD_BYTES", limit)
        monkeypatch.setattr(spares, "HELD_AT_LEAST", limit)
    url = own_server.url
    _set_fsync(url, syncs)
    emulator = Emulator(url, api_key=secrets.token_urlsafe(24)).start()
    try:
        with NeonHttp(emulator, None) as api:
            _restore_while_a_clone_waits(emulator, api, url, waits=waits, kept=3 if syncs else 2)
    finally:
        emulator.stop(drop=True)
    assert not {d for d in _databases(url) if d.startswith("nb_")}  # nothing left behind


def _restore_while_a_clone_waits(
    emulator: Emulator, api: NeonHttp, url: str, *, waits: bool, kept: int
) -> None:
    main = emulator.default_branch_id
    sql(api.uri(main), "CREATE TABLE t (v text); INSERT INTO t VALUES ('parent')")
    branch = api.create_branch(name="held")["branch"]["id"]
    uri = api.uri(branch)
    api.restore(branch, main)
    assert len(wait_for_spares(emulator, branch, 2)) == kept
    _until("the first restore's old copy stayed", lambda: not _swapped_out_copies(url))
    held = _hold_clones_of(url, emulator.control_plane.real_database(main))
    swapped_out: set[str] = set()
    try:
        before = _databases(url)
        sql(uri, "INSERT INTO t VALUES ('written')")
        api.restore(branch, main)  # a spare swapped in; the clone replacing it waits
        assert sql(uri, "SELECT v FROM t") == [("parent",)]
        # the spare took the branch's name; the old copy got a new one, unless dropped
        if waits:
            swapped_out = _databases(url) - before
            assert len(swapped_out) == 1
            time.sleep(WAITS_AT_LEAST)
            assert swapped_out <= _databases(url), "dropped while a clone was under way"
        else:
            _until(
                "the old copy waited for the clone",
                lambda: len(_databases(url)) == len(before) - 1,
            )
    finally:
        held.rollback()  # the clone goes on
        held.close()
    assert len(wait_for_spares(emulator, branch, 2)) == kept
    _until("the old copy stayed after the clones", lambda: not swapped_out & _databases(url))
    _until("an old copy stayed", lambda: not _swapped_out_copies(url))
    assert len(_databases(url)) == len(before)  # the spares again, nothing else


def _swapped_out_copies(url: str) -> set[str]:
    """Copies a restore swapped out (renamed ``nbtrash_...``), not dropped yet."""
    return {d for d in _databases(url) if d.startswith("nbtrash_")}
