"""Run orchestration: the worker branch, the migration branch, module branches, resets.

One ``NeonRun`` lives in each pytest process that runs tests. It never imports pytest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pytest_neon.api import NeonClient
from pytest_neon.branch import NeonBranch, host_of
from pytest_neon.config import Settings
from pytest_neon.errors import NeonConfigError, NeonError, NeonNotFoundError
from pytest_neon.models import Branch
from pytest_neon.probe import WriteProbe

log = logging.getLogger("pytest_neon.branches")

BRANCH_PREFIX = "pytest-neon-"
ANNOTATION_KEY = "created-by"
ANNOTATION_VALUE = "pytest-neon"
RUN_ANNOTATION = "pytest-neon-run"


def branch_name(run_id: str, suffix: str) -> str:
    """The name of an ephemeral branch of run ``run_id``."""
    return f"{BRANCH_PREFIX}{run_id}-{suffix}"


@dataclass
class RunCounters:
    """What a run did, for the end-of-run summary."""

    branches_created: int = 0
    resets_done: int = 0
    resets_skipped: int = 0
    migration_cache: str = ""  # "", "hit" or "miss"
    phases: dict[str, float] = field(default_factory=dict)

    def add_phase(self, name: str, seconds: float) -> None:
        """Accumulate time spent in phase ``name``."""
        self.phases[name] = self.phases.get(name, 0.0) + seconds


class NeonRun:
    """The branches one pytest process creates, uses, resets and deletes."""

    def __init__(self, client: NeonClient, settings: Settings, *, run_id: str, worker: str) -> None:
        if not settings.project_id:
            raise NeonConfigError("no Neon project: set NEON_PROJECT_ID or --neon-project-id")
        self.client = client
        self.settings = settings
        self.project_id: str = settings.project_id
        self.run_id = run_id
        self.worker = worker
        self.counters = RunCounters()
        self.created: dict[str, str] = {}  # branch id -> name, in creation order
        self.worker_branch: NeonBranch | None = None
        self.source_id: str | None = None  # the branch a reset restores from
        self.migration_branch: NeonBranch | None = None
        self.migration_fingerprint: str | None = None
        self._parent_id: str | None = settings.parent_branch
        self._dirty = False
        self._lock = threading.Lock()
        self._reset_listeners: list[Callable[[NeonBranch], None]] = []
        self._pending: Future[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._probe: WriteProbe | None = None
        #: superuser DSN of a local server with pg_walinspect (local backend only)
        self.wal_inspector_url: str | None = None

    # -- lookups ---------------------------------------------------------------------------

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a block of work under ``name`` in the run counters."""
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.counters.add_phase(name, time.monotonic() - t0)

    @property
    def parent_id(self) -> str:
        """The branch test branches come from: the setting, else the project's default."""
        if self._parent_id is None:
            branches = self.client.list_branches(self.project_id)
            default = [b for b in branches if b.default]
            if not default:
                raise NeonConfigError(
                    f"project {self.project_id} has no default branch; set "
                    "--neon-parent-branch / NEON_PARENT_BRANCH_ID"
                )
            self._parent_id = default[0].id
        return self._parent_id

    @property
    def annotations(self) -> dict[str, str]:
        """The annotation every branch of this run carries."""
        return {ANNOTATION_KEY: ANNOTATION_VALUE, RUN_ANNOTATION: self.run_id}

    # -- branch primitives -----------------------------------------------------------------

    def create_branch(self, suffix: str, *, source_id: str | None = None) -> NeonBranch:
        """Create an ephemeral branch from the parent, brought to ``source_id`` if given."""
        parent = self.parent_id
        expiry = self.settings.branch_expiry
        expires_at = datetime.now(UTC) + timedelta(seconds=expiry) if expiry else None
        name = branch_name(self.run_id, suffix)
        with self.phase("create branch"):
            try:
                created = self.client.create_branch(
                    self.project_id,
                    name=name,
                    parent_id=parent,
                    expires_at=expires_at,
                    annotations=self.annotations,
                )
            except NeonNotFoundError as exc:
                if self.settings.parent_branch:
                    raise NeonConfigError(
                        f"parent branch {parent} not found in project {self.project_id}: "
                        f"fix {self.settings.describe('parent_branch')}"
                    ) from exc
                raise
            with self._lock:
                self.created[created.branch.id] = name
                self.counters.branches_created += 1
            endpoint = self.client.settle(self.project_id, created)
            uri = self._connection_uri(created.branch.id, endpoint.id)
        branch = NeonBranch(
            branch_id=created.branch.id,
            project_id=self.project_id,
            connection_string=uri,
            host=host_of(uri) or endpoint.host,
            parent_id=created.branch.parent_id or parent,
            endpoint_id=endpoint.id,
            database_name=self.settings.database,
            role_name=self.settings.role,
        )
        if source_id and source_id != parent:
            self.restore(branch, source_id)
        log.debug("created branch %s (%s)", name, branch.branch_id)
        return branch

    def _connection_uri(self, branch_id: str, endpoint_id: str) -> str:
        try:
            return self.client.connection_uri(
                self.project_id,
                branch_id=branch_id,
                endpoint_id=endpoint_id,
                database_name=self.settings.database,
                role_name=self.settings.role,
            )
        except NeonNotFoundError as exc:
            raise NeonConfigError(
                f"database {self.settings.database!r} or role {self.settings.role!r} does not "
                f"exist on branch {branch_id}: set --neon-database / NEON_DATABASE and "
                f"--neon-role / NEON_ROLE ({exc.neon_message})"
            ) from exc

    def restore(self, branch: NeonBranch, source_id: str) -> None:
        """Bring ``branch`` to the current state of ``source_id`` (same connection string)."""
        with self.phase("reset"):
            result = self.client.restore_branch(
                self.project_id, branch.branch_id, source_branch_id=source_id
            )
            self.client.wait_for_operations(self.project_id, result.operations)
        with self._lock:
            self.counters.resets_done += 1

    def delete(self, branch_id: str) -> None:
        """Delete a branch this run created (already gone is fine)."""
        with self.phase("delete branch"):
            self.client.delete_branch(self.project_id, branch_id)
        with self._lock:
            self.created.pop(branch_id, None)

    # -- the worker branch -----------------------------------------------------------------

    def start(self) -> NeonBranch:
        """Create this process's worker branch from the parent."""
        if self.worker_branch is None:
            self.worker_branch = self.create_branch(self.worker)
        return self.worker_branch

    def adopt_source(self, source_id: str) -> None:
        """Use ``source_id`` (the migrated state) from now on; bring the worker branch there."""
        if self.source_id is not None:
            return
        branch = self.start()
        if source_id != self.parent_id:
            self.restore(branch, source_id)
            self._after_reset(branch)
        self.source_id = source_id
        self._dirty = False

    def checkout(self) -> NeonBranch:
        """The worker branch in the migrated state.

        Waits for a reset still running in the background (only the remaining part of it),
        or resets now when the last test wrote and no reset is under way.
        """
        branch = self.start()
        pending, self._pending = self._pending, None
        if pending is not None:
            with self.phase("wait for reset"):
                pending.result()  # a failed reset raises here; the branch stays dirty
            self._dirty = False
            self._after_reset(branch)
        if self._dirty:
            self._reset_now(branch)
            self._dirty = False
            self._after_reset(branch)
        return branch

    def write_position(self) -> str | None:
        """The worker branch's WAL position, read on the plugin's own connection."""
        branch = self.start()
        if self._probe is None:
            self._probe = WriteProbe(branch.connection_string, self.wal_inspector_url)
        with self.phase("write check"):
            return self._probe.position()

    def finish_test(self, before: str | None, *, force: bool = False) -> bool:
        """After a readwrite test: reset in the background if it wrote (or ``force``).

        Returns whether a reset was started. An unknown position counts as written.
        """
        if not force and self._probe is not None and not self._wrote_since(before):
            with self._lock:
                self.counters.resets_skipped += 1
            return False
        self.mark_dirty()
        return True

    def _wrote_since(self, before: str | None) -> bool:
        assert self._probe is not None
        with self.phase("write check"):
            return self._probe.wrote_since(before)

    def _reset_now(self, branch: NeonBranch) -> None:
        self.restore(branch, self.source_id or self.parent_id)
        if self._probe is not None:
            self._probe.position()  # reconnect now, off the next test's path

    def add_reset_listener(self, listener: Callable[[NeonBranch], None]) -> None:
        """Call ``listener(branch)`` after every reset of the worker branch.

        Integrations use it to drop pooled connections that the reset cut.
        """
        self._reset_listeners.append(listener)

    def _after_reset(self, branch: NeonBranch) -> None:
        for listener in list(self._reset_listeners):
            try:
                listener(branch)
            except Exception:
                log.exception("reset listener %r failed", listener)

    def mark_dirty(self) -> None:
        """The last test may have written: start resetting the worker branch in the background.

        The next :meth:`checkout` waits for whatever is left of it.
        """
        self._dirty = True
        branch = self.worker_branch
        if branch is None or self._pending is not None:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="pytest-neon-reset")
        self._pending = self._executor.submit(self._reset_now, branch)

    def shutdown(self) -> None:
        """Wait for a background reset (its error no longer matters) and close connections."""
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                pending.result()
            except Exception as exc:
                log.debug("background reset failed at the end of the run: %s", exc)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    # -- migrations ------------------------------------------------------------------------

    def create_migration_branch(self) -> NeonBranch:
        """The branch ``neon_apply_migrations`` runs on (created once, on first use)."""
        if self.migration_branch is None:
            self.migration_branch = self.create_branch("migrations")
        return self.migration_branch

    def drop_migration_branch(self) -> None:
        """Migrations changed nothing: delete their branch; tests use the parent directly."""
        if self.migration_branch is not None:
            self.delete(self.migration_branch.branch_id)
            self.migration_branch = None

    # -- cleanup ---------------------------------------------------------------------------

    def delete_created(self) -> list[tuple[str, str]]:
        """Delete every branch this process created; return ``(id, error)`` for failures."""
        self.shutdown()
        failures: list[tuple[str, str]] = []
        for branch_id in reversed(list(self.created)):
            try:
                self.delete(branch_id)
            except NeonError as exc:
                failures.append((branch_id, str(exc)))
        return failures

    def branches_of_run(self) -> list[Branch]:
        """Every branch on the project that this run (any worker) created."""
        found = self.client.list_branches(self.project_id, search=branch_name(self.run_id, ""))
        return [
            b
            for b in found
            if b.name.startswith(branch_name(self.run_id, ""))
            and b.annotations.get(RUN_ANNOTATION) == self.run_id
        ]

    def delete_run_branches(self) -> list[tuple[str, str]]:
        """Delete every branch of this run, created by any worker (the controller's sweep)."""
        failures = self.delete_created()
        try:
            leftovers = self.branches_of_run()
        except NeonError as exc:
            return [*failures, ("(list)", str(exc))]
        for branch in leftovers:
            try:
                self.delete(branch.id)
            except NeonError as exc:
                failures.append((branch.id, str(exc)))
        return failures
