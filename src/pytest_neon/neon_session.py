"""``NeonSession``: the branches of one pytest process (a plain run, or one xdist worker).

It ties together the branch operations (:mod:`pytest_neon.branch_ops`), the worker's
branches (:mod:`pytest_neon.worker_pool`), the migration branch and housekeeping
(:mod:`pytest_neon.housekeeping`). A *run* is the whole ``pytest`` invocation (all of its
processes share its run id); a *session* is one process of it. Never imports pytest.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple

from pytest_neon.branch_ops import BranchOps
from pytest_neon.config import Settings
from pytest_neon.counters import RunCounters
from pytest_neon.engines import follow_if_imported, unfollow
from pytest_neon.errors import NeonError, NeonLimitError
from pytest_neon.housekeeping import (
    Failure,
    KeepAlive,
    delete_created,
    delete_run_branches,
    sweep_stale,
)
from pytest_neon.naming import branch_name
from pytest_neon.neon_branch import NeonBranch
from pytest_neon.worker_count import WorkerBranches, chosen, on_neon
from pytest_neon.worker_pool import WorkerPool

if TYPE_CHECKING:
    from pytest_neon.api import NeonClient

log = logging.getLogger("pytest_neon.branches")


#: the cache key of a project parked without migrations: its parent is the source
NO_MIGRATIONS = ""


class ParkPlan(NamedTuple):
    """What a project parked for the next run holds (see :meth:`NeonSession.park_plan`)."""

    worker_branch_id: str
    worker_endpoint_id: str
    migration_branch_id: str
    migration_endpoint_id: str
    parent_id: str
    cache_key: str  # the kept migration cache's key of the state both branches hold
    fresh: bool  # the worker branch is as the migrations left it (no test had it since)


class NeonSession:
    """The branches one pytest process creates, uses, resets and deletes."""

    def __init__(
        self,
        client: NeonClient | Callable[[], NeonClient],
        settings: Settings,
        *,
        run_id: str,
        worker: str,
        parent_id: str | None = None,
        workers: int = 1,
        inspector_url: str | None = None,
        cache_url: str | None = None,
        login: tuple[str, str] | None = None,
    ) -> None:
        """``client``: the API client, or what makes it when first needed; ``worker``:
        this process's name (``main``, ``gw0``…); ``parent_id``: the parent
        branch as another process of the run found it; ``workers``: processes of the run;
        ``inspector_url``: a local server's superuser DSN for ``pg_walinspect``;
        ``cache_url``: the kept local server's superuser DSN, where migrations are cached;
        ``login``: the (user, password) of the run's login on the kept server."""
        self.cache_url = cache_url
        self.counters = RunCounters()
        self.ops = BranchOps(
            client,
            settings,
            run_id=run_id,
            counters=self.counters,
            parent_id=parent_id,
            workers=workers,
            login=login,
        )
        self.pool = WorkerPool(
            self.ops, worker=worker, size=self.ops.turns, inspector_url=inspector_url
        )
        self.migration_branch: NeonBranch | None = None
        #: made with the worker branches (Neon), for the migrations if the run needs them
        self.reserved_migration: NeonBranch | None = None
        self._reserved_migration_id: str | None = None  # made by the xdist controller
        self._releasing: list[threading.Thread] = []
        #: other runs held branches on the project at the start (see :meth:`check_project`)
        self.others_live = False
        self._keep_alive = KeepAlive(self.ops)
        self._source_expires = False  # the source is the run's migration branch
        #: (branch name, real database): when this process runs the emulator, the next
        #: branch of that name is made as a copy of that database (see
        #: :meth:`create_migration_branch_from`)
        self.seed_database: Callable[[str, str], None] | None = None
        #: a parked project's migration branch and the cache key of the state it and the
        #: worker branch hold, until the migrations say whether it is the run's
        self._parked: tuple[NeonBranch, str] | None = None
        #: the kept server's migration cache key of the source, when the source is the
        #: run's migration branch in that state: the project may then be parked
        self.kept_cache_key: str | None = None

    @property
    def caches_migrations(self) -> bool:
        """Whether the migrated state is cached across runs: on Neon as a branch (the
        setting), on the kept local server as a database (``cache_url``)."""
        return self.settings.migration_cache or self.cache_url is not None

    @property
    def settings(self) -> Settings:
        """The run's settings."""
        return self.ops.settings

    @property
    def client(self) -> NeonClient:
        """The API client."""
        return self.ops.client

    @property
    def run_id(self) -> str:
        """The id shared by every process of the run."""
        return self.ops.run_id

    @property
    def worker(self) -> str:
        """This process's name: ``main``, or the xdist worker id."""
        return self.pool.worker

    @property
    def parent_id(self) -> str:
        """The branch test branches come from."""
        return self.ops.parent_id

    @property
    def worker_branch(self) -> NeonBranch | None:
        """The first worker branch, ready for use (``None`` before
        :meth:`create_worker_branch`)."""
        branch = self.pool.first_branch
        if branch is not None:
            self.ops.wait_ready(branch.branch_id)
        return branch

    @property
    def source_id(self) -> str | None:
        """The branch every reset restores from, once adopted."""
        return self.pool.source_id

    def note_shared_modules(self, count: int) -> None:
        """How many test modules use ``neon_branch_shared`` (for the branch-limit message)."""
        self.ops.shared_modules = count

    def check_project(self, *, sweep_after: int) -> WorkerBranches:
        """Once per run, before any branch: check the project and the parent (one
        listing), and sweep earlier runs' branches older than ``sweep_after`` s (0: none).

        Returns how many branches each worker takes turns on (``auto``: from the
        project's branch limit, asked for alongside the listing, and what the project
        holds after the sweep); the session uses it.
        """
        limit: Future[int | None] | None = None
        if chosen(self.settings) is None:
            with ThreadPoolExecutor(1, thread_name_prefix="pytest-neon-limit") as pool:
                limit = pool.submit(self._branches_limit)
                branches = self.ops.check_project()
        else:
            branches = self.ops.check_project()
        self.others_live = bool(self.ops.held_by_others(branches)[0])
        swept = len(sweep_stale(self.ops, branches, sweep_after)) if sweep_after else 0
        turns = on_neon(
            self.settings,
            workers=self.ops.workers,
            limit=limit.result() if limit is not None else None,
            in_use=len(branches) - swept,
        )
        self.use_worker_branches(turns.count)
        return turns

    def _branches_limit(self) -> int | None:
        try:
            return self.client.get_project(self.ops.project_id).branches_limit
        except NeonError as exc:  # the listing says what is wrong with the project
            log.debug("project not read: %s", exc)
            return None

    def use_worker_branches(self, count: int) -> None:
        """Take turns on ``count`` branches (before the migrated state is adopted)."""
        self.pool.resize(count)
        self.ops.turns = count

    def create_worker_branch(self) -> NeonBranch:
        """This process's first worker branch, from the parent (created once)."""
        return self.pool.start()

    def attach_parked(self, worker: NeonBranch, migration: NeonBranch, cache_key: str) -> None:
        """Take over a parked project's branches (the kept local server, see
        :mod:`pytest_neon.local.parking`), known without asking the API: the worker
        branch, in the migrated state of ``cache_key``, is this process's first."""
        self.ops.own(worker.branch_id, self.worker)
        self.pool.start(existing=worker)
        self.pool.at_source = migration.branch_id  # (the state it holds)
        self._parked = (migration, cache_key)

    def take_parked_source(self, key: str) -> NeonBranch | None:
        """The parked migration branch, as the run's, when it holds the state of ``key``
        (the worker branch holds it too: no restore); else it goes, in the background."""
        parked, self._parked = self._parked, None
        if parked is None:
            return None
        branch, parked_key = parked
        if branch.branch_id == self.parent_id:  # parked without migrations: never deleted
            if parked_key == key:  # none now either: the worker branch is at the parent
                self._parked = parked
            return None
        self.ops.own(branch.branch_id, "migrations")
        if parked_key == key and self.migration_branch is None:
            self.migration_branch = branch
            self.pool.at_source = branch.branch_id
            return branch
        self._delete_in_background(branch.branch_id)
        return None

    def park_plan(self) -> ParkPlan | None:
        """After :meth:`shutdown`: what this process's project holds, when it may be
        parked for the next run (see :mod:`pytest_neon.local.parking`): the worker branch
        and its source, and nothing else made by the run. The source is the migration
        branch in the migration cache's state, or the parent when the run had no
        migrations or no test that needed them (key :data:`NO_MIGRATIONS`); the worker
        branch is in the source's state, or had a test since. Their expiry is removed."""
        parkable = self.pool.parkable()
        if parkable is None:
            return None
        worker, fresh = parkable
        if self._parked is not None:  # taken over, and still in the state it was parked in
            migration, key = self._parked
            owned = {worker.branch_id}
        elif self.kept_cache_key is not None and self.migration_branch is not None:
            key, migration = self.kept_cache_key, self.migration_branch
            if self.source_id != migration.branch_id:
                return None
            owned = {worker.branch_id, migration.branch_id}
        elif self.migration_branch is None and (
            self.source_id == self.parent_id or (self.source_id is None and fresh)
        ):
            # no migrations (or none that changed anything), or no test that asked: the
            # parent is the source (a worker branch is made from it)
            found = self._parent_branch()
            if found is None:
                return None
            key, migration = NO_MIGRATIONS, found
            owned = {worker.branch_id}
        else:
            return None
        if set(self.ops.created) != owned or not worker.endpoint_id or not migration.endpoint_id:
            return None
        try:
            for branch_id in (worker.branch_id, migration.branch_id):
                self.ops.keep(branch_id)
        except NeonError as exc:
            log.debug("not parked: %s", exc)
            return None
        return ParkPlan(
            worker.branch_id,
            worker.endpoint_id,
            migration.branch_id,
            migration.endpoint_id,
            self.parent_id,
            key,
            fresh,
        )

    def _parent_branch(self) -> NeonBranch | None:
        """The parent branch with its endpoint (for a parked record), if it has one."""
        try:
            return self.ops.look_up(self.parent_id)
        except NeonError as exc:
            log.debug("not parked: %s", exc)
            return None

    def admit(self) -> NeonBranch:
        """A plain run on Neon: its worker branch. When other runs use the project, with a
        migration branch, made together (all or none, see
        :meth:`BranchOps.create_together`): a run that migrates never waits for room
        while holding a branch that others, waiting for its migrations, need freed."""
        if self.pool.first_branch is None and self.others_live:
            worker, migration = self.ops.create_together([self.worker, "migrations"], wait=False)
            self.pool.start(existing=worker)
            self.reserved_migration = migration
        return self.create_worker_branch()

    def reserve_for_workers(self, workers: list[str]) -> dict[str, str]:
        """An xdist controller on Neon: every worker's branch and a migration branch, made
        together (see :meth:`BranchOps.create_together`); their ids by worker name. They
        are the workers' from now on (the controller's end sweep finds strays)."""
        names = [*workers, "migrations"]
        try:
            made = self.ops.create_together(names, wait=True)
        except NeonLimitError:  # no room for a migration branch too: without it
            names = workers
            made = self.ops.create_together(names, wait=True)
        for branch in made:
            self.ops.forget(branch.branch_id)
        return {name: branch.branch_id for name, branch in zip(names, made, strict=True)}

    def attach_reserved(self, reserved: dict[str, str]) -> None:
        """An xdist worker: use the branches its controller made (see
        :meth:`reserve_for_workers`)."""
        own = reserved.get(self.worker)
        if own is not None and self.pool.first_branch is None:
            self.pool.start(existing=self.ops.attach(own, self.worker))
        self._reserved_migration_id = reserved.get("migrations")

    def _take_reserved_migration(self) -> NeonBranch | None:
        if self.reserved_migration is None and self._reserved_migration_id is not None:
            branch_id, self._reserved_migration_id = self._reserved_migration_id, None
            self.reserved_migration = self.ops.attach(branch_id, "migrations")
        branch, self.reserved_migration = self.reserved_migration, None
        return branch

    def release_reserved_migration(self) -> None:
        """The run needs no migration branch (cache hit, or nothing to migrate): delete
        the one made for it, in the background, so that other runs may use the room."""
        branch, self.reserved_migration = self.reserved_migration, None
        branch_id = branch.branch_id if branch is not None else self._reserved_migration_id
        self._reserved_migration_id = None
        if branch_id is None:
            return
        if branch is None:  # made by the controller: this process deletes it now
            self.ops.own(branch_id, "migrations")
        self._delete_in_background(branch_id)

    def _delete_in_background(self, branch_id: str) -> None:
        """Delete ``branch_id`` (this process's) on a thread; :meth:`shutdown` waits."""
        thread = threading.Thread(
            target=self._delete_quietly, args=(branch_id,), name="pytest-neon-release", daemon=True
        )
        thread.start()
        self._releasing.append(thread)

    def _delete_quietly(self, branch_id: str) -> None:
        try:
            self.ops.delete(branch_id)
        except NeonError as exc:  # it expires anyway; the run's end tries again
            log.warning("pytest-neon: could not delete unused branch %s: %s", branch_id, exc)

    def create_migration_branch(self) -> NeonBranch:
        """The branch ``neon_apply_migrations`` runs on (created once, on first use; the
        one made with the worker branches, if any)."""
        if self.migration_branch is None:
            self.migration_branch = self._take_reserved_migration() or self.ops.create("migrations")
        return self.migration_branch

    def create_migration_branch_from(self, database: str) -> NeonBranch | None:
        """The migration branch made as a copy of ``database``, a real database of the
        local server (the kept server's migration cache): one copy, not two. ``None`` when
        this process does not run the emulator, or the branch is made already."""
        if self.seed_database is None or self.migration_branch is not None:
            return None
        self.seed_database(branch_name(self.run_id, "migrations"), database)
        return self.create_migration_branch()

    def claim_migration_branch(self, key: str) -> bool:
        """Migrate on the claim of the migration cache's ``key`` (see
        :mod:`pytest_neon.migrations.cache`); ``False`` when another run holds it."""
        from pytest_neon.migrations.cache import claim, claim_by_rename

        if self.migration_branch is None:
            reserved = self._take_reserved_migration()
            if reserved is None:
                self.migration_branch = claim(self.ops, key)
            elif claim_by_rename(self.ops, key, reserved):
                self.migration_branch = reserved
            else:
                self.reserved_migration = reserved  # (another run holds the claim)
        return self.migration_branch is not None

    def publish_migration_branch(self, key: str) -> str:
        """Make the migrated claim the cache of ``key``; the id tests start from."""
        from pytest_neon.migrations.cache import publish

        assert self.migration_branch is not None
        source = publish(self.ops, key, self.migration_branch)
        if source not in self.ops.created:
            self.migration_branch = None  # the cache's now: not this run's to delete
        return source

    def drop_migration_branch(self) -> None:
        """Delete the migration branch (its migrations changed nothing, or were cached)."""
        if self.migration_branch is not None:
            self.ops.delete(self.migration_branch.branch_id)
            self.migration_branch = None

    def adopt_source(self, source_id: str, *, expires: bool = False) -> None:
        """Use ``source_id`` (the migrated state) from now on; bring the worker branch there.

        ``expires``: the source is this run's migration branch, kept alive by this process.
        """
        if self.pool.source_id is None:
            self._source_expires = expires
        self.pool.adopt(source_id)

    def create_module_branch(self, suffix: str) -> NeonBranch:
        """A branch of its own (``neon_branch_shared``), in the migrated state."""
        return self.ops.create(suffix, source_id=self.source_id)

    def checkout(self) -> NeonBranch:
        """A worker branch in the migrated state (see :meth:`WorkerPool.checkout`); the
        application's SQLAlchemy engines follow it (:mod:`pytest_neon.engines`)."""
        follow_if_imported(self.pool)
        return self.pool.checkout()

    def between_tests(self) -> None:
        """Before any test: start the reset the last test calls for; keep branches alive."""
        self.pool.between_tests()
        ids = list(self.ops.created)
        if self._source_expires and self.source_id:
            ids.append(self.source_id)
        self._keep_alive.maybe(ids, resetting=self.pool.resetting())

    def shutdown(self) -> None:
        """Wait for background work; close the write checks' connections."""
        unfollow(self.pool)
        self.pool.shutdown()
        for thread in self._releasing:
            thread.join()

    def delete_branches(self, *, whole_run: bool) -> list[Failure]:
        """Delete this process's branches, or with ``whole_run`` every branch of the run.

        Without ``whole_run`` (an xdist worker), the migration branch, which other
        workers may still reset from, is left to the controller's sweep.
        """
        if whole_run:
            return delete_run_branches(self.ops)
        keep = self.migration_branch.branch_id if self.migration_branch else ""
        return delete_created(self.ops, keep=keep)[0]

    def summary(self) -> dict[str, Any]:
        """The counters of this process, as plain JSON-able data."""
        client = self.ops.client_made
        stats = client.stats if client is not None else None  # (None: the API never called)
        return {
            **self.counters.as_dict(),
            "api_calls": stats.calls if stats else 0,
            "api_retries": stats.retries if stats else 0,
            "waiting_seconds": stats.waiting_seconds if stats else 0.0,
            "calls": dict(stats.by_call) if stats else {},
        }

    def close_client(self) -> None:
        """Close the API client, if it was made."""
        client = self.ops.client_made
        if client is not None:
            client.close()
