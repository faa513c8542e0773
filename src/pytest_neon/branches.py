"""Run orchestration: the worker branch, the migration branch, module branches, resets.

One ``NeonRun`` lives in each pytest process that runs tests. It never imports pytest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pytest_neon.api import NeonClient
from pytest_neon.branch import NeonBranch, host_of
from pytest_neon.config import Settings
from pytest_neon.errors import (
    NeonBranchGoneError,
    NeonConfigError,
    NeonError,
    NeonLimitError,
    NeonNotFoundError,
    api_unavailable,
)
from pytest_neon.models import Branch
from pytest_neon.probe import WriteProbe

log = logging.getLogger("pytest_neon.branches")

_PHASE_LOCK = threading.Lock()

#: background resets of a worker branch that may fail in a row before it is given up
MAX_RESET_FAILURES = 3

#: seconds a WAL position from the end of a check may serve as the start of the next one
POSITION_MAX_AGE = 1.0

BRANCH_PREFIX = "pytest-neon-"
ANNOTATION_KEY = "created-by"
ANNOTATION_VALUE = "pytest-neon"
RUN_ANNOTATION = "pytest-neon-run"
#: kept on purpose across runs (the migration cache): never swept
KEPT_PREFIX = BRANCH_PREFIX + "cache-"


def made_by_us(branch: Branch) -> bool:
    """Whether ``branch`` carries pytest-neon's annotation."""
    return branch.annotations.get(ANNOTATION_KEY) == ANNOTATION_VALUE


def branch_name(run_id: str, suffix: str) -> str:
    """The name of an ephemeral branch of run ``run_id``."""
    return f"{BRANCH_PREFIX}{run_id}-{suffix}"


@dataclass
class RunCounters:
    """What a run did, for the end-of-run summary."""

    branches_created: int = 0
    branches_swept: int = 0
    resets_done: int = 0
    resets_skipped: int = 0
    migration_cache: str = ""  # "", "hit" or "miss"
    phases: dict[str, float] = field(default_factory=dict)

    def add_phase(self, name: str, seconds: float) -> None:
        """Accumulate time spent in phase ``name`` (from any thread)."""
        with _PHASE_LOCK:
            self.phases[name] = self.phases.get(name, 0.0) + seconds


@dataclass
class _Slot:
    """One worker branch and what this process knows of its state."""

    branch: NeonBranch | None  # None while it is being created
    dirty: bool = False
    pending: Future[bool] | None = None  # background work: True when it reset the branch
    probe: WriteProbe | None = None
    clean_position: str | None = None  # where the next write check may start
    clean_at: float = 0.0  # when clean_position was read (monotonic)
    failures: int = 0  # background resets failed in a row

    def keep_position(self, position: str | None, read_at: float | None = None) -> None:
        """Remember ``position`` (read at monotonic ``read_at``, default now) as a start for
        the next write check."""
        self.clean_position = position
        self.clean_at = time.monotonic() if read_at is None else read_at

    def take_position(self) -> str | None:
        """The kept position if it is recent (a check from an old one reads much WAL)."""
        position, self.clean_position = self.clean_position, None
        if position is not None and time.monotonic() - self.clean_at > POSITION_MAX_AGE:
            return None
        return position

    @property
    def ready(self) -> bool:
        """Usable now: created, clean, no background work on it."""
        return self.branch is not None and not self.dirty and self.pending is None


