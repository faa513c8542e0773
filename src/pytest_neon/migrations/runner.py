"""The run's migrations: once per run, from the cache when they did not change, adopted
by every process as the state each test starts from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from pytest_neon.errors import NeonError
from pytest_neon.migrations.fingerprint import schema_fingerprint
from pytest_neon.migrations.gate import MigrationGate, MigrationState
from pytest_neon.migrations.local_cache import (
    LocalMigrationCache,
    cached_database,
    local_cache_key,
)
from pytest_neon.neon_branch import NeonBranch
from pytest_neon.neon_session import NeonSession
from pytest_neon.patience import Patience

WRONG_BRANCH = (
    "pytest-neon: neon_apply_migrations changed nothing on the migration branch, but this "
    "worker's branch changed: the migrations connected with a URL read before they ran "
    "(e.g. Alembic's env.py taking it from application settings imported at start, or an "
    "engine built at import); make them use neon_migration_branch.connection_string, or "
    "DATABASE_URL (--neon-env-var) as it is while neon_apply_migrations runs"
)


class WrongBranchError(NeonError):
    """The migrations changed this worker's branch instead of the migration branch."""


class MigratedElsewhereError(NeonError):
    """Another process of the run ran the migrations, and they failed there."""


class Source(NamedTuple):
    """The branch every test branch is brought to, and whether it expires (the run's own
    migration branch, kept alive by the run)."""

    branch_id: str
    expires: bool = False


