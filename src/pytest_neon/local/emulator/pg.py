"""Superuser access to the real PostgreSQL server: a small pool and the database DDL.

A branch's data lives in real databases, cloned with ``CREATE DATABASE ... TEMPLATE``.
``CREATE DATABASE`` cannot run in a transaction block, so every connection is autocommit.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from pytest_neon.redact import register_secret

log = logging.getLogger("pytest_neon.emulator")

Connection = psycopg.Connection[tuple[Any, ...]]
APPLICATION_NAME = "pytest-neon-emulator"
# Sessions that make CREATE DATABASE ... TEMPLATE refuse (it cancels autovacuum itself).
_SESSIONS_ON = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
    " AND pid <> pg_backend_pid() AND backend_type IS DISTINCT FROM 'autovacuum worker'"
)


# Sessions connected to the database whose oid is {} (cheaper than pg_stat_activity).
_SESSIONS_ON_OID = "SELECT count(*) FROM pg_stat_get_activity(NULL) a WHERE a.datid = {}"


class StaleCopyError(Exception):
    """A copy was not swapped in: the database it was copied from has changed since."""


class TemplateBusyError(Exception):
    """The template database of a clone stayed in use by other sessions."""

    def __init__(self, template: str) -> None:
        super().__init__(f"source database {template} is being accessed by other users")


def build_dsn(
    host: str, port: int, sslmode: str | None, role: str, password: str, dbname: str
) -> str:
    """``postgresql://role:password@host:port/dbname`` (URL-encoded; ``?sslmode`` if given).

    A Unix-socket directory as ``host`` goes into the query string, an IPv6 address in
    brackets.
    """
    query: dict[str, str] = {}
    if host.startswith("/"):
        query["host"], host = host, ""
    elif ":" in host:
        host = f"[{host}]"
    if sslmode:
        query["sslmode"] = sslmode
    uri = (
        f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}"
        f"@{host}:{port}/{quote(dbname, safe='')}"
    )
    return f"{uri}?{urlencode(query)}" if query else uri


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


# Rights of a Neon branch's owner role (on Neon it is a member of neon_superuser).
_OWNER_RIGHTS = sql.SQL(" CREATEDB CREATEROLE")
# A database that carries no emulator comment (made by a client, not the emulator).
_UNMANAGED = (
    "coalesce(pg_catalog.shobj_description(oid, 'pg_database'), '')"
    " NOT LIKE 'pytest-neon-emulator %%'"
)


class PgServer:
    """The PostgreSQL server behind the emulator, reached with a superuser DSN."""

    def __init__(self, url: str, pool_size: int = 8) -> None:
        self.url = url
        params = conninfo_to_dict(url)
        host = str(params.get("host") or "").split(",")[0]
        port = str(params.get("port") or "").split(",")[0]
        self.host: str = host
        self.port: int = int(port) if port else 5432
        self.sslmode: str | None = str(params["sslmode"]) if params.get("sslmode") else None
        register_secret(str(params.get("password") or ""))
        self._idle: list[Connection] = []
        self._slots = threading.BoundedSemaphore(pool_size)
        self._lock = threading.Lock()
        self._closed = False
        with self.connection() as conn:
            self.server_version: int = conn.info.server_version
        self._snapshot_query = _snapshot_query_for(self.server_version)
        self._swap_procedure = _swap_procedure_for(self.server_version)
        self._can_swap: weakref.WeakSet[Connection] = weakref.WeakSet()  # sessions that have it

    @property
    def endpoint_host(self) -> str:
        """The host name clients use (what the endpoint objects report)."""
        return self.host or "localhost"

    def connect(self) -> Connection:
        """A new autocommit superuser connection (the caller closes it)."""
        conn = psycopg.connect(
            self.url, autocommit=True, application_name=APPLICATION_NAME, connect_timeout=10
        )
        conn.execute("SET TimeZone TO 'UTC'")  # timestamps come back in UTC
        return conn

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """Borrow an autocommit connection from the pool."""
        self._slots.acquire()
        conn: Connection | None = None
        try:
            with self._lock:
                while self._idle and conn is None:
                    candidate = self._idle.pop()
                    conn = None if candidate.closed else candidate
            if conn is None:
                conn = self.connect()
            yield conn
        finally:
            if conn is not None:
                reusable = (
                    not conn.closed
                    and not conn.broken
                    and conn.info.transaction_status == TransactionStatus.IDLE
                )
                with self._lock:
                    if reusable and not self._closed:
                        self._idle.append(conn)
                        conn = None
                if conn is not None:
                    conn.close()
            self._slots.release()

    def close(self) -> None:
        """Close the pooled connections; borrowed ones are closed when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def dsn(self, role: str, password: str, dbname: str) -> str:
        """A ``postgresql://`` URI for ``role`` to the real database ``dbname``."""
        return build_dsn(self.host, self.port, self.sslmode, role, password, dbname)

    # --- roles -------------------------------------------------------------------------

    def ensure_role(self, name: str, password: str) -> bool:
        """Give the LOGIN role ``name`` the ``password``; ``True`` if the role was created.

        Like a Neon branch's owner, the role may create databases and roles (pytest-django
        makes its test databases with them); where the server's own role may not grant
        that, the role goes without.
        """
        ident, secret = sql.Identifier(name), sql.Literal(password)
        with self.connection() as conn:
            found = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
            exists = found.fetchone() is not None
            for rights in (_OWNER_RIGHTS, sql.SQL("")):
                try:
                    if not exists:
                        conn.execute(
                            sql.SQL("CREATE ROLE {} WITH LOGIN{} PASSWORD {}").format(
                                ident, rights, secret
                            )
                        )
                        return True
                    conn.execute(
                        sql.SQL("ALTER ROLE {} WITH LOGIN{} PASSWORD {}").format(
                            ident, rights, secret
                        )
                    )
                    return False
                except errors.DuplicateObject:
                    exists = True  # created concurrently: ALTER it
                    continue
                except errors.InsufficientPrivilege:
                    log.debug("role %s: this server's role may not grant CREATEDB CREATEROLE", name)
            raise RuntimeError(f"could not create or update role {name}")  # pragma: no cover

    def roles_created_by(self, name: str) -> list[str]:
        """Roles that role ``name`` created (PostgreSQL 16+ records them; earlier: none)."""
        if self.server_version < 160000:
            return []
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT r.rolname FROM pg_auth_members m"
                " JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles c ON c.oid = m.member"
                " WHERE c.rolname = %s AND m.admin_option AND m.grantor = 10",
                (name,),
            ).fetchall()
        return [row[0] for row in rows]

    def drop_role(self, name: str) -> bool:
        """Drop role ``name``; keep it (``False``) while it still owns objects."""
        with self.connection() as conn:
            try:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
            except errors.DependentObjectsStillExist:
                log.debug("role %s still owns objects; kept", name)
                return False
        return True

    # --- databases -----------------------------------------------------------------------

    def create_database(self, name: str, owner: str, comment: str) -> None:
        """Create an empty database ``name`` owned by ``owner``."""
        stmt = sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(owner)
        )
        with self.connection() as conn:
            conn.execute(stmt)
        self._comment(name, comment)

    def clone_database(
        self,
        template: str,
        name: str,
        owner: str,
        comment: str,
        wait: float,
        *,
        evict_after: float | None = None,
    ) -> None:
        """Create ``name`` as a copy of ``template``; retry for ``wait`` s while it is in use.

        PostgreSQL cannot copy a database that has sessions (Neon can). With
        ``evict_after``, sessions still on the template after that many seconds are
        terminated so that the copy can proceed.
        """
        stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(template), sql.Identifier(owner)
        )
        if self.server_version >= 150000:
            stmt += sql.SQL(" STRATEGY FILE_COPY")
        started = time.monotonic()
        deadline = started + wait
        pause = 0.02
        while True:
            # PostgreSQL itself waits 5 s before it refuses a template in use: look first.
            with self.connection() as conn:
                in_use = conn.execute(_SESSIONS_ON, (template,)).fetchone()
                overdue = evict_after is not None and time.monotonic() - started >= evict_after
                if in_use and in_use[0] and overdue:
                    log.warning(
                        "terminating %d session(s) on %s so that it can be copied",
                        in_use[0],
                        template,
                    )
                    self._terminate(conn, template)
                    evict_after = None
                if not (in_use and in_use[0]):
                    try:
                        conn.execute(stmt)
                        break
                    except errors.ObjectInUse:
                        pass
            if time.monotonic() + pause > deadline:
                raise TemplateBusyError(template)
            time.sleep(pause)
            pause = min(pause * 2, 0.25)
        self._comment(name, comment)

    def _comment(self, name: str, comment: str) -> None:
        try:
            with self.connection() as conn:
                conn.execute(
                    sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                        sql.Identifier(name), sql.Literal(comment)
                    )
                )
        except BaseException:
            self.drop_database(name)
            raise

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, terminating the sessions connected to it."""
        ident = sql.Identifier(name)
        if self.server_version >= 130000:
            with self.connection() as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            return
        for attempt in range(50):  # PostgreSQL 12 and older: terminate, then drop
            try:
                with self.connection() as conn:
                    self._terminate(conn, name)
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident))
                return
            except errors.ObjectInUse:
                if attempt == 49:
                    raise
                time.sleep(0.05)

    def rename_database(self, old: str, new: str) -> None:
        """Rename database ``old`` (which nobody uses) to ``new``."""
        with self.connection() as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(old), sql.Identifier(new)
                )
            )

    def activity_snapshot(self, name: str) -> tuple[int, ...] | None:
        """The identity of database ``name`` and counters that move whenever it is used.

        ``None`` while a session is connected to it (its counters are not final yet).
        """
        query = sql.SQL(self._snapshot_query).format(sql.Placeholder())
        with self.connection() as conn:
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
        ident = sql.Identifier(target)
        with self.connection() as conn:
            try:
                self._quick_swap(conn, target, replacement, trash, expect)
                return trash
            except errors.ObjectNotInPrerequisiteState as exc:
                raise StaleCopyError(f"{expect[0] if expect else '?'} changed") from exc
            except errors.ObjectInUse:
                pass  # sessions are still on the target: cut them first
            if expect is not None and self.activity_snapshot(expect[0]) != expect[1]:
                raise StaleCopyError(f"{expect[0]} changed")
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
            conn.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident, sql.Identifier(trash))
            )
            try:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(replacement), ident
                    )
                )
            except BaseException:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(trash), ident)
                )
                conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident))
                raise
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
    def _terminate(conn: Connection, name: str) -> None:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )

    def existing_databases(self) -> set[str]:
        """Names of all databases on the server."""
        with self.connection() as conn:
            return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}

    def derived_databases(self, real: str) -> list[str]:
        """Databases others made from the name of ``real`` (``test_<real>``, ``test_<real>_gw0``
        by pytest-django): their names contain it; the emulator's own are left out."""
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT datname FROM pg_database WHERE strpos(datname, %s) > 0"
                f" AND datname <> %s AND {_UNMANAGED}",
                (real, real),
            ).fetchall()
        return [row[0] for row in rows]

    def databases_owned_by(self, role: str) -> list[str]:
        """Databases owned by ``role`` that the emulator did not make."""
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database"
                f" WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = %s) AND {_UNMANAGED}",
                (role,),
            ).fetchall()
        return [row[0] for row in rows]

    def databases_commented(self, comment: str) -> list[str]:
        """Databases whose comment is exactly ``comment``."""
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database"
                " WHERE pg_catalog.shobj_description(oid, 'pg_database') = %s",
                (comment,),
            ).fetchall()
        return [row[0] for row in rows]
