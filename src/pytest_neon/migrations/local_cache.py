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

from pytest_neon.local import SUPERUSER
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


def cached_database(key: str) -> str:
    """The name of the database that caches ``key``."""
    return PREFIX + key


class LocalMigrationCache:
    """Cache databases on the server at ``url`` (a superuser DSN); :meth:`close` when done."""

    def __init__(self, url: str) -> None:
        from pytest_neon.local.emulator.sql.real_databases import RealDatabases
        from pytest_neon.local.emulator.sql.server import SqlServer

        self._databases = RealDatabases(SqlServer(url, pool_size=2))

    def close(self) -> None:
        """Close the connections."""
        self._databases.server.close()

    def find(self, key: str) -> bool:
        """Whether the cache holds ``key``."""
        return bool(_named_like(self._databases, cached_database(key)))

    def load(self, key: str, branch: NeonBranch) -> None:
        """Make ``branch``'s database a copy of the cached ``key`` (nobody uses it yet): in
        the same tablespace (the kept server's RAM one), with the same comment."""
        real, owner = _database_of(branch)
        databases = self._databases
        with databases.server.connection() as conn:
            row = conn.execute(
                "SELECT pg_catalog.shobj_description(d.oid, 'pg_database'), t.spcname"
                " FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace"
                " WHERE d.datname = %s",
                (real,),
            ).fetchone()
        comment, databases.server.tablespace = (row[0] or "", row[1]) if row else ("", None)
        databases.drop(real)
        databases.clone(cached_database(key), real, owner, comment, _CLONE_WAIT, evict_after=_EVICT)

    def save(self, key: str, branch: NeonBranch) -> None:
        """Keep ``branch``'s database as the cached ``key``; prune older keys."""
        real, _ = _database_of(branch)
        databases = self._databases
        databases.server.tablespace = "pg_default"  # on disk, never in RAM
        building = _BUILDING + secrets.token_hex(6)
        # owned by the server's superuser: the run's project drops what its role owns
        databases.clone(
            real, building, SUPERUSER, f"{_COMMENT} {key}", _CLONE_WAIT, evict_after=_EVICT
        )
        try:
            databases.rename(building, cached_database(key))
        except Exception:  # another run saved the same key meanwhile
            databases.drop_quietly(building)
            return
        _prune(databases, key)


def _database_of(branch: NeonBranch) -> tuple[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(branch.connection_string)
    return str(params["dbname"]), str(params["user"])


def _named_like(databases: Any, prefix: str) -> list[str]:
    """Databases whose name starts with ``prefix``, newest first."""
    with databases.server.connection() as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY oid DESC",
            (prefix,),
        ).fetchall()
    return [row[0] for row in rows]


def _prune(databases: Any, key: str) -> None:
    """Drop cache databases but the newest ``KEEP`` (``key``'s among them), and
    half-built ones whose run is gone."""
    others = [name for name in _named_like(databases, PREFIX) if name != cached_database(key)]
    for name in others[KEEP - 1 :] + _named_like(databases, _BUILDING):
        log.info("pruning migration cache database %s", name)
        databases.drop_quietly(name)
