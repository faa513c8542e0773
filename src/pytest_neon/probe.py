"""Did a test write? Compare the WAL insert position before and after it.

On Neon every branch has its own WAL, so an unchanged position means nothing was written.
On a local PostgreSQL all databases share one WAL (other workers, the emulator's own
clones); there, when the position moved, ``pg_walinspect`` tells whether any WAL record
touched the branch's database. Writes to unlogged and temporary tables are not logged and
so not seen: use the ``neon_reset`` marker for tests that rely on them.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import pq

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
# The same, sent without waiting for the answer (libpq placeholders).
_CHECK_SENT = b"CALL pg_temp.pytest_neon_check($1::pg_lsn, $2, NULL, NULL)"
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
        self._started: tuple[str | None, bool] | None = None  # (before, sent) of a check

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

    def start_check(self, before: str | None) -> None:
        """Send the :meth:`check` of ``before`` without waiting for its answer.

        The server works on it while the caller goes on; :meth:`finish_check` reads the
        answer. Until then the probe must not be used otherwise.
        """
        if self._started is not None:
            self.finish_check()
        sent = False
        if before is not None:
            try:
                pgconn = self._connection().pgconn
                if self._database is None:
                    pgconn.send_query_params(_POSITION_SENT, None)
                else:
                    pgconn.send_query_params(
                        _CHECK_SENT, [before.encode(), self._database.encode()]
                    )
                deadline = time.monotonic() + _ANSWER_TIMEOUT
                while pgconn.flush():  # a non-blocking connection: the rest of the query
                    if time.monotonic() > deadline:
                        raise psycopg.OperationalError("could not send the write check")
                    select.select([], [pgconn.socket], [], 1.0)
                sent = True
            except (psycopg.Error, OSError) as exc:
                log.debug("write probe: could not start a check: %s", exc)
                self.close()
        self._started = (before, sent)

    def finish_check(self) -> tuple[bool, str | None]:
        """The answer of the check :meth:`start_check` sent (as :meth:`check` answers).

        If it cannot be read, the check is made again, waiting for it.
        """
        started, self._started = self._started, None
        if started is None:
            return True, None
        before, sent = started
        if sent and self._conn is not None:
            try:
                row = _answer(self._conn.pgconn)
            except (psycopg.Error, OSError) as exc:
                log.debug("write probe: %s: %s", type(exc).__name__, exc)
                self.close()
            else:
                if self._database is None:
                    after = None if row[0] is None else row[0].decode()
                    return after is None or after != before, after
                if row[0] is not None and row[1] is not None:
                    return int(row[1]) > 0, row[0].decode()
        return self.check(before)

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
