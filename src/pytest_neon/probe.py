"""Did a test write? Compare the WAL insert position before and after it.

On Neon every branch has its own WAL, so an unchanged position means nothing was written.
On a local PostgreSQL all databases share one WAL (other workers, the emulator's own
clones); there, when the position moved, ``pg_walinspect`` tells whether any WAL record
touched the branch's database. Writes to unlogged and temporary tables are not logged and
so not seen: use the ``neon_reset`` marker for tests that rely on them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import psycopg

log = logging.getLogger("pytest_neon.probe")

T = TypeVar("T")

_POSITION = "SELECT pg_current_wal_insert_lsn()::text"
# Records that change no data a test can see (page pruning, vacuum, visibility map, hint
# bits) are left out: reads alone cause them.
_IGNORED = """
  NOT (resource_manager = 'Heap2' AND record_type IN ('PRUNE', 'VACUUM', 'FREEZE_PAGE', 'VISIBLE',
       'PRUNE_ON_ACCESS', 'PRUNE_VACUUM_SCAN', 'PRUNE_VACUUM_CLEANUP'))
  AND NOT (resource_manager = 'Btree' AND record_type IN ('DELETE', 'VACUUM', 'REUSE_PAGE'))
  AND NOT (resource_manager = 'XLOG' AND record_type = 'FPI_FOR_HINT')
"""
# One round trip. Only WAL that has been flushed can be read, and the test's commits may
# have been asynchronous: a transactional message, committed synchronously (the probe's
# session has synchronous_commit=on), flushes everything written before it. A procedure
# (temporary: it goes with the probe's session) may commit; its plans are cached, so a
# check costs a fraction of a millisecond. It answers where its inspection ended (every
# record before that position was looked at) and how many records touched the database.
_PROCEDURE = (
    """
CREATE PROCEDURE pg_temp.pytest_neon_check(
  before pg_lsn, database name, INOUT pos pg_lsn, INOUT n bigint)
LANGUAGE plpgsql AS $$
DECLARE db oid := (SELECT oid FROM pg_database WHERE datname = database);
BEGIN
  pos := pg_current_wal_insert_lsn();
  n := 0;
  IF db IS NULL THEN
    n := 1;  -- no such database right now (mid-swap): assume written
  ELSIF pos <> before THEN
    PERFORM pg_logical_emit_message(true, 'pytest-neon', '');
    COMMIT;
    -- Records that end by the flush position are read; the next check starts where the
    -- last of them ends (never mid-record: one crossing the flush position is read then).
    SELECT count(*) FILTER (WHERE block_ref ~ (' rel [0-9]+/' || db || '/')
      AND """
    + _IGNORED
    + """), coalesce(max(end_lsn), before)
    INTO n, pos
    FROM pg_get_wal_records_info(before, pg_current_wal_flush_lsn());
  END IF;
END $$"""
)
_CHECK = "CALL pg_temp.pytest_neon_check(%s::pg_lsn, %s, NULL, NULL)"


def _connect(dsn: str, *, inspector: bool = False) -> psycopg.Connection[Any]:
    return psycopg.connect(
        dsn,
        autocommit=True,
        connect_timeout=30,
        application_name="pytest-neon-probe",
        options="-c synchronous_commit=on" if inspector else None,
    )


class WriteProbe:
    """Reads a branch's WAL position on a connection the plugin owns.

    ``inspector_url`` (a superuser DSN of a local server with ``pg_walinspect``) narrows
    a moved position down to the branch's own database.
    """

    def __init__(self, dsn: str, inspector_url: str | None = None) -> None:
        self._dsn = inspector_url or dsn
        self._database = unquote(urlsplit(dsn).path.lstrip("/")) if inspector_url else None
        self._conn: psycopg.Connection[Any] | None = None

    @property
    def position_survives_reset(self) -> bool:
        """Whether a position read before a reset still serves as the start of the next check.

        True with an inspector: it looks only at the branch database's records, and a reset
        writes none. On Neon a reset moves the branch to a new timeline.
        """
        return self._database is not None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = _connect(self._dsn, inspector=self._database is not None)
            if self._database is not None:
                self._conn.execute(_PROCEDURE)
        return self._conn

    def _attempt(self, work: Callable[[psycopg.Connection[Any]], T]) -> T | None:
        """``work`` on the probe's connection, reconnecting once; ``None`` if it fails."""
        for _attempt in range(2):
            try:
                return work(self._connection())
            except psycopg.Error as exc:
                log.debug("write probe: %s: %s", type(exc).__name__, exc)
                self.close()
        return None

    def _run(self, query: str) -> str | None:
        row = self._attempt(lambda conn: conn.execute(query).fetchone())
        return None if row is None else str(row[0])

    def position(self) -> str | None:
        """The current WAL insert position, or ``None`` when it cannot be read."""
        return self._run(_POSITION)

    def check(self, before: str | None) -> tuple[bool, str | None]:
        """Whether the branch may have been written since ``before``, and the position now.

        Unknown (``None``) positions count as written.
        """
        if before is None:
            return True, self.position()
        if self._database is None:
            after = self.position()
            return after is None or after != before, after
        database = self._database
        row = self._attempt(
            lambda conn: conn.execute(_CHECK, (before, database), prepare=True).fetchone()
        )
        if row is None:
            return True, None
        return int(row[1]) > 0, str(row[0])

    def close(self) -> None:
        """Close the probe's connection (it reopens on the next read)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(psycopg.Error):
                conn.close()


def wal_inspector_available(superuser_url: str, *, install: bool) -> bool:
    """Whether ``pg_walinspect`` can be used on this server (installing it if allowed)."""
    try:
        with _connect(superuser_url) as conn:
            if install:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
            row = conn.execute(
                "SELECT 1 FROM pg_extension WHERE extname = 'pg_walinspect'"
            ).fetchone()
            return row is not None
    except psycopg.Error as exc:
        log.debug("pg_walinspect not available: %s", exc)
        return False
