"""Write checks on a server given by URL: ``pg_walinspect`` in a database of the run's own.

``pg_walinspect`` (PostgreSQL 15+) tells which database a WAL record touched; without it
any WAL written on the server counts as a write, and every readwrite test is reset. It
ships with PostgreSQL but is not created: where the given role may (a superuser), the run
creates it in a database of its own, marked as the project's so that it goes with the
project (also after a ``kill -9``), and leaves the user's databases alone.
"""

from __future__ import annotations

import logging
import secrets
from typing import NamedTuple
from urllib.parse import quote, urlsplit, urlunsplit

from pytest_neon.probe import wal_inspector_available

log = logging.getLogger("pytest_neon.local")

HOW_TO_FIX = (
    "run CREATE EXTENSION pg_walinspect as a superuser in the URL's database, or give "
    "--neon-local-postgres-url a superuser"
)


class WriteChecks(NamedTuple):
    """Where write checks ask ``pg_walinspect`` (``url``), or why they cannot (``why``)."""

    url: str | None
    why: str = ""

    @property
    def note(self) -> str:
        """A header note when the checks cannot tell this run's writes apart."""
        if self.url is not None:
            return ""
        return (
            f"write checks see the whole server ({self.why}): a readwrite test is reset "
            f"whenever anything on the server wrote meanwhile, a database clone each; "
            f"{HOW_TO_FIX}"
        )


def given_server_checks(url: str, comment: str) -> WriteChecks:
    """Write checks on the server at ``url``: its own ``pg_walinspect`` if created, else
    one in a new database commented ``comment`` (the project's), else none."""
    import psycopg
    from psycopg import sql

    if wal_inspector_available(url, install=False):
        return WriteChecks(url)
    name = f"pytest_neon_checks_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),"
                " EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_walinspect')"
            ).fetchone()
            superuser, available = (bool(row[0]), bool(row[1])) if row else (False, False)
            if not available:
                return WriteChecks(None, "this server has no pg_walinspect (PostgreSQL 15+)")
            if not superuser:
                return WriteChecks(None, "pg_walinspect is not created and this role may not")
            ident = sql.Identifier(name)
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
            conn.execute(
                sql.SQL("COMMENT ON DATABASE {} IS {}").format(ident, sql.Literal(comment))
            )
        checks = _with_database(url, name)
        with psycopg.connect(checks, autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE EXTENSION pg_walinspect")
    except psycopg.Error as exc:
        log.debug("no pg_walinspect database: %s", exc)
        return WriteChecks(None, f"could not create pg_walinspect: {type(exc).__name__}")
    return WriteChecks(checks)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(name, safe="")))
