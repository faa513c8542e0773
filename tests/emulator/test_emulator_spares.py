"""Restores swap in a pre-cloned spare, and never a stale one."""

from __future__ import annotations

import time

import psycopg
import pytest

from pytest_neon.local.emulator import Emulator
from tests.support.emulator_http import NeonHttp, sql, wait_for_spares


def _restored_with_spares(
    emulator: Emulator, api: NeonHttp, name: str
) -> tuple[str, str, str, list[str]]:
    """A branch ``name`` of a parent with table ``t``, restored once so that its spares are
    made: the parent's id, the branch's id and URI, and the spares' names."""
    main = emulator.default_branch_id
    sql(api.uri(main), "CREATE TABLE t (v text); INSERT INTO t VALUES ('parent')")
    branch = api.create_branch(name=name)["branch"]["id"]
    uri = api.uri(branch)
    api.restore(branch, main)
    return main, branch, uri, wait_for_spares(emulator, branch)


def _databases(postgres_url: str) -> set[str]:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


def test_second_restore_uses_the_spare_and_keeps_the_uri(
    emulator: Emulator, api: NeonHttp, postgres_url: str
) -> None:
    main, branch, uri, spares = _restored_with_spares(emulator, api, "spare-user")
    assert len(spares) == 2  # so that back-to-back restores find one ready

    sql(uri, "INSERT INTO t VALUES ('test wrote this'); CREATE TABLE junk (x int)")
    with psycopg.connect(uri, autocommit=True) as held:
        api.restore(branch, main)
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
    assert api.uri(branch) == uri
    assert len(set(spares) - _databases(postgres_url)) == 1  # one became the branch's database
    assert sql(uri, "SELECT v FROM t") == [("parent",)]
    assert sql(uri, "SELECT to_regclass('junk') IS NULL") == [(True,)]


def test_a_change_to_the_source_makes_the_spare_stale(emulator: Emulator, api: NeonHttp) -> None:
    main = emulator.default_branch_id
    main_uri = api.uri(main)
    sql(main_uri, "CREATE TABLE t (v text)")
    branch = api.create_branch(name="stale-spare")["branch"]["id"]
    uri = api.uri(branch)
    api.restore(branch, main)
    wait_for_spares(emulator, branch)

    sql(main_uri, "INSERT INTO t VALUES ('written to the parent after the spare')")
    api.restore(branch, main)
    assert sql(uri, "SELECT v FROM t") == [("written to the parent after the spare",)]


def test_delete_and_drop_leave_no_spare_behind(
    emulator: Emulator, api: NeonHttp, postgres_url: str
) -> None:
    before = _databases(postgres_url)
    branch = api.create_branch(name="spare-then-delete")["branch"]["id"]
    api.restore(branch, emulator.default_branch_id)
    wait_for_spares(emulator, branch)
    api.delete_branch(branch)
    deadline = time.monotonic() + 10
    while _databases(postgres_url) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _databases(postgres_url) - before == set()


def test_back_to_back_restores_both_swap_in_a_spare(
    emulator: Emulator, api: NeonHttp, postgres_url: str
) -> None:
    main, branch, uri, spares = _restored_with_spares(emulator, api, "back-to-back")
    for n in range(2):
        sql(uri, f"INSERT INTO t VALUES ('written {n}')")
        api.restore(branch, main)
        assert sql(uri, "SELECT v FROM t") == [("parent",)]
    assert not set(spares) & _databases(postgres_url)  # both were renamed into place
