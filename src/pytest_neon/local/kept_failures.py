"""A failing test's data kept on a local server that outlives the run (``--neon-keep-failed``).

The run's own databases are its emulated project's, dropped at its end; a failing test's
state is kept instead as a plain database ``pytest_neon_failed_<test>_<run id>``, a copy of
the test's, owned by the server's (super)user, on disk, with its expiry in its comment. The
kept server's watchdog, and the next run on the server, drop it once expired.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from pytest_neon.clock import utcnow

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("pytest_neon.local")

PREFIX = "pytest_neon_failed_"
_COMMENT = "pytest-neon kept failed test; expires "
_CLONE_WAIT = 30.0
_EVICT = 1.0  # sessions left on the test's database (as the emulator's clones do)


def keep_database(url: str, source: str, name: str, expires_at: datetime) -> None:
    """Copy database ``source`` to ``name`` on the server at ``url`` (a superuser DSN),
    to be dropped after ``expires_at``."""
    from pytest_neon.local.emulator.sql.real_databases import RealDatabases
    from pytest_neon.local.emulator.sql.server import SqlServer

    databases = RealDatabases(SqlServer(url, pool_size=1, tablespace="pg_default"))
    try:
        with databases.server.connection() as conn:
            row = conn.execute("SELECT current_user").fetchone()
        owner = str(row[0]) if row else "postgres"
        databases.drop(name)  # (the same test failing again in this run)
        comment = _COMMENT + expires_at.astimezone(UTC).isoformat()
        databases.clone(source, name, owner, comment, _CLONE_WAIT, evict_after=_EVICT)
    finally:
        databases.server.close()


def drop_expired(
    url: str, now: datetime | None = None, conn: psycopg.Connection[Any] | None = None
) -> list[str]:
    """Drop the kept databases on the server at ``url`` whose expiry passed; their names.
    ``conn``: an autocommit superuser connection to it, to use instead of a new one."""
    import psycopg
    from psycopg import sql

    from pytest_neon.local.server_link import connected

    now = now or utcnow()
    dropped: list[str] = []
    with connected(url, conn) as c:
        rows = c.execute(
            "SELECT datname, pg_catalog.shobj_description(oid, 'pg_database') FROM pg_database"
            " WHERE starts_with(datname, %s)",
            (PREFIX,),
        ).fetchall()
        for name, comment in rows:
            expires = _expiry(comment)
            if expires is None or expires > now:
                continue
            try:
                c.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
            except psycopg.Error as exc:
                log.debug("kept database %s not dropped: %s", name, exc)
                continue
            log.info("dropped expired kept database %s", name)
            dropped.append(name)
    return dropped


def drop_expired_quietly(url: str, conn: psycopg.Connection[Any] | None = None) -> None:
    """:func:`drop_expired`, for housekeeping: a failure is logged, never raised."""
    try:
        drop_expired(url, conn=conn)
    except Exception as exc:
        log.debug("could not drop expired kept databases: %s", exc)


def _expiry(comment: str | None) -> datetime | None:
    if not comment or not comment.startswith(_COMMENT):
        return None
    try:
        return datetime.fromisoformat(comment[len(_COMMENT) :].strip())
    except ValueError:
        return None


def dsn_without_password(url: str, database: str) -> str:
    """``url`` pointing at ``database``, with no password in it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    user = f"{quote(parts.username or '', safe='')}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    query = "&".join(
        p for p in parts.query.split("&") if p and not p.lower().startswith("password=")
    )
    return urlunsplit(
        (parts.scheme, f"{user}{host}{port}", "/" + quote(database, safe=""), query, "")
    )
