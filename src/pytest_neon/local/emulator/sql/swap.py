"""Swapping a fresh copy in place of a branch's database, and telling whether the database
it was copied from has changed since (its activity snapshot).

A restore makes a copy of the source under a temporary name, then renames it into the
branch's real name: the branch keeps its DSN. A spare copy made earlier is swapped in only
while its source is still unchanged and unused.
"""

from __future__ import annotations

import time
import weakref

from psycopg import errors, sql

from pytest_neon.local.emulator.sql.server import Connection, SqlServer

# Sessions connected to the database whose oid is {} (cheaper than pg_stat_activity).
_SESSIONS_ON_OID = "SELECT count(*) FROM pg_stat_get_activity(NULL) a WHERE a.datid = {}"


def _activity_of(server_version: int, oid: str) -> list[str]:
    """SQL expressions: sessions on the database with oid ``oid`` now, then its identity
    and the activity counters that move whenever it is used."""
    # The statistics functions of one database, not the views over all of them: with many
    # copies on the server, the views cost a millisecond or more.
    sessions = f"pg_stat_get_db_sessions({oid})" if server_version >= 140000 else "0"
    counters = [
        oid,
        sessions,
        f"pg_stat_get_db_xact_commit({oid})",
        f"pg_stat_get_db_xact_rollback({oid})",
        f"pg_stat_get_db_tuples_inserted({oid})",
        f"pg_stat_get_db_tuples_updated({oid})",
        f"pg_stat_get_db_tuples_deleted({oid})",
    ]
    now = f"({_SESSIONS_ON_OID.format(oid)})"
    return [now, *(f"coalesce({c}, 0)::bigint" for c in counters)]


def _snapshot_query_for(server_version: int) -> str:
    """One row: sessions on database {} now, then its identity and activity counters."""
    columns = ", ".join(
        f"{expr} AS c{i}" for i, expr in enumerate(_activity_of(server_version, "d.oid"))
    )
    return f"SELECT {columns} FROM pg_database d WHERE d.datname = {{}}"


_EXIT_POLLS = 40  # times 0.5 ms: how long the quick swap waits for exiting sessions


def _swap_procedure_for(server_version: int) -> str:
    """A temporary procedure (one per session, its plans cached) doing a quick swap:
    raises object_not_in_prerequisite_state if the source's activity is no longer
    ``expect``, object_in_use if a session stays on the target for 20 ms (the caller then
    cuts it), else renames in one go."""
    activity = ", ".join(_activity_of(server_version, "src"))
    return f"""
CREATE PROCEDURE pg_temp.pytest_neon_swap(
  target name, replacement name, trash name, source name, expect bigint[])
LANGUAGE plpgsql AS $$
DECLARE src oid := (SELECT oid FROM pg_database WHERE datname = source);
  tgt oid := (SELECT oid FROM pg_database WHERE datname = target);
BEGIN
  IF expect IS NOT NULL THEN
    IF src IS NULL OR ARRAY[{activity}]::bigint[] IS DISTINCT FROM expect THEN
      RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
  END IF;
  -- A session the test just closed may still be exiting: give it a few milliseconds.
  FOR i IN 1..{_EXIT_POLLS} LOOP
    EXIT WHEN ({_SESSIONS_ON_OID.format("tgt")}) = 0;
    IF i = {_EXIT_POLLS} THEN
      RAISE EXCEPTION USING ERRCODE = 'object_in_use';  -- open sessions: cut them
    END IF;
    PERFORM pg_sleep(0.0005);
    PERFORM pg_stat_clear_snapshot();  -- read the sessions afresh
  END LOOP;
  EXECUTE format('ALTER DATABASE %I RENAME TO %I', target, trash);
  EXECUTE format('ALTER DATABASE %I ALLOW_CONNECTIONS false', trash);
  EXECUTE format('ALTER DATABASE %I RENAME TO %I', replacement, target);
END $$"""


_SWAP = "CALL pg_temp.pytest_neon_swap(%s, %s, %s, %s, %s)"


class StaleCopyError(Exception):
    """A copy was not swapped in: the database it was copied from has changed since."""


class DatabaseSwapper:
    """Puts copies in place of databases; takes the activity snapshots that say whether a
    database has changed."""

    def __init__(self, server: SqlServer) -> None:
        self.server = server
        self._snapshot_query = _snapshot_query_for(server.server_version)
        self._swap_procedure = _swap_procedure_for(server.server_version)
        self._can_swap: weakref.WeakSet[Connection] = weakref.WeakSet()  # sessions that have it

    def activity_snapshot(self, name: str) -> tuple[int, ...] | None:
        """The identity of database ``name`` and counters that move whenever it is used.

        ``None`` while a session is connected to it (its counters are not final yet).
        """
        query = sql.SQL(self._snapshot_query).format(sql.Placeholder())
        with self.server.connection() as conn:
            row = conn.execute(query, (name,), prepare=True).fetchone()
        if row is None or row[0]:
            return None
        row = row[1:]
        return tuple(int(v or 0) for v in row) if row else None

    def swap_in(
        self, target: str, replacement: str, *, expect: tuple[str, tuple[int, ...]] | None = None
    ) -> str:
        """Put ``replacement`` in place of ``target``; return the old copy's new name.

        Sessions on ``target`` are cut first (new ones are refused meanwhile); the old copy
        is left for the caller to drop, off the critical path. ``expect`` (a database and
        its :meth:`activity_snapshot`): swap only if that database is still unchanged and
        unused, else raise :class:`StaleCopyError` (``replacement`` was copied from it).
        """
        trash = "nbtrash_" + replacement.removeprefix("nb_")
        with self.server.connection() as conn:
            try:
                self._quick_swap(conn, target, replacement, trash, expect)
                return trash
            except errors.ObjectNotInPrerequisiteState as exc:
                raise StaleCopyError(f"{expect[0] if expect else '?'} changed") from exc
            except errors.ObjectInUse:
                pass  # sessions are still on the target: cut them first
            if expect is not None and self.activity_snapshot(expect[0]) != expect[1]:
                raise StaleCopyError(f"{expect[0]} changed")
            self._swap_cutting_sessions(conn, target, replacement, trash)
        return trash

    def _quick_swap(
        self,
        conn: Connection,
        target: str,
        replacement: str,
        trash: str,
        expect: tuple[str, tuple[int, ...]] | None,
    ) -> None:
        """One round trip that swaps when no session stays on ``target`` (else ObjectInUse)
        and ``expect`` still holds (else ObjectNotInPrerequisiteState)."""
        if conn not in self._can_swap:
            conn.execute(self._swap_procedure)
            self._can_swap.add(conn)
        source, activity = expect if expect is not None else (None, None)
        values = [0, *activity] if activity is not None else None
        conn.execute(_SWAP, (target, replacement, trash, source, values), prepare=True)

    @staticmethod
    def _swap_cutting_sessions(conn: Connection, target: str, replacement: str, trash: str) -> None:
        """The slow swap: refuse new sessions on ``target``, cut the ones there, rename."""
        ident = sql.Identifier(target)
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(ident))
        # PostgreSQL's own waits (pg_terminate_backend's timeout, RENAME's wait for other
        # sessions) sleep in 100 ms steps: signal the sessions, then poll every 1 ms.
        deadline = time.monotonic() + 5
        while True:
            row = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (target,),
            ).fetchone()
            if not row or not row[0] or time.monotonic() > deadline:
                break
            time.sleep(0.001)
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident, sql.Identifier(trash)))
        try:
            conn.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(replacement), ident)
            )
        except BaseException:
            conn.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(trash), ident)
            )
            conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident))
            raise
