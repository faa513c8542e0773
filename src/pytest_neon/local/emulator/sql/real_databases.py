"""The real databases on the server: create, clone by template, rename, drop, find.

A branch's data lives in real databases, cloned with ``CREATE DATABASE ... TEMPLATE``.
PostgreSQL cannot copy a database that has sessions (Neon can): a clone waits for the
template's sessions to leave, and cuts them after a while.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor

import psycopg
from psycopg import errors, sql

from pytest_neon.local.emulator.sql.clone_strategy import FILE_COPY, CloneStrategy
from pytest_neon.local.emulator.sql.server import Connection, SqlServer

log = logging.getLogger("pytest_neon.emulator")

_PARALLEL_DROPS = 4  # drops sent at once (each on a connection of the server's pool)

# Sessions that make CREATE DATABASE ... TEMPLATE refuse (it cancels autovacuum itself).
_SESSIONS_ON = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
    " AND pid <> pg_backend_pid() AND backend_type IS DISTINCT FROM 'autovacuum worker'"
)
# A database that carries no emulator comment (made by a client, not the emulator).
_UNMANAGED = (
    "coalesce(pg_catalog.shobj_description(oid, 'pg_database'), '')"
    " NOT LIKE 'pytest-neon-emulator %%'"
)


class TemplateBusyError(Exception):
    """The template database of a clone stayed in use by other sessions."""

    def __init__(self, template: str) -> None:
        super().__init__(f"source database {template} is being accessed by other users")


class RealDatabases:
    """The real databases of the server behind the emulator."""

    def __init__(self, server: SqlServer, strategy: CloneStrategy | None = None) -> None:
        """``strategy``: how clones copy (default: measured on the server)."""
        self.server = server
        self.strategy = strategy or CloneStrategy(server.clone_strategy)

    def create(self, name: str, owner: str, comment: str) -> None:
        """Create an empty database ``name`` owned by ``owner``."""
        stmt = sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(owner)
        )
        stmt += self._placement(self.strategy.fixed or FILE_COPY)  # a copy of template1
        with self.server.connection() as conn:
            conn.execute(stmt)
        self._comment(name, comment)

    def clone(
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
        strategy = self.strategy.pick(template)
        stmt += self._placement(strategy)
        started = time.monotonic()
        deadline = started + wait
        pause = 0.02
        while True:
            # PostgreSQL itself waits 5 s before it refuses a template in use: look first.
            with self.server.connection() as conn:
                in_use = conn.execute(_SESSIONS_ON, (template,)).fetchone()
                overdue = evict_after is not None and time.monotonic() - started >= evict_after
                if in_use and in_use[0] and overdue:
                    log.warning(
                        "terminating %d session(s) on %s so that it can be copied",
                        in_use[0],
                        template,
                    )
                    _terminate(conn, template)
                    evict_after = None
                if not (in_use and in_use[0]):
                    try:
                        copy_started = time.monotonic()
                        conn.execute(stmt)
                        self.strategy.record(template, strategy, time.monotonic() - copy_started)
                        break
                    except errors.ObjectInUse:
                        pass
            if time.monotonic() + pause > deadline:
                raise TemplateBusyError(template)
            time.sleep(pause)
            pause = min(pause * 2, 0.25)
        self._comment(name, comment)

    def _placement(self, strategy: str | None) -> sql.Composable:
        """`` STRATEGY`` of a clone (PostgreSQL 15+; see :mod:`.clone_strategy`) and the
        server's tablespace, if it has one."""
        clause: sql.Composable = sql.SQL("")
        if strategy and self.server.server_version >= 150000:
            clause += sql.SQL(" STRATEGY {}").format(sql.SQL(strategy))
        if self.server.tablespace:
            clause += sql.SQL(" TABLESPACE {}").format(sql.Identifier(self.server.tablespace))
        return clause

    def _comment(self, name: str, comment: str) -> None:
        try:
            with self.server.connection() as conn:
                conn.execute(
                    sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                        sql.Identifier(name), sql.Literal(comment)
                    )
                )
        except BaseException:
            self.drop(name)
            raise

    def drop(self, name: str) -> None:
        """Drop ``name`` if it exists, terminating the sessions connected to it."""
        ident = sql.Identifier(name)
        if self.server.server_version >= 130000:
            with self.server.connection() as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            return
        for attempt in range(50):  # PostgreSQL 12 and older: terminate, then drop
            try:
                with self.server.connection() as conn:
                    _terminate(conn, name)
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident))
                return
            except errors.ObjectInUse:
                if attempt == 49:
                    raise
                time.sleep(0.05)

    def drop_quietly(self, name: str) -> None:
        """:meth:`drop`, logging a failure instead of raising it."""
        try:
            self.drop(name)
        except psycopg.Error:
            log.warning("could not drop database %s", name, exc_info=True)

    def drop_all(self, names: Collection[str], *, quietly: bool = False) -> None:
        """:meth:`drop` each of ``names``, a few at a time (on a server that syncs to disk
        each drop waits for a checkpoint, and drops under way together share one); the
        first failure is raised once all were tried, or only logged ``quietly``."""
        drop = self.drop_quietly if quietly else self.drop
        if len(names) < 2:
            for name in names:
                drop(name)
            return
        workers = min(len(names), _PARALLEL_DROPS)
        with ThreadPoolExecutor(workers, thread_name_prefix="neon-emulator-drop") as pool:
            futures = [pool.submit(drop, name) for name in names]
        for future in futures:
            future.result()

    def size(self, name: str) -> int:
        """Bytes database ``name`` takes on disk (0 if it is gone)."""
        with self.server.connection() as conn:
            row = conn.execute(
                "SELECT pg_database_size(oid) FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def drop_derived(self, real: str) -> None:
        """Drop what a client made from a branch database's name (pytest-django's
        ``test_<name>``): it goes with the branch, as it would on Neon."""
        for derived in self.derived_from(real):
            log.info("dropping database %s, made from %s", derived, real)
            self.drop_quietly(derived)

    def rename(self, old: str, new: str) -> None:
        """Rename database ``old`` (which nobody uses) to ``new``."""
        with self.server.connection() as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(old), sql.Identifier(new)
                )
            )

    def all_names(self) -> set[str]:
        """Names of all databases on the server."""
        with self.server.connection() as conn:
            return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}

    def derived_from(self, real: str) -> list[str]:
        """Databases others made from the name of ``real`` (``test_<real>``, ``test_<real>_gw0``
        by pytest-django): their names contain it; the emulator's own are left out."""
        with self.server.connection() as conn:
            rows = conn.execute(
                f"SELECT datname FROM pg_database WHERE strpos(datname, %s) > 0"
                f" AND datname <> %s AND {_UNMANAGED}",
                (real, real),
            ).fetchall()
        return [row[0] for row in rows]

    def owned_by(self, role: str) -> list[str]:
        """Databases owned by ``role`` that the emulator did not make."""
        with self.server.connection() as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database"
                f" WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = %s) AND {_UNMANAGED}",
                (role,),
            ).fetchall()
        return [row[0] for row in rows]

    def commented(self, comment: str) -> list[str]:
        """Databases whose comment is exactly ``comment``."""
        with self.server.connection() as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database"
                " WHERE pg_catalog.shobj_description(oid, 'pg_database') = %s",
                (comment,),
            ).fetchall()
        return [row[0] for row in rows]

    def close_sessions(self, names: list[str]) -> None:
        """End every session on the databases ``names`` (a compute endpoint stops)."""
        with self.server.connection() as conn:
            for name in names:
                _terminate(conn, name)


def _terminate(conn: Connection, name: str) -> None:
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )
