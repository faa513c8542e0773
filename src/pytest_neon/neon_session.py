"""``NeonSession``: the branches of one pytest process (a plain run, or one xdist worker).

It ties together the branch operations (:mod:`pytest_neon.branch_ops`), the worker's
branches (:mod:`pytest_neon.worker_pool`), the migration branch and housekeeping
(:mod:`pytest_neon.housekeeping`). A *run* is the whole ``pytest`` invocation (all of its
processes share its run id); a *session* is one process of it. Never imports pytest.
"""

from __future__ import annotations

from typing import Any

from pytest_neon.api import NeonClient
from pytest_neon.branch_ops import BranchOps
from pytest_neon.config import Settings
from pytest_neon.counters import RunCounters
from pytest_neon.housekeeping import (
    Failure,
    KeepAlive,
    delete_created,
    delete_run_branches,
    sweep_stale,
)
from pytest_neon.neon_branch import NeonBranch
from pytest_neon.worker_pool import WorkerPool


class NeonSession:
    """The branches one pytest process creates, uses, resets and deletes."""

    def __init__(
        self,
        client: NeonClient,
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
        """``worker``: this process's name (``main``, ``gw0``…); ``parent_id``: the parent
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
            self.ops, worker=worker, size=settings.worker_branches, inspector_url=inspector_url
        )
        self.migration_branch: NeonBranch | None = None
        self._keep_alive = KeepAlive(self.ops)
        self._source_expires = False  # the source is the run's migration branch

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

    def check_project(self, *, sweep_after: int) -> None:
        """Once per run, before any branch: check the project and the parent (one
        listing), and sweep earlier runs' branches older than ``sweep_after`` s (0: none)."""
        branches = self.ops.check_project()
        if sweep_after:
            sweep_stale(self.ops, branches, sweep_after)

    def create_worker_branch(self) -> NeonBranch:
        """This process's first worker branch, from the parent (created once)."""
        return self.pool.start()

    def create_migration_branch(self) -> NeonBranch:
        """The branch ``neon_apply_migrations`` runs on (created once, on first use)."""
        if self.migration_branch is None:
            self.migration_branch = self.ops.create("migrations")
        return self.migration_branch

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
        """A worker branch in the migrated state (see :meth:`WorkerPool.checkout`)."""
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
        self.pool.shutdown()

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
        stats = self.client.stats
        return {
            **self.counters.as_dict(),
            "api_calls": stats.calls,
            "api_retries": stats.retries,
            "waiting_seconds": stats.waiting_seconds,
            "calls": dict(stats.by_call),
        }
