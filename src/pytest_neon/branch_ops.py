"""Branch operations over the API client: create, restore, delete, with clear errors.

Every branch this process creates is registered here (for cleanup) and counted. Never
imports pytest.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from pytest_neon.clock import utcnow
from pytest_neon.config import Settings
from pytest_neon.counters import RunCounters
from pytest_neon.errors import (
    NeonBranchGoneError,
    NeonConfigError,
    NeonError,
    NeonLimitError,
    NeonNotFoundError,
)
from pytest_neon.naming import RUN_ANNOTATION, branch_name, made_by_us, run_annotations
from pytest_neon.neon_branch import NeonBranch, host_of, with_credentials
from pytest_neon.patience import Patience

if TYPE_CHECKING:
    from pytest_neon.api import NeonClient
    from pytest_neon.api.types import Branch, CreatedBranch

log = logging.getLogger("pytest_neon.branches")

T = TypeVar("T")

#: ``expires`` of :meth:`BranchOps.create`: the setting's expiry
SETTING = "setting"


class BranchOps:
    """Creates, restores and deletes the branches of one pytest process.

    ``parent_id``: the parent branch as another process of the run found it (else the
    setting, else the project's default branch, looked up once). ``workers``: processes
    of the run, for the branch-limit message.
    """

    def __init__(
        self,
        client: NeonClient | Callable[[], NeonClient],
        settings: Settings,
        *,
        run_id: str,
        counters: RunCounters,
        parent_id: str | None = None,
        workers: int = 1,
        login: tuple[str, str] | None = None,
    ) -> None:
        """``client``: the API client, or what makes it when first needed (a run that
        took over a parked project may never call the API); ``login``: (user, password)
        every connection string is given instead of the role's (the kept local server's
        run login)."""
        if not settings.project_id:
            raise NeonConfigError("no Neon project: set NEON_PROJECT_ID or --neon-project-id")
        self._client = None if callable(client) else client
        self._make_client = client if callable(client) else None
        self._client_lock = threading.Lock()
        self.settings = settings
        self.project_id: str = settings.project_id
        self.run_id = run_id
        self.counters = counters
        self.workers = workers
        self.login = login
        #: branches each worker takes turns on (``auto`` is decided with the project)
        self.turns: int = settings.worker_branches or 1
        #: modules that use neon_branch_shared (``None`` until collected)
        self.shared_modules: int | None = None
        self.created: dict[str, str] = {}  # branch id -> name, in creation order
        self._parent_id: str | None = settings.parent_branch or parent_id
        self._lock = threading.Lock()
        self._expiring: set[str] = set()  # branches this process gave an expiry
        #: branches created without waiting for their operations (see :meth:`wait_ready`)
        self._unsettled: dict[str, CreatedBranch] = {}
        self._settle_lock = threading.Lock()

    @property
    def client(self) -> NeonClient:
        """The API client (made now if it was not yet)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    assert self._make_client is not None
                    self._client = self._make_client()
        return self._client

    @property
    def client_made(self) -> NeonClient | None:
        """The API client, if it was made (``None``: the API was never called)."""
        return self._client

    # -- the parent ------------------------------------------------------------------------

    @property
    def parent_id(self) -> str:
        """The branch test branches come from: the setting, else the project's default."""
        if self._parent_id is None:
            self._parent_id = self._default_branch(self.client.list_branches(self.project_id))
        return self._parent_id

    def _default_branch(self, branches: list[Branch]) -> str:
        default = [b for b in branches if b.default]
        if not default:
            raise NeonConfigError(
                f"project {self.project_id} has no default branch; set "
                "--neon-parent-branch / NEON_PARENT_BRANCH_ID"
            )
        return default[0].id

    def check_project(self) -> list[Branch]:
        """List the project's branches once: check the project and the parent exist (and
        learn the default branch); return the listing for the sweep."""
        try:
            branches = self.client.list_branches(self.project_id)
        except NeonNotFoundError as exc:
            raise NeonConfigError(
                f"Neon project {self.project_id} not found (404) with the API key from "
                f"{self.client.key_source}: fix {self.settings.describe('project_id')}"
            ) from exc
        if self._parent_id is None:
            if any(b.default for b in branches):
                self._parent_id = self._default_branch(branches)
        elif not any(b.id == self._parent_id for b in branches):
            raise self._parent_not_found()
        return branches

    def _parent_not_found(self) -> NeonConfigError:
        return NeonConfigError(
            f"parent branch {self._parent_id} not found in project {self.project_id}: "
            f"fix {self.settings.describe('parent_branch')}"
        )

    def limit_message(self, exc: NeonLimitError, name: str, waited: float = 0.0) -> str:
        """The branch-limit error: how many branches the run needs, what other runs hold
        after ``waited`` seconds of waiting for them, and what to do."""
        turns = self.turns
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
            f"1 for migrations, {shared}){self._held_by_others(waited)}; delete branches "
            "you no longer need "
            "(pytest-neon-* ones of crashed runs: --neon-sweep-after), run fewer xdist "
            "workers, or raise the project's branch limit (Neon plan)"
        )

    def held_by_others(self, branches: list[Branch] | None = None) -> tuple[dict[str, int], int]:
        """Branches other live pytest-neon runs hold, by run id; and the project's count
        (of ``branches``, default: listed now).

        Their branches carry an expiry (kept in the future while the run lives); kept
        branches (migration caches) have none and are nobody's.
        """
        if branches is None:
            branches = self.client.list_branches(self.project_id)
        now = utcnow()
        runs: dict[str, int] = {}
        for b in branches:
            run = b.annotations.get(RUN_ANNOTATION)
            if made_by_us(b) and run and run != self.run_id and b.expires_at and b.expires_at > now:
                runs[run] = runs.get(run, 0) + 1
        return runs, len(branches)

    def _held_by_others(self, waited: float) -> str:
        """``; after waiting 300s …, 3 other pytest-neon run(s) hold 9 of … branches``."""
        if not waited:
            return ""
        try:
            runs, total = self.held_by_others()
        except NeonError:
            return f"; it waited {waited:.0f}s for other runs (--neon-wait-timeout)"
        return (
            f"; after waiting {waited:.0f}s for branches to be freed "
            f"(--neon-wait-timeout), {len(runs)} other pytest-neon "
            f"run(s) hold {sum(runs.values())} of the project's {total} branches"
        )

    def _others_may_free(self) -> bool:
        """Whether waiting can help: other live runs hold branches."""
        try:
            return bool(self.held_by_others()[0])
        except NeonError:
            return False

    def _retry_at_limit(self, attempt: Callable[[], T], failing: Callable[[], str]) -> T:
        """``attempt()``, tried again while the project's branch limit stops it and other
        runs hold branches they may free (with growing pauses, ``wait_timeout`` s at most);
        then its error, saying what the run needs and what others hold (``failing()``:
        the branch it was creating)."""
        patience = Patience(self.settings.wait_timeout, self.counters, "wait for branches")
        while True:
            try:
                return attempt()
            except NeonLimitError as exc:
                if patience.over or not self._others_may_free() or not patience.pause():
                    message = self.limit_message(exc, failing(), patience.waited)
                    raise exc.with_message(message) from exc
                log.info("branch limit reached: waiting for other runs to free branches")

    # -- create, restore, delete -----------------------------------------------------------

    def create(
        self,
        suffix: str,
        *,
        source_id: str | None = None,
        name: str | None = None,
        annotations: Mapping[str, str] | None = None,
        expires: bool = True,
        wait: bool = True,
        wait_for_room: bool = True,
    ) -> NeonBranch:
        """Create a branch from the parent, brought to ``source_id`` if given.

        By default an ephemeral branch of this run (``pytest-neon-<run>-<suffix>``, the
        run's annotations, the setting's expiry); ``name``, ``annotations`` and
        ``expires=False`` make another kind (the migration cache's). With ``wait=False``
        the branch comes back as soon as Neon has answered with its endpoint: its
        operations are waited for by :meth:`wait_ready`, when something needs the branch.
        At the project's branch limit it waits for other runs to free branches
        (``wait_timeout``), unless ``wait_for_room`` is false (a spare: one fewer will do).
        """
        parent = self.parent_id
        expiry = self.settings.branch_expiry if expires else 0
        name = name or branch_name(self.run_id, suffix)
        if annotations is None:
            annotations = run_annotations(self.run_id)
        with self.counters.phase("create branch"):

            def attempt() -> CreatedBranch:
                return self.client.create_branch(
                    self.project_id,
                    name=name,
                    parent_id=parent,
                    expires_at=utcnow() + timedelta(seconds=expiry) if expiry else None,
                    annotations=annotations,
                )

            try:
                if wait_for_room:
                    created = self._retry_at_limit(attempt, lambda: name)
                else:
                    try:
                        created = attempt()
                    except NeonLimitError as exc:
                        raise exc.with_message(self.limit_message(exc, name)) from exc
            except NeonNotFoundError as exc:
                if self.settings.parent_branch:
                    raise self._parent_not_found() from exc
                raise
            with self._lock:
                self.created[created.branch.id] = name
                if expiry:
                    self._expiring.add(created.branch.id)
            self.counters.add("branches_created")
            if wait or not created.endpoints:
                endpoint = self.client.settle(self.project_id, created)
            else:
                endpoint = created.endpoints[0]
                with self._settle_lock:
                    self._unsettled[created.branch.id] = created
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

    def create_together(self, suffixes: list[str], *, wait: bool) -> list[NeonBranch]:
        """The run's branches ``suffixes``, all or none: at the branch limit the ones made
        are deleted again and, while other runs hold branches, it waits (``wait_timeout``)
        and tries again. Holding part of what it needs while waiting for the rest would
        let runs that share a project wait for each other for ever."""
        trying = [suffixes[0]]

        def attempt() -> list[NeonBranch]:
            made: list[NeonBranch] = []
            try:
                for suffix in suffixes:
                    trying[0] = suffix
                    made.append(self.create(suffix, wait=wait, wait_for_room=False))
            except NeonLimitError:
                for branch in reversed(made):
                    with contextlib.suppress(NeonError):
                        self.delete(branch.branch_id)
                raise
            return made

        return self._retry_at_limit(attempt, lambda: branch_name(self.run_id, trying[0]))

    def attach(self, branch_id: str, suffix: str) -> NeonBranch:
        """A branch of this run made by another of its processes (the xdist controller
        makes the workers' branches), now this process's to use, keep alive and delete."""
        branch = self.look_up(branch_id)
        self.own(branch_id, suffix)
        return branch

    def look_up(self, branch_id: str) -> NeonBranch:
        """Branch ``branch_id`` of the project, with its endpoint and connection string."""
        endpoints = self.client.list_branch_endpoints(self.project_id, branch_id)
        if not endpoints:
            raise NeonConfigError(f"branch {branch_id} has no endpoint: rerun")
        uri = self._connection_uri(branch_id, endpoints[0].id)
        return NeonBranch(
            branch_id=branch_id,
            project_id=self.project_id,
            connection_string=uri,
            host=host_of(uri) or endpoints[0].host,
            parent_id=self.parent_id,
            endpoint_id=endpoints[0].id,
            database_name=self.settings.database,
            role_name=self.settings.role,
        )

    def wait_ready(self, branch_id: str, *, for_a_test: bool = True) -> None:
        """Wait for the operations of a branch made with ``create(wait=False)`` (once; a
        failure is raised again to the next caller). The summary's phase ``wait for new
        branch`` counts what tests waited for (``for_a_test``) while operations ran, not
        what cleanup did."""
        with self._settle_lock:
            created = self._unsettled.get(branch_id)
            if created is None:
                return
            running = any(not op.done for op in created.operations)
            with (
                self.counters.phase("wait for new branch")
                if for_a_test and running
                else contextlib.nullcontext()
            ):
                self.client.settle(self.project_id, created)
            del self._unsettled[branch_id]

    def _connection_uri(self, branch_id: str, endpoint_id: str) -> str:
        uri = self._role_connection_uri(branch_id, endpoint_id)
        return with_credentials(uri, *self.login) if self.login else uri

    def _role_connection_uri(self, branch_id: str, endpoint_id: str) -> str:
        try:
            return self.client.connection_uri(
                self.project_id,
                branch_id=branch_id,
                endpoint_id=endpoint_id,
                database_name=self.settings.database,
                role_name=self.settings.role,
            )
        except NeonNotFoundError as exc:
            raise self._missing_database_or_role(branch_id, exc) from exc

    def _missing_database_or_role(self, branch_id: str, exc: NeonNotFoundError) -> NeonConfigError:
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
        return NeonConfigError(
            f"{what} does not exist on branch {branch_id} (from parent "
            f"{self.parent_id}; Neon: {exc.neon_message}): fix {fix}"
        )

    def restore(self, branch: NeonBranch, source_id: str) -> None:
        """Bring ``branch`` to the current state of ``source_id`` (same connection string)."""
        self.wait_ready(branch.branch_id)
        with self.counters.phase("reset"):
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

    def create_kept_copy(
        self,
        name: str,
        *,
        annotations: Mapping[str, str],
        source_id: str,
        expires_at: datetime | None = None,
    ) -> str:
        """A branch ``name`` with the state of ``source_id``, kept across runs: no expiry
        (or ``expires_at``), never deleted by this run. Returns its id.

        Made from the parent and restored from ``source_id``: Neon gives a branch with an
        expiry (as the run's are) no children.
        """
        created = self.client.create_branch(
            self.project_id,
            name=name,
            parent_id=self.parent_id,
            annotations=annotations,
            expires_at=expires_at,
        )
        self.client.settle(self.project_id, created)
        self.counters.add("branches_created")
        result = self.client.restore_branch(
            self.project_id, created.branch.id, source_branch_id=source_id
        )
        self.client.wait_for_operations(self.project_id, result.operations)
        return created.branch.id

    def delete(self, branch_id: str) -> None:
        """Delete a branch this process created (already gone is fine)."""
        with self.counters.phase("delete branch"):
            with contextlib.suppress(NeonError):  # a failed create: deleted all the same
                # (Neon refuses, 423, while it is being made)
                self.wait_ready(branch_id, for_a_test=False)
            self.client.delete_branch(self.project_id, branch_id)
        with self._lock:
            self.created.pop(branch_id, None)

    def own(self, branch_id: str, suffix: str) -> None:
        """Count ``branch_id`` (made by another process of the run) as this process's."""
        with self._lock:
            self.created[branch_id] = branch_name(self.run_id, suffix)

    def forget(self, branch_id: str) -> None:
        """No longer count ``branch_id`` as this process's (it outlives the run)."""
        with self._lock:
            self.created.pop(branch_id, None)

    def keep(self, branch_id: str) -> None:
        """Remove ``branch_id``'s expiry, if this process gave it one: it outlives the run
        (a parked project's)."""
        if branch_id in self._expiring:
            self.client.clear_branch_expiry(self.project_id, branch_id)
            self._expiring.discard(branch_id)

    def set_expiry(self, branch_id: str, seconds: int) -> None:
        """Move ``branch_id``'s expiry to ``seconds`` from now."""
        expires_at = utcnow() + timedelta(seconds=seconds)
        with self.counters.phase("keep alive"):
            self.client.set_branch_expiry(self.project_id, branch_id, expires_at)
        with self._lock:
            self._expiring.add(branch_id)