class NeonRun:
    """The branches one pytest process creates, uses, resets and deletes."""

    def __init__(
        self,
        client: NeonClient,
        settings: Settings,
        *,
        run_id: str,
        worker: str,
        parent_id: str | None = None,
    ) -> None:
        """``parent_id``: the parent branch as another process of the run found it."""
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
        self._parent_id: str | None = settings.parent_branch or parent_id
        self._slots: list[_Slot] = []  # the worker branches, the first is worker_branch
        self._current: _Slot | None = None  # the one the running (or last) test got
        self._lock = threading.Lock()
        self._reset_listeners: list[Callable[[NeonBranch], None]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._jobs: dict[Future[bool], tuple[Callable[..., bool], tuple[Any, ...]]] = {}
        #: superuser DSN of a local server with pg_walinspect (local backend only)
        self.wal_inspector_url: str | None = None
        #: for the branch-limit message: processes of the run and modules that use
        #: neon_branch_shared (``None`` until collected)
        self.workers = 1
        self.shared_modules: int | None = None
        #: the API was found unreachable while cleaning up: stop trying
        self.api_down = False
        #: the reset source is this run's migration branch (it expires: keep it alive)
        self.source_expires = False
        self._kept_alive = time.monotonic()

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

    def prepare(self, *, sweep_after: int) -> None:
        """Once per run, before any branch: check the project and parent, sweep stale branches.

        One listing serves all three. ``sweep_after``: see :meth:`sweep_stale`.
        """
        try:
            branches = self.client.list_branches(self.project_id)
        except NeonNotFoundError as exc:
            raise NeonConfigError(
                f"Neon project {self.project_id} not found (404) with the API key from "
                f"{self.client.key_source}: fix {self.settings.describe('project_id')}"
            ) from exc
        if self._parent_id is None:
            default = [b for b in branches if b.default]
            if default:
                self._parent_id = default[0].id
        elif not any(b.id == self._parent_id for b in branches):
            raise self._parent_not_found()
        if sweep_after:
            self.sweep_stale(branches, sweep_after)

    def sweep_stale(self, branches: list[Branch], max_age: int) -> list[str]:
        """Delete branches left by earlier runs; return their names.

        Only branches this plugin created (``pytest-neon-`` name *and* ``created-by``
        annotation), never ``pytest-neon-cache-*`` ones: those whose expiry passed, and
        those without an expiry created more than ``max_age`` seconds ago.
        """
        now = datetime.now(UTC)
        old = now - timedelta(seconds=max_age)
        stale = [
            b
            for b in branches
            if b.name.startswith(BRANCH_PREFIX)
            and not b.name.startswith(KEPT_PREFIX)
            and made_by_us(b)
            and b.annotations.get(RUN_ANNOTATION) != self.run_id
            and not (b.default or b.protected)
            and (
                (b.expires_at is not None and b.expires_at <= now)
                or (b.expires_at is None and b.created_at is not None and b.created_at <= old)
            )
        ]
        # newest first: a child goes before its parent
        stale.sort(key=lambda b: b.created_at or now, reverse=True)
        swept: list[str] = []
        for branch in stale:
            try:
                with self.phase("sweep"):
                    self.client.delete_branch(self.project_id, branch.id)
            except NeonError as exc:
                log.warning("could not sweep stale branch %s (%s): %s", branch.name, branch.id, exc)
                if api_unavailable(exc):
                    break
                continue
            log.info("swept stale branch %s (%s)", branch.name, branch.id)
            swept.append(branch.name)
        self.counters.branches_swept += len(swept)
        return swept

    def _parent_not_found(self) -> NeonConfigError:
        return NeonConfigError(
            f"parent branch {self._parent_id} not found in project {self.project_id}: "
            f"fix {self.settings.describe('parent_branch')}"
        )

    def limit_message(self, exc: NeonLimitError, name: str) -> str:
        """The branch-limit error: how many branches the run needs and what to do."""
        turns = self.settings.worker_branches
        workers = self.workers * turns
        per = f", {turns} each: --neon-worker-branches" if turns > 1 else ""
        if self.shared_modules is None:
            shared = "plus one per module using neon_branch_shared (at most one per worker)"
            needed = f"{workers + 1}+"
        else:
            count = min(workers, self.shared_modules)
            shared = f"{count} for modules using neon_branch_shared"
            needed = str(workers + 1 + count)
        return (
            f"Neon's branch limit is reached ({exc.neon_message or exc.code}) creating {name}: "
            f"this run needs up to {needed} branches at once ({workers} for workers{per}, "
            f"1 for migrations, {shared}); delete branches you no longer need "
            "(pytest-neon-* ones of crashed runs: --neon-sweep-after), run fewer xdist "
            "workers, or raise the project's branch limit (Neon plan)"
        )

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
                    raise self._parent_not_found() from exc
                raise
            except NeonLimitError as exc:
                raise exc.with_message(self.limit_message(exc, name)) from exc
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
            said = exc.neon_message.lower()
            database = f"database {self.settings.database!r}"
            role = f"role {self.settings.role!r}"
            if "role" in said and "database" not in said:
                what, fix = role, self.settings.describe("role")
            elif "database" in said and "role" not in said:
                what, fix = database, self.settings.describe("database")
            else:
                what, fix = f"{database} or {role}", "--neon-database / --neon-role"
            if fix == "default":
                fix = "--neon-database" if what == database else "--neon-role"
            raise NeonConfigError(
                f"{what} does not exist on branch {branch_id} (from parent "
                f"{self.parent_id}; Neon: {exc.neon_message}): fix {fix}"
            ) from exc

    def restore(self, branch: NeonBranch, source_id: str) -> None:
        """Bring ``branch`` to the current state of ``source_id`` (same connection string)."""
        with self.phase("reset"):
            try:
                result = self.client.restore_branch(
                    self.project_id, branch.branch_id, source_branch_id=source_id
                )
            except NeonNotFoundError as exc:
                name = self.created.get(branch.branch_id, branch.branch_id)
                raise NeonBranchGoneError(
                    f"branch {branch.branch_id} ({name}) or the branch it resets from "
                    f"({source_id}) no longer exists ({exc.neon_message or '404'}): it was "
                    "deleted outside this run, or it expired (raise --neon-branch-expiry); "
                    "leave pytest-neon-* branches alone while a run uses them, and rerun",
                    branch_id=branch.branch_id,
                ) from exc
            self.client.wait_for_operations(self.project_id, result.operations)

    def delete(self, branch_id: str) -> None:
        """Delete a branch this run created (already gone is fine)."""
        with self.phase("delete branch"):
            self.client.delete_branch(self.project_id, branch_id)
        with self._lock:
            self.created.pop(branch_id, None)

    # -- the worker branches ---------------------------------------------------------------

    def start(self) -> NeonBranch:
        """Create this process's (first) worker branch from the parent."""
        if self.worker_branch is None:
            self.worker_branch = self.create_branch(self.worker)
            self._slots.append(_Slot(self.worker_branch))
            self._current = self._slots[0]
        return self.worker_branch

    def adopt_source(self, source_id: str, *, expires: bool = False) -> None:
        """Use ``source_id`` (the migrated state) from now on; bring the worker branch there.

        ``expires``: the source is this run's migration branch, kept alive by this process.
        With ``worker_branches`` above 1, the other branches are made in the background.
        """
        if self.source_id is not None:
            return
        self.source_expires = expires
        branch = self.start()
        if source_id != self.parent_id:
            self.restore(branch, source_id)
            self._after_reset(branch)
        self.source_id = source_id
        for slot in self._slots:
            slot.dirty = False
        for n in range(1, self.settings.worker_branches):
            slot = _Slot(None)
            slot.pending = self._background(self._make_spare, slot, f"{self.worker}-{n + 1}")
            self._slots.append(slot)

    def _make_spare(self, slot: _Slot, suffix: str) -> bool:
        try:
            slot.branch = self.create_branch(suffix, source_id=self.source_id)
        except NeonError as exc:
            log.warning("pytest-neon: worker branch %s not made (%s): one fewer", suffix, exc)
        return False  # nothing to tell the listeners: nobody has used it yet

    def checkout(self) -> NeonBranch:
        """A worker branch in the migrated state: the last one used when it is clean.

        Otherwise another clean one, else the first whose background reset (or write check)
        ends: only the part still running is waited for. A dirty branch with no reset under
        way is reset now.
        """
        self.start()
        assert self._current is not None
        self._conclude_check(self._current)
        for other in self._slots:
            if other is self._current:
                continue
            if other.dirty and other.pending is None:  # its background reset failed: again
                other.pending = self._background(self._reset_now, other)
            elif other.pending and other.pending.done() and other.pending.exception() is None:
                self._settle(other)  # made or reset meanwhile: ready before the current one
        while True:
            slot = self._current
            if not slot.ready:
                slot = next((s for s in self._slots if s.ready), slot)
            if not slot.ready and len(self._slots) == 1:
                self._run_here(slot)
            if not slot.ready:
                busy = {s.pending: s for s in self._slots if s.pending is not None}
                if busy:
                    with self.phase("wait for reset"):
                        done, _ = wait(busy, return_when=FIRST_COMPLETED)
                    finished = [busy[f] for f in busy if f in done]
                    good = [s for s in finished if s.pending and s.pending.exception() is None]
                    if not good and len(finished) < len(busy):
                        for failed in finished:  # others may still end well: wait for them
                            self._set_aside(failed)
                        continue
                    slot = (good or finished)[0]  # a failure reaches the test only as a last resort
            self._settle(slot)  # a failed reset raises here; the branch stays dirty
            if slot.branch is not None:
                break
            self._slots.remove(slot)  # it could not be created
        if slot.dirty:
            self._reset_now(slot)
            slot.dirty = False
            self._after_reset(slot.branch)
        self._current = slot
        return slot.branch

    def _run_here(self, slot: _Slot) -> None:
        """Do ``slot``'s background work on this thread if no thread has started it yet.

        The caller would only wait for it: this saves two thread hand-offs.
        """
        pending = slot.pending
        job = self._jobs.pop(pending, None) if pending is not None else None
        if pending is None or job is None or not pending.cancel():
            return
        work, args = job
        done: Future[bool] = Future()
        try:
            done.set_result(work(*args))
        except Exception as exc:
            done.set_exception(exc)
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): maybe half done
            slot.pending = None
            slot.dirty = True
            raise
        slot.pending = done

    def _settle(self, slot: _Slot) -> None:
        """Take the result of ``slot``'s finished background work."""
        pending, slot.pending = slot.pending, None
        if pending is not None and pending.result() and slot.branch is not None:
            slot.dirty = False
            slot.failures = 0
            self._after_reset(slot.branch)

    def _set_aside(self, slot: _Slot) -> None:
        """``slot``'s background reset failed while other branches may do: note it; it is
        retried at a later checkout, and after three failures in a row it is given up."""
        pending, slot.pending = slot.pending, None
        error = pending.exception() if pending is not None else None
        slot.failures += 1
        name = slot.branch.branch_id if slot.branch else "?"
        if slot.failures >= MAX_RESET_FAILURES and len(self._slots) > 1:
            log.warning("pytest-neon: giving up worker branch %s: %s", name, error)
            self._slots.remove(slot)
            if self._current is slot:
                self._current = self._slots[0]
        else:
            log.warning("pytest-neon: reset of worker branch %s failed: %s", name, error)

    def keep_alive(self) -> None:
        """Every third of the expiry, push back the expiry of the branches still in use.

        The expiry is a safety net for crashed runs; without this, Neon would delete a
        branch a long run still uses: the migration branch, a module branch, or a worker
        branch whose tests stopped writing (only a reset restarts its clock).
        """
        expiry = self.settings.branch_expiry
        now = time.monotonic()
        if not expiry or now - self._kept_alive < expiry / 3:
            return
        self._kept_alive = now
        ids = list(self.created)
        if self.source_expires and self.source_id:
            ids.append(self.source_id)
        resetting = {
            s.branch.branch_id
            for s in self._slots
            if s.branch is not None and s.pending is not None and not s.pending.done()
        }
        ids = [b for b in ids if b not in resetting]  # a reset restarts the clock anyway
        expires_at = datetime.now(UTC) + timedelta(seconds=expiry)
        for branch_id in dict.fromkeys(ids):
            try:
                with self.phase("keep alive"):
                    self.client.set_branch_expiry(self.project_id, branch_id, expires_at)
            except NeonError as exc:
                log.warning("could not push back the expiry of branch %s: %s", branch_id, exc)

    def write_position(self) -> str | None:
        """The checked-out branch's WAL position, read on the plugin's own connection.

        A position kept from the end of the last check serves when nothing can have been
        written since (it is never later than the branch's clean state: a check that
        starts there sees at least every write made after it).
        """
        self.start()
        slot = self._current
        assert slot is not None
        assert slot.branch is not None
        if slot.probe is None:
            slot.probe = WriteProbe(slot.branch.connection_string, self.wal_inspector_url)
        position = slot.take_position()
        if position is not None:
            return position
        with self.phase("write check"):
            return slot.probe.position()

    def forget_position(self) -> None:
        """The last test may have left WAL on its branch that is not a change (work rolled
        back): the next write check must not start from a position kept before it."""
        if self._current is not None:
            self._current.take_position()

    def finish_test(self, before: str | None, *, force: bool = False) -> None:
        """After a readwrite test: reset its branch if it wrote (or ``force``).

        The write check is only sent here: the server answers it while pytest moves on.
        The answer is read before the next test (:meth:`between_tests`), which starts the
        reset in the background if there is one; the next test that needs the branch waits
        for what is left of it. An unknown position counts as written.
        """
        slot = self._current
        if slot is None or slot.branch is None:
            return
        if slot.dirty or slot.pending is not None:
            return  # a reset is needed or under way already (an integration asked for it)
        if force or slot.probe is None:
            self.mark_dirty()
            return
        slot.probe.start_check(before)

    def between_tests(self) -> None:
        """Before any test: read the last readwrite test's write check and start the reset
        it calls for in the background (the next test may not need the branch), and push
        back the branches' expiry when it is time."""
        if self._current is not None:
            self._conclude_check(self._current)
        self.keep_alive()

    def _conclude_check(self, slot: _Slot) -> None:
        """Read the answer of ``slot``'s write check; if its test wrote, the branch is dirty
        and its reset starts in the background."""
        started_at = slot.probe.check_started_at if slot.probe is not None else None
        if slot.probe is None or started_at is None:
            return
        with self.phase("write check"):
            wrote, after = slot.probe.finish_check()
        if not wrote:
            slot.keep_position(after, read_at=started_at)
            with self._lock:
                self.counters.resets_skipped += 1
            return
        if slot.probe.position_survives_reset:
            slot.keep_position(after, read_at=started_at)
        slot.dirty = True
        if slot.pending is None:
            slot.pending = self._background(self._reset_now, slot)

    def _reset_now(self, slot: _Slot) -> bool:
        assert slot.branch is not None
        moves = slot.probe is not None and not slot.probe.position_survives_reset
        if moves and slot.probe is not None:
            slot.probe.close()  # it is connected to the branch: the reset would cut it
        self.restore(slot.branch, self.source_id or self.parent_id)
        with self._lock:  # a reset; bringing a new branch to the source is not
            self.counters.resets_done += 1
        if moves and slot.probe is not None:
            # the branch's new position, read now, off the next test's path
            slot.keep_position(slot.probe.position())
        return True

    def _background(self, work: Callable[..., bool], *args: Any) -> Future[bool]:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max(1, self.settings.worker_branches), thread_name_prefix="pytest-neon-reset"
            )
        future = self._executor.submit(work, *args)
        self._jobs[future] = (work, args)  # for _run_here; forgotten once done
        future.add_done_callback(lambda f: self._jobs.pop(f, None))
        return future

    def add_reset_listener(self, listener: Callable[[NeonBranch], None]) -> None:
        """Call ``listener(branch)`` after every reset of a worker branch.

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
        """The last test may have written: reset its branch in the background.

        The next :meth:`checkout` waits for whatever is left of it, or takes another branch.
        """
        slot = self._current
        if slot is None or slot.branch is None:
            return
        if slot.probe is not None and slot.probe.check_started_at is not None:
            slot.probe.finish_check()  # reset anyway: its answer is moot
        slot.dirty = True
        if slot.pending is None:
            slot.pending = self._background(self._reset_now, slot)

    def shutdown(self) -> None:
        """Wait for background resets (their errors no longer matter); close connections."""
        for slot in self._slots:
            self._conclude_check(slot)
            pending, slot.pending = slot.pending, None
            if pending is not None:
                try:
                    pending.result()
                except Exception as exc:
                    log.debug("background work failed at the end of the run: %s", exc)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        for slot in self._slots:
            if slot.probe is not None:
                slot.probe.close()
                slot.probe = None

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

    def delete_created(self, *, keep_shared: bool = False) -> list[tuple[str, str]]:
        """Delete every branch this process created; return ``(id, error)`` for failures.

        ``keep_shared`` (an xdist worker) leaves the migration branch, which other workers
        may still reset from, to the controller's sweep at the end of the run.
        """
        failures: list[tuple[str, str]] = []
        shared = self.migration_branch.branch_id if keep_shared and self.migration_branch else ""
        todo = [b for b in reversed(list(self.created)) if b != shared]
        for i, branch_id in enumerate(todo):
            try:
                self.delete(branch_id)
            except NeonError as exc:
                failures.append((branch_id, str(exc)))
                if api_unavailable(exc):
                    # the others would wait as long and fail the same way
                    self.api_down = True
                    failures += [
                        (b, "not tried: the Neon API is unavailable") for b in todo[i + 1 :]
                    ]
                    break
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
        if self.api_down:
            return failures
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
