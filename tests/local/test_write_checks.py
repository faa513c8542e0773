"""Write checks on a server given by URL whose database has no ``pg_walinspect``."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from tests.support.pytest_runs import clean_neon_env, run_pytest

TESTS = """
import psycopg

def test_writes(neon_branch_readwrite):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (x int)")

def test_reads(neon_branch_readwrite):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        conn.execute("SELECT 1")

def test_reads_again(neon_branch_readwrite):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        conn.execute("SELECT 1")
"""


def _url(base: str, *, user: str | None = None, password: str = "", db: str) -> str:
    parts = urlsplit(base)
    netloc = parts.netloc
    if user is not None:
        netloc = f"{quote(user)}:{quote(password)}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, path="/" + db))


@pytest.fixture
def plain_database(postgres_url: str) -> Iterator[str]:
    """A database of the suite's server without pg_walinspect: a server a user gives."""
    name = f"given_{secrets.token_hex(4)}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _checks_databases(postgres_url: str) -> set[str]:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'pytest_neon_checks_%'"
        )
        return {row[0] for row in rows}


def test_a_superuser_url_gets_write_checks_in_a_database_of_the_run(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    postgres_url: str,
    plain_database: str,
) -> None:
    clean_neon_env(monkeypatch)
    pytester.makepyfile(test_checks=TESTS)
    given = _url(postgres_url, db=plain_database)
    result = run_pytest(
        pytester, "-p", "no:cacheprovider", "--neon-backend=local",
        f"--neon-local-postgres-url={given}",
    )  # fmt: skip
    result.assert_outcomes(passed=3)
    result.stdout.no_fnmatch_line("*write checks see the whole server*")
    result.stdout.fnmatch_lines(["*resets: 1 done / 2 skipped*"])  # only after the write
    with psycopg.connect(given, autocommit=True) as conn:  # the user's database untouched
        found = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_walinspect'")
        assert found.fetchone() is None
    assert _checks_databases(postgres_url) == set()  # gone with the run


def test_a_role_that_may_not_says_what_it_costs_and_how_to_fix_it(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    postgres_url: str,
    plain_database: str,
) -> None:
    clean_neon_env(monkeypatch)
    role, password = f"given_{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        conn.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(plain_database), sql.Identifier(role)
            )
        )
        # the branches' owner role, which a role that is no superuser must be able to act as
        conn.execute(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'neondb_owner')"
            " THEN CREATE ROLE neondb_owner LOGIN; END IF; END $$"
        )
        conn.execute(sql.SQL("GRANT neondb_owner TO {}").format(sql.Identifier(role)))
    try:
        pytester.makepyfile(test_checks=TESTS)
        given = _url(postgres_url, user=role, password=password, db=plain_database)
        result = run_pytest(
            pytester, "-p", "no:cacheprovider", "--neon-backend=local",
            f"--neon-local-postgres-url={given}",
        )  # fmt: skip
        result.assert_outcomes(passed=3)
        result.stdout.fnmatch_lines(
            [
                "*write checks see the whole server (pg_walinspect is not created and this "
                "role may not): a readwrite test is reset whenever anything on the server "
                "wrote meanwhile*CREATE EXTENSION pg_walinspect*"
            ]
        )
        assert password not in result.stdout.str()
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(plain_database)
                )
            )
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
