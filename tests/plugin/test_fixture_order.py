"""Fixtures of any scope, set up for a test on the worker branch, see it migrated and clean."""

from __future__ import annotations

import pytest

from tests.support.pytest_runs import clean_neon_env, run_local

APP = """
import os
from sqlalchemy import create_engine

URL = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
engine = create_engine(URL)
"""

CONFTEST = """
import psycopg
import pytest

import myapp  # noqa: F401  (the application's engine, built at import)

pytest_plugins = ["pytest_neon.contrib.sqlalchemy"]

@pytest.fixture(scope="session")
def neon_apply_migrations(_neon_migration_branch):
    with psycopg.connect(_neon_migration_branch.connection_string) as c:
        c.execute("CREATE TABLE t (x int)")
"""

COUNT = """
from sqlalchemy import text
from myapp import engine

def count():
    with engine.connect() as c:
        return c.execute(text("SELECT count(*) FROM t")).scalar()

def insert():
    with engine.begin() as c:
        c.execute(text("INSERT INTO t VALUES (1)"))
"""


def _project(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nneon_sqlalchemy_engines = myapp:engine\n")
    pytester.makepyfile(myapp=APP, conftest=CONFTEST, rows=COUNT)


def test_fixtures_of_every_scope_see_the_migrated_state(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    _project(pytester)
    pytester.makepyfile(
        test_a="""
        from rows import insert

        def test_writes(neon_branch_readwrite):
            insert()
        """,
        test_b="""
        import pytest
        from rows import count, insert

        @pytest.fixture(scope="module")
        def at_module_start():
            return count()

        @pytest.fixture(scope="class")
        def at_class_start():
            return count()

        def test_module_scope(at_module_start, neon_branch_readwrite):
            assert at_module_start == 0
            insert()

        class TestClass:
            def test_class_scope(self, at_class_start, neon_branch_readonly):
                assert at_class_start == 0

        def test_function_scope_listed_first(rows_now, neon_branch_readwrite):
            assert rows_now == 0
            insert()

        @pytest.fixture
        def rows_now():
            return count()
        """,
        test_c="""
        import pytest
        from rows import count

        @pytest.fixture(scope="session")
        def at_session_start():
            return count()

        def test_session_scope(at_session_start, neon_branch_readonly):
            assert at_session_start == 0
        """,
    )
    result = run_local(pytester, postgres_url)
    result.assert_outcomes(passed=5)
    # the three writing tests are reset; read-only ones have nothing to check
    result.stdout.fnmatch_lines(
        [
            "neon-sqlalchemy: pools emptied after every reset: myapp:engine",
            "*resets: 3 done / 0 skipped*",
        ]
    )


def test_a_fixture_that_writes_counts_as_the_tests_write(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    _project(pytester)
    pytester.makepyfile(
        test_fixture_writes="""
        import pytest
        from rows import count, insert

        @pytest.fixture(scope="module")
        def seeded():
            insert()  # before the test's neon_branch_readwrite, which writes nothing itself

        def test_a(seeded, neon_branch_readwrite):
            assert count() == 1

        def test_b(neon_branch_readwrite):
            assert count() == 0
        """
    )
    result = run_local(pytester, postgres_url)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*resets: 1 done / 1 skipped*"])


def test_tests_without_a_branch_fixture_do_not_wait(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    _project(pytester)
    pytester.makepyfile(
        test_plain="""
        from rows import count, insert

        def test_a_writes(neon_branch_readwrite):
            insert()

        def test_b_no_branch_fixture():
            pass

        def test_c_clean_again(neon_branch_readwrite):
            assert count() == 0
        """
    )
    result = run_local(pytester, postgres_url, "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*resets: 1 done / 1 skipped*"])
