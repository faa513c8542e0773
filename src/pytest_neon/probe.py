"""Did a test write? Compare the branch's WAL insert position before and after it."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import psycopg

log = logging.getLogger("pytest_neon.probe")

_QUERY = "SELECT pg_current_wal_insert_lsn()::text"


class WriteProbe:
    """A connection the plugin owns to a branch, used only to read the WAL position.

    Every logged change (rows, DDL, sequences) moves the position. Writes to unlogged and
    temporary tables do not. A reset drops the connection; the probe reconnects.
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None

    def position(self) -> str | None:
        """The current WAL insert position, or ``None`` when it cannot be read."""
        for _attempt in range(2):
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = psycopg.connect(
                        self._dsn,
                        autocommit=True,
                        connect_timeout=30,
                        application_name="pytest-neon-probe",
                    )
                row = self._conn.execute(_QUERY).fetchone()
                return str(row[0]) if row else None
            except psycopg.Error as exc:
                log.debug("write probe: %s", type(exc).__name__)
                self.close()
        return None

    def close(self) -> None:
        """Close the probe's connection (it reopens on the next read)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()
