"""The fixtures, end to end: inner pytest runs against the emulator on real PostgreSQL."""

from __future__ import annotations

import pytest

from tests.support.pytest_runs import NeonProject


def test_readwrite_isolates_rows_schema_and_sequences(neon: NeonProject) -> None:
    neon.pytester.makepyfile(
        test_rw="""
        import os
        import psycopg

        def test_a_write(neon_branch_readwrite):
            assert os.environ["DATABASE_URL"] == neon_branch_readwrite.connection_string
            with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
                conn.execute("CREATE TABLE users (id serial PRIMARY KEY, email text)")
                conn.execute("INSERT INTO users (email) VALUES ('a@example.com')")
                conn.execute("CREATE SEQUENCE s")
                conn.execute("SELECT nextval('s')")

        def test_b_sees_nothing(neon_branch_readwrite):
            with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
                row = conn.execute(
                    "SELECT to_regclass('users') IS NULL AND to_regclass('s') IS NULL"
                ).fetchone()
            assert row == (True,)

        def test_c_same_branch_every_test(neon_branch_readwrite):
            assert neon_branch_readwrite.branch_id.startswith("br-")
            assert neon_branch_readwrite.host
            assert neon_branch_readwrite.parent_id
        """
    )
    before = neon.branch_names()
    result = neon.run("-v")
    result.assert_outcomes(passed=3)
    assert neon.branch_names() == before


def test_readonly_refuses_writes_at_the_database(neon: NeonProject) -> None:
    neon.pytester.makepyfile(
        test_ro="""
        import psycopg
        import pytest

        def test_read(neon_branch_readonly):
            with psycopg.connect(neon_branch_readonly.connection_string) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)

        def test_write_fails(neon_branch_readonly):
            with psycopg.connect(neon_branch_readonly.connection_string) as conn:
                with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                    conn.execute("CREATE TABLE t (x int)")
        """
    )
    neon.run().assert_outcomes(passed=2)


def test_deprecated_alias_warns_and_works(neon: NeonProject) -> None:
    neon.pytester.makepyfile(
        test_old="""
        import pytest

        def test_old_name(neon_branch):
            assert neon_branch.connection_string

        def test_warning_names_replacements(request):
            match = "neon_branch_readwrite.*neon_branch_readonly"
            with pytest.warns(DeprecationWarning, match=match):
                request.getfixturevalue("neon_branch")
        """
    )
    result = neon.run("-W", "always::DeprecationWarning")
    result.assert_outcomes(passed=2, warnings=1)


def test_shared_branch_is_one_per_module_and_deleted(neon: NeonProject) -> None:
    neon.pytester.makepyfile(
        test_shared_one="""
        import os, psycopg
        seen = []

        def test_first(neon_branch_shared):
            seen.append(neon_branch_shared.branch_id)
            assert os.environ["DATABASE_URL"] == neon_branch_shared.connection_string
            with psycopg.connect(neon_branch_shared.connection_string) as conn:
                conn.execute("CREATE TABLE kept (x int)")

        def test_second_sees_the_first(neon_branch_shared):
            assert seen == [neon_branch_shared.branch_id]
            with psycopg.connect(neon_branch_shared.connection_string) as conn:
                assert conn.execute("SELECT to_regclass('kept') IS NOT NULL").fetchone() == (True,)
        """,
        test_shared_two="""
        import psycopg

        def test_other_module_has_its_own(neon_branch_shared):
            with psycopg.connect(neon_branch_shared.connection_string) as conn:
                assert conn.execute("SELECT to_regclass('kept') IS NULL").fetchone() == (True,)
        """,
    )
    before = neon.branch_names()
    neon.run().assert_outcomes(passed=3)
    assert neon.branch_names() == before


def test_readwrite_and_shared_in_one_test_is_refused(neon: NeonProject) -> None:
    neon.pytester.makepyfile(
        test_both="""
        def test_both(neon_branch_shared, neon_branch_readwrite):
            pass
        """
    )
    result = neon.run()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*uses both neon_branch_readwrite and neon_branch_shared*"])


def test_connection_fixtures(neon: NeonProject) -> None:
    neon.pytester.makepyfile(
        test_conn="""
        import sqlalchemy

        def test_pg3(neon_connection_psycopg):
            assert neon_connection_psycopg.execute("SELECT 1").fetchone() == (1,)

        def test_pg2(neon_connection):
            cur = neon_connection.cursor()
            cur.execute("SELECT 2")
            assert cur.fetchone() == (2,)

        def test_sa(neon_engine):
            with neon_engine.connect() as conn:
                assert conn.execute(sqlalchemy.text("SELECT 3")).scalar() == 3
            assert neon_engine.pool._pre_ping
        """
    )
    neon.run().assert_outcomes(passed=3)


def test_branch_repr_hides_the_password(neon: NeonProject) -> None:
    neon.pytester.makepyfile(
        test_repr="""
        from urllib.parse import urlsplit

        def test_repr(neon_branch_readwrite):
            password = urlsplit(neon_branch_readwrite.connection_string).password
            assert password
            assert password not in repr(neon_branch_readwrite)
            assert "connection_string=" in repr(neon_branch_readwrite)
            assert neon_branch_readwrite.database_name == "neondb"
            assert neon_branch_readwrite.role_name == "neondb_owner"
            assert neon_branch_readwrite.endpoint_id.startswith("ep-")
        """
    )
    neon.run().assert_outcomes(passed=1)


def test_env_var_points_at_the_branch_before_conftest_imports(neon: NeonProject) -> None:
    neon.pytester.makeconftest(
        """
        import os
        URL_AT_IMPORT = os.environ.get("DATABASE_URL")
        """
    )
    neon.pytester.makepyfile(
        test_import="""
        import os
        from conftest import URL_AT_IMPORT

        def test_same_branch(neon_branch_readwrite):
            assert URL_AT_IMPORT == neon_branch_readwrite.connection_string
        """
    )
    neon.run().assert_outcomes(passed=1)


def test_xdist_controller_env_var_never_reaches_a_database(
    neon: NeonProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    neon.pytester.makeconftest(
        """
        import os
        AT_IMPORT = os.environ.get("DATABASE_URL")
        print("CONFTEST-URL", AT_IMPORT)
        """
    )
    neon.pytester.makepyfile(
        test_worker="""
        from conftest import AT_IMPORT

        def test_worker_has_its_branch(neon_branch_readwrite):
            assert AT_IMPORT == neon_branch_readwrite.connection_string
        """
    )
    monkeypatch.setenv("DATABASE_URL", "postgresql://prod.example.com/live")
    result = neon.run("-n", "2", "-s")
    result.assert_outcomes(passed=1)
    assert "prod.example.com" not in result.stdout.str()
    result.stdout.fnmatch_lines(
        ["*CONFTEST-URL postgresql://pytest-neon-xdist-controller.invalid*"]
    )
