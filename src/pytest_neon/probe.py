"""Did a test write? Compare the WAL insert position before and after it.

On Neon every branch has its own WAL, so an unchanged position means nothing was written.
On a local PostgreSQL all databases share one WAL (other workers, the emulator's own
clones); there, when the position moved, ``pg_walinspect`` tells whether any WAL record
touched the branch's database. Writes to unlogged and temporary tables are not logged and
so not seen: use the ``neon_reset`` marker for tests that rely on them.
"""

from __future__ import annotations

import contextlib
import logging
import select
import time
from contextlib import suppress
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import pq

log = logging.getLogger("pytest_neon.probe")

_POSITION = "SELECT pg_current_wal_insert_lsn()::text"
# Records that change no data a test can see are left out: page pruning, vacuum, the
# visibility map and hint bits (reads alone cause them), and planner statistics. Autovacuum
# analyzes the shared catalogs (pg_database grows with every clone) from whichever
# database it visits, and stores what it finds in that database's pg_statistic (filenode
# 2619, index 2696) and, in place, its pg_class. A record that touches any other relation
# of the database counts; should those filenodes differ, the cost is a needless reset.
_IGNORED = """
  NOT (resource_manager = 'Heap2' AND record_type IN ('PRUNE', 'VACUUM', 'FREEZE_PAGE', 'VISIBLE',
       'PRUNE_ON_ACCESS', 'PRUNE_VACUUM_SCAN', 'PRUNE_VACUUM_CLEANUP'))
  AND NOT (resource_manager = 'Btree' AND record_type IN ('DELETE', 'VACUUM', 'REUSE_PAGE'))
  AND NOT (resource_manager = 'XLOG' AND record_type = 'FPI_FOR_HINT')
  AND NOT (resource_manager = 'Heap' AND record_type = 'INPLACE')
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
      AND (block_ref NOT LIKE '%/2619 %' AND block_ref NOT LIKE '%/2696 %'  -- the cheap test
           OR block_ref ~ (' rel [0-9]+/' || db || '/(?!(2619|2696) )'))
      AND """
    + _IGNORED
    + """), coalesce(max(end_lsn), before)
    INTO n, pos
    FROM pg_get_wal_records_info(before, pg_current_wal_flush_lsn());
  END IF;
END $$"""
)
_CHECK = b"CALL pg_temp.pytest_neon_check($1::pg_lsn, $2, NULL, NULL)"  # sent, not waited for
_POSITION_SENT = _POSITION.encode()
_ANSWER_TIMEOUT = 60.0  # seconds a started check may take to answer


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
        self._started: tuple[str | None, float] | None = None  # (before, when) of a check

    @property
    def position_survives_reset(self) -> bool:
        """Whether a position read before a reset still serves as the start of the next check.

        True with an inspector: it looks only at the branch database's records, and a reset
        writes none. On Neon a reset moves the branch to a new timeline.
        """
        return self._database is not None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._started is not None:  # a started check nobody asked about: drop it
            self.finish_check()
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = _connect(self._dsn, inspector=self._database is not None)
            if self._database is not None:
                self._conn.execute(_PROCEDURE)
        return self._conn

    def position(self) -> str | None:
        """The current WAL insert position, or ``None`` when it cannot be read (after one
        more try on a new connection)."""
        for _attempt in range(2):
            try:
                row = self._connection().execute(_POSITION).fetchone()
            except psycopg.Error as exc:
                log.debug("write probe: %s: %s", type(exc).__name__, exc)
                self.close()
                continue
            return None if row is None else str(row[0])
        return None

    @property
    def check_started_at(self) -> float | None:
        """When (monotonic) the check whose answer is not read yet was started, if any."""
        return None if self._started is None else self._started[1]

    def start_check(self, before: str | None) -> None:
        """Ask, without waiting for the answer, whether the branch may have been written
        since position ``before``.

        The server works on it while the caller goes on; :meth:`finish_check` reads the
        answer. Until then the probe must not be used otherwise.
        """
        if self._started is not None:
            self.finish_check()
        started_at = time.monotonic()
        if before is not None:
            self._send(before)  # if it did not go, finish_check sends it again
        self._started = (before, started_at)

    def finish_check(self) -> tuple[bool, str | None]:
        """The answer of the check :meth:`start_check` started: whether the branch may have
        been written, and the position the next check can start from.

        Unknown (``None``) positions, and answers that cannot be had (after one more try
        on a new connection), count as written.
        """
        started, self._started = self._started, None
        if started is None:
            return True, None
        before = started[0]
        if before is None:
            return True, None
        for _attempt in range(2):
            if self._conn is None and not self._send(before):
                continue
            try:
                assert self._conn is not None
                row = _answer(self._conn.pgconn)
            except (psycopg.Error, OSError) as exc:
                log.debug("write probe: %s: %s", type(exc).__name__, exc)
                self.close()
                continue
            after = None if row[0] is None else row[0].decode()
            if self._database is None:
                return after is None or after != before, after
            return row[1] is None or int(row[1]) > 0, after
        return True, None

    def _send(self, before: str) -> bool:
        """Send the check of ``before`` on the probe's connection; whether it went."""
        try:
            pgconn = self._connection().pgconn
            if self._database is None:
                pgconn.send_query_params(_POSITION_SENT, None)
            else:
                pgconn.send_query_params(_CHECK, [before.encode(), self._database.encode()])
            deadline = time.monotonic() + _ANSWER_TIMEOUT
            while pgconn.flush():  # a non-blocking connection: the rest of the query
                if time.monotonic() > deadline:
                    raise psycopg.OperationalError("could not send the write check")
                select.select([], [pgconn.socket], [], 1.0)
        except (psycopg.Error, OSError) as exc:
            log.debug("write probe: could not send a check: %s", exc)
            self.close()
            return False
        return True

    def close(self) -> None:
        """Close the probe's connection (it reopens on the next read)."""
        self._started = None
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(psycopg.Error):
                conn.close()


def _answer(pgconn: pq.abc.PGconn) -> list[bytes | None]:
    """The first row of the answer to the query sent on ``pgconn``, waiting for it."""
    deadline = time.monotonic() + _ANSWER_TIMEOUT
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise psycopg.OperationalError("no answer to the write check")
        select.select([pgconn.socket], [], [], remaining)
    row: list[bytes | None] | None = None
    error = ""
    while (result := pgconn.get_result()) is not None:
        if result.status == pq.ExecStatus.TUPLES_OK and result.ntuples:
            row = [result.get_value(0, i) for i in range(result.nfields)]
        elif result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            error = (result.error_message or b"").decode(errors="replace").strip()
    if error or row is None:
        raise psycopg.OperationalError(error or "no answer to the write check")
    return row


def wal_inspector_available(
    superuser_url: str, *, install: bool, conn: psycopg.Connection[Any] | None = None
) -> bool:
    """Whether ``pg_walinspect`` can be used on this server (installing it if allowed);
    through ``conn`` (an autocommit superuser connection to it) when given."""
    try:
        with contextlib.nullcontext(conn) if conn is not None else _connect(superuser_url) as c:
            if install:
                c.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
            row = c.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_walinspect'")
            return row.fetchone() is not None
    except psycopg.Error as exc:
        log.debug("pg_walinspect not available: %s", exc)
        return False
