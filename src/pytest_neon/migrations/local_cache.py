"""The migration cache on the kept local server: the migrated database, kept as a database
``pytest_neon_cache_<key>`` between runs.

Each local run is an emulated project of its own, dropped at its end, so a cache branch
could not outlive it; the kept server keeps a plain database instead. A run whose key is
found makes its migration branch a copy of it (one clone, no migration runs); a run that
migrated copies its migration branch there under a temporary name and renames it, so a
cache database is complete whenever it can be found. The newest ``KEEP`` are kept.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import Any

from pytest_neon.local.cluster import SUPERUSER
from pytest_neon.neon_branch import NeonBranch

log = logging.getLogger("pytest_neon.cache")

PREFIX = "pytest_neon_cache_"
_BUILDING = "pytest_neon_caching_"
KEEP = 2
_COMMENT = "pytest-neon migration cache"
_CLONE_WAIT = 30.0
_EVICT = 1.0  # sessions left on the migrated database (as the emulator's clones do)


def local_cache_key(fingerprint: str, database: str, role: str) -> str:
    """The key of ``fingerprint`` for the branches' database and role."""
    parts = (fingerprint, database, role, "local-1")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


class LocalMigrationCache:
    """Cache databases on the server at ``url`` (a superuser DSN)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _databases(self, tablespace: str | None = None) -> Any:
        from pytest_neon.local.emulator.sql.real_databases import RealDatabases
        from pytest_neon.local.emulator.sql.server import SqlServer

        return RealDatabases(SqlServer(self.url, pool_size=2, tablespace=tablespace))

    def find(self, key: str) -> bool:
        """Whether the cache holds ``key``."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (PREFIX + key,)
            ).fetchone()
        return row is not None

    def load(self, key: str, branch: NeonBranch) -> None:
        """Make ``branch``'s database a copy of the cached ``key`` (nobody uses it yet)."""
        real, owner = _database_of(branch)
        databases = self._databases(self._tablespace_of(real))
        try:
            comment = _comment_of(databases, real)
            databases.drop(real)
            databases.clone(PREFIX + key, real, owner, comment, _CLONE_WAIT, evict_after=_EVICT)
        finally:
            databases.server.close()

    def _tablespace_of(self, name: str) -> str | None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT t.spcname FROM pg_database d JOIN pg_tablespace t"
                " ON t.oid = d.dattablespace WHERE d.datname = %s",
                (name,),
            ).fetchone()
        return str(row[0]) if row else None

    def save(self, key: str, branch: NeonBranch) -> None:
        """Keep ``branch``'s database as the cached ``key``; prune older keys."""
        real, _ = _database_of(branch)
        databases = self._databases("pg_default")  # on disk, never in RAM
        building = _BUILDING + secrets.token_hex(6)
        try:
            # owned by the server's superuser: the run's project drops what its role owns
            databases.clone(
                real, building, SUPERUSER, f"{_COMMENT} {key}", _CLONE_WAIT, evict_after=_EVICT
            )
            try:
                databases.rename(building, PREFIX + key)
            except Exception:  # another run saved the same key meanwhile
                databases.drop_quietly(building)
                return
            _prune(databases, key)
        finally:
            databases.server.close()


def _database_of(branch: NeonBranch) -> tuple[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(branch.connection_string)
    return str(params["dbname"]), str(params["user"])


def _comment_of(databases: Any, name: str) -> str:
    with databases.server.connection() as conn:
        row = conn.execute(
            "SELECT pg_catalog.shobj_description(oid, 'pg_database') FROM pg_database"
            " WHERE datname = %s",
            (name,),
        ).fetchone()
    return str(row[0]) if row and row[0] else ""


def _prune(databases: Any, key: str) -> None:
    """Drop cache databases but the newest ``KEEP`` (``key``'s among them), and
    half-built ones whose run is gone."""
    with databases.server.connection() as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY oid DESC",
            (PREFIX.replace("_", r"\_") + "%",),
        ).fetchall()
        building = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s",
            (_BUILDING.replace("_", r"\_") + "%",),
        ).fetchall()
    others = [row[0] for row in rows if row[0] != PREFIX + key]
    for name in others[KEEP - 1 :] + [row[0] for row in building]:
        log.info("pruning migration cache database %s", name)
        databases.drop_quietly(name)