class Migrations:
    """The run's migrations, as one process (a plain run, or an xdist worker) sees them."""

    def __init__(self, session: NeonSession) -> None:
        self.session = session
        self._baseline: str | None = None  # the fresh migration branch's schema

    def branch(self) -> NeonBranch:
        """The branch migrations run on (created on first use), its schema noted."""
        branch = self.session.create_migration_branch()
        if self._baseline is None:
            self._baseline = schema_fingerprint(branch.connection_string)
        return branch

    def prepare(
        self,
        *,
        apply: Callable[[], object],
        fingerprint: Callable[[], str | None],
        describe: Callable[[BaseException], str],
    ) -> Source:
        """The migrated state: made by this process if it is the first of the run, else
        the one the first made (another process's failure raises MigratedElsewhereError).

        ``apply`` runs the migrations; ``fingerprint`` gives the key of the migration
        cache (``None``: no cache); ``describe`` makes the message other processes report
        when ``apply`` fails here.
        """
        gate = MigrationGate(self.session.run_id)
        with gate.hold() as recorded:
            if recorded is None:
                try:
                    source = self._migrate(apply, fingerprint)
                except BaseException as exc:
                    gate.record(MigrationState(None, error=describe(exc)))
                    raise
                finally:  # (unused: others may have the room)
                    self.session.release_reserved_migration()
                gate.record(MigrationState(source.branch_id, expires=source.expires))
                return source
            if recorded.error:
                raise MigratedElsewhereError(recorded.error)
            return Source(recorded.source_branch_id or self.session.parent_id, recorded.expires)

    def adopt(self, source: Source) -> None:
        """Bring this process's worker branch to ``source``; resets restore from it."""
        self.session.adopt_source(source.branch_id, expires=source.expires)

    def _migrate(
        self, apply: Callable[[], object], fingerprint: Callable[[], str | None]
    ) -> Source:
        """Run the migrations, or find their result in the migration cache."""
        session = self.session
        if session.cache_url:
            return self._migrate_kept_server(session.cache_url, apply, fingerprint)
        from pytest_neon.migrations.cache import cache_key  # (Neon's cache: loaded for it)

        found = fingerprint() if session.settings.migration_cache else None
        key = cache_key(session.ops, found) if found else None
        claimed = False
        if key is not None:
            cached, claimed = self._find_or_claim(key)
            if cached is not None:
                session.counters.note_cache("hit")
                return Source(cached)
            session.counters.note_cache("miss")
        try:
            with session.counters.phase("migrations"):
                apply()
            source = self._migrated_source()
        except BaseException:
            if claimed:  # the runs waiting for it claim in their turn
                session.drop_migration_branch()
            raise
        migration = session.migration_branch
        if claimed and key is not None and migration is not None:
            source = session.publish_migration_branch(key)
            migration = session.migration_branch
        return Source(source, expires=migration is not None and source == migration.branch_id)

    def _find_or_claim(self, key: str) -> tuple[str | None, bool]:
        """The cache of ``key`` (made by this run or another), else whether this run
        claimed it (it then migrates and publishes it).

        While another run holds the claim, wait for its cache; when the wait is over
        (``wait_timeout``), migrate on a branch of its own, publishing nothing.
        """
        from pytest_neon.migrations.cache import look_up

        session = self.session
        wait = Patience(session.settings.wait_timeout, session.counters, "wait for migrations")
        while True:
            cached, claimed_elsewhere = look_up(session.ops, key)
            if cached is not None:
                return cached, False
            if not claimed_elsewhere and session.claim_migration_branch(key):
                cached, _ = look_up(session.ops, key)  # published just before the claim?
                if cached is None:
                    return None, True
                session.drop_migration_branch()
                return cached, False
            if not wait.pause():
                return None, False

    def _migrate_kept_server(
        self, url: str, apply: Callable[[], object], fingerprint: Callable[[], str | None]
    ) -> Source:
        """Run the migrations, or copy their result from the kept local server's cache."""
        found = fingerprint()
        session = self.session
        settings = session.settings
        key = local_cache_key(found, settings.database, settings.role) if found else ""
        parked = session.take_parked_source(key)
        if parked is not None:  # a parked project in this state: nothing to copy
            session.counters.note_cache("hit")
            session.kept_cache_key = key
            return Source(parked.branch_id, expires=True)
        if not found:
            return self._from_kept_cache(None, "", apply)
        cache = LocalMigrationCache(url)
        try:
            return self._from_kept_cache(cache, key, apply)
        finally:
            cache.close()

    def _from_kept_cache(
        self, cache: LocalMigrationCache | None, key: str, apply: Callable[[], object]
    ) -> Source:
        """The cached ``key`` in a new migration branch, else the migrations run and their
        result cached (no ``cache``: run, nothing cached)."""
        session = self.session
        counters = session.counters
        if cache is not None:
            with counters.phase("migration cache lookup"):
                hit = cache.find(key)
            if hit:
                with counters.phase("migration cache load"):
                    # this process runs the emulator: the branch is made as a copy of it
                    branch = session.create_migration_branch_from(cached_database(key))
                    if branch is None:
                        branch = session.create_migration_branch()
                        cache.load(key, branch)
                counters.note_cache("hit")
                session.kept_cache_key = key
                return Source(branch.branch_id, expires=True)
            counters.note_cache("miss")
        with counters.phase("migrations"):
            apply()
        source = self._migrated_source()
        migration = session.migration_branch
        migrated = migration is not None and source == migration.branch_id
        if cache is not None and migration is not None and migrated:
            with counters.phase("migration cache save"):
                cache.save(key, migration)
            session.kept_cache_key = key
        return Source(source, expires=migrated)

    def _migrated_source(self) -> str:
        """The migration branch, or the parent if the migrations changed nothing.

        Migrations that changed nothing where they should have, but changed the worker
        branch (which every reset would undo), are an error.
        """
        session = self.session
        branch = session.migration_branch
        if branch is None:
            return session.parent_id
        if schema_fingerprint(branch.connection_string) == self._baseline:
            worker = session.worker_branch
            if (
                worker is not None
                and schema_fingerprint(worker.connection_string) != self._baseline
            ):
                raise WrongBranchError(WRONG_BRANCH)
            session.drop_migration_branch()
            return session.parent_id
        return branch.branch_id
