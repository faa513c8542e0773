"""Did a test write? Compare the WAL insert position before and after it.

On Neon every branch has its own WAL, so an unchanged position means nothing was written.
On a local PostgreSQL all databases share one WAL (other workers, the emulator's own
clones); there, when the position moved, ``pg_walinspect`` tells whether any WAL record
touched the branch's database. Writes to unlogged and temporary tables are not logged and
so not seen: use the ``neon_reset`` marker for tests that rely on them.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg

log = logging.getLogger("pytest_neon.probe")

_POSITION = "SELECT pg_current_wal_insert_lsn()::text"
# Records that change no data a test can see (page pruning, vacuum, visibility map, hint
# bits) are left out: reads alone cause them.
_TOUCHED = """
SELECT count(*) FROM pg_get_wal_records_info(%(before)s::pg_lsn, pg_current_wal_flush_lsn())
WHERE block_ref ~ (' rel [0-9]+/'
                   || (SELECT oid FROM pg_database WHERE datname = %(database)s) || '/')
  AND NOT (resource_manager = 'Heap2'
           AND record_type IN ('PRUNE', 'VACUUM', 'FREEZE_PAGE', 'VISIBLE'))
  AND NOT (resource_manager = 'Btree' AND record_type IN ('DELETE', 'VACUUM', 'REUSE_PAGE'))
  AND NOT (resource_manager = 'XLOG' AND record_type = 'FPI_FOR_HINT')
"""
# A transactional message gives the statement an xid and WAL of its own, so its commit
# flushes the WAL up to here (the probe's session commits synchronously): every record the
# test wrote is then readable.
_FLUSH = "SELECT pg_logical_emit_message(true, 'pytest-neon', '')"


def _connect(dsn: str, *, synchronous: bool = False) -> psycopg.Connection[Any]:
    return psycopg.connect(
        dsn,
        autocommit=True,
        connect_timeout=30,
        application_name="pytest-neon-probe",
        options="-c synchronous_commit=on" if synchronous else None,
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

    def _run(self, query: str, params: Any = None) -> str | None:
        for _attempt in range(2):
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = _connect(self._dsn, synchronous=self._database is not None)
                row = self._conn.execute(query, params).fetchone()
                return None if row is None else str(row[0])
            except psycopg.Error as exc:
                log.debug("write probe: %s: %s", type(exc).__name__, exc)
                self.close()
        return None

    def position(self) -> str | None:
        """The current WAL insert position, or ``None`` when it cannot be read."""
        return self._run(_POSITION)

    def wrote_since(self, before: str | None) -> bool:
        """Whether the branch may have been written since position ``before``."""
        if before is None:
            return True
        after = self.position()
        if after is None or after != before:
            return after is None or self._touched(before)
        return False

    def _touched(self, before: str) -> bool:
        if self._database is None:
            return True
        flushed = self._run(_FLUSH)
        if flushed is None:
            return True
        count = self._run(_TOUCHED, {"before": before, "database": self._database})
        return count is None or int(count) > 0

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
