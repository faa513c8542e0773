"""pytest_neon.contrib.sqlalchemy: app engines across resets, rollback sessions, session engine."""

from __future__ import annotations

import pytest

from tests.support.pytest_runs import NeonProject, clean_neon_env, run_local

MIGRATIONS = """
import psycopg
import pytest

pytest_plugins = ["pytest_neon.contrib.sqlalchemy"]

@pytest.fixture(scope="session")
def neon_apply_migrations(_neon_migration_branch):
    with psycopg.connect(_neon_migration_branch.connection_string) as conn:
        conn.execute("CREATE TABLE items (id serial PRIMARY KEY, name text UNIQUE NOT NULL)")
"""

# An application module: engines built from DATABASE_URL at import, none with pre-ping
# except engine_ping. Imported by conftest.py, as applications usually are. Every one of
# them follows the branch; naming them (ini key, register_engine) still works.
APP_DB = """
import os
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine

URL = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
engine_ini = create_engine(URL)          # named in the neon_sqlalchemy_engines ini key
engine_fn = create_engine(URL)           # register_engine() in conftest.py
engine_ping = create_engine(URL, pool_pre_ping=True)  # the alternative: no registration
engine_plain = create_engine(URL)        # not registered: follows all the same
async_engine = create_async_engine(URL)  # register_engine() works for async engines too
"""

APP_ENGINE_TESTS = """
import pytest
from sqlalchemy import text

import appdb

def _insert_and_count(engine, name):
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO items (name) VALUES (:n)"), {"n": name})
        return conn.execute(text("SELECT count(*) FROM items")).scalar()

def test_a_plain_engine_pools_a_connection(neon_branch_readwrite):
    assert _insert_and_count(appdb.engine_plain, "plain") == 1

def test_b_plain_engine_gets_a_new_connection_after_the_reset(neon_branch_readwrite):
    assert _insert_and_count(appdb.engine_plain, "plain") == 1

@pytest.mark.parametrize("n", range(3))
def test_c_registered_engines_work_after_every_reset(neon_branch_readwrite, n):
    for rows, name in enumerate(("engine_ini", "engine_fn", "engine_ping"), start=1):
        assert _insert_and_count(getattr(appdb, name), name) == rows, name

@pytest.mark.anyio
@pytest.mark.parametrize("n", range(2))
async def test_d_registered_async_engine_works_after_every_reset(neon_branch_readwrite, n):
    async with appdb.async_engine.begin() as conn:
        await conn.execute(text("INSERT INTO items (name) VALUES ('async')"))
        assert (await conn.execute(text("SELECT count(*) FROM items"))).scalar() == 1

@pytest.mark.parametrize("n", range(2))
def test_e_session_engine_alone_is_reset_after_the_test(neon_session_engine, n):
    assert _insert_and_count(neon_session_engine, "session engine") == 1
"""


def test_app_engines_built_at_import_work_after_resets(neon: NeonProject) -> None:
    neon.pytester.makeini("[pytest]\nneon_sqlalchemy_engines = appdb:engine_ini\n")
    neon.pytester.makepyfile(appdb=APP_DB, test_app_engines=APP_ENGINE_TESTS)
    neon.pytester.makeconftest(
        MIGRATIONS
        + """
import appdb
from pytest_neon.contrib.sqlalchemy import register_engine

register_engine(appdb.engine_fn)
register_engine(appdb.async_engine)
"""
    )
    result = neon.run("-v")
    result.assert_outcomes(passed=9)


ROLLBACK_TESTS = """
import psycopg
import pytest
from sqlalchemy import text

def _count(session):
    return session.execute(text("SELECT count(*) FROM items")).scalar()

def test_a_commits_are_savepoints(neon_session):
    neon_session.execute(text("INSERT INTO items (name) VALUES ('kept until the end')"))
    neon_session.commit()
    neon_session.execute(text("INSERT INTO items (name) VALUES ('rolled back')"))
    neon_session.rollback()
    assert _count(neon_session) == 1
    neon_session.execute(text("CREATE TABLE scratch (x int)"))

@pytest.mark.parametrize("n", range(3))
def test_b_each_test_starts_from_the_migrated_state(neon_session, n):
    assert _count(neon_session) == 0
    assert neon_session.execute(text("SELECT to_regclass('scratch')")).scalar() is None
    neon_session.execute(text("INSERT INTO items (name) VALUES ('same name')"))
    neon_session.commit()

@pytest.mark.anyio
@pytest.mark.parametrize("n", range(2))
async def test_c_async_session_rolls_back_too(neon_async_session, n):
    await neon_async_session.execute(text("INSERT INTO items (name) VALUES ('same name')"))
    await neon_async_session.commit()
    result = await neon_async_session.execute(text("SELECT count(*) FROM items"))
    assert result.scalar() == 1

def test_d_nothing_reached_the_branch(neon_branch_readonly):
    with psycopg.connect(neon_branch_readonly.connection_string) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
"""


def test_rollback_sessions_isolate_and_spend_no_reset(neon: NeonProject) -> None:
    neon.pytester.makeconftest(MIGRATIONS)
    neon.pytester.makepyfile(test_rollback=ROLLBACK_TESTS)
    result = neon.run("-v")
    result.assert_outcomes(passed=7)
    # No reset: bringing the worker branch to the migrated state at the start is not one.
    # No second worker branch either: no test may write.
    result.stdout.fnmatch_lines(["*branches created: 2, resets: 0 done*"])


def test_rolled_back_work_is_not_taken_for_the_next_tests_write(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # local backend: exact counts. A rolled-back insert is in the WAL all the same; the
    # check of the readwrite test after it must start after it.
    clean_neon_env(monkeypatch)
    pytester.makeconftest(MIGRATIONS)
    pytester.makepyfile(
        test_order="""
        import psycopg
        from sqlalchemy import text

        def _count(dsn):
            with psycopg.connect(dsn) as conn:
                return conn.execute("SELECT count(*) FROM items").fetchone()[0]

        def test_a_reads(neon_branch_readwrite):
            assert _count(neon_branch_readwrite.connection_string) == 0

        def test_b_rolls_back(neon_session):
            neon_session.execute(text("INSERT INTO items (name) VALUES ('rolled back')"))
            neon_session.commit()

        def test_c_reads(neon_branch_readwrite):
            assert _count(neon_branch_readwrite.connection_string) == 0
        """
    )
    result = run_local(pytester, postgres_url)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*resets: 0 done / 2 skipped*"])


def test_unknown_engine_in_ini_is_a_clear_error(neon: NeonProject) -> None:
    neon.pytester.makeini("[pytest]\nneon_sqlalchemy_engines = appdb:no_such_engine\n")
    neon.pytester.makeconftest('pytest_plugins = ["pytest_neon.contrib.sqlalchemy"]\n')
    neon.pytester.makepyfile(
        appdb="engine = None\n",
        test_one="def test_one():\n    pass\n",
    )
    result = neon.run()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*neon_sqlalchemy_engines = appdb:no_such_engine: AttributeError*no_such_engine*"]
    )
