"""Branch operations over the API client: create, restore, delete, with clear errors.

Every branch this process creates is registered here (for cleanup) and counted. Never
imports pytest.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from pytest_neon.api import NeonClient
from pytest_neon.api.types import Branch, CreatedBranch
from pytest_neon.config import Settings
from pytest_neon.counters import RunCounters
from pytest_neon.errors import (
    NeonBranchGoneError,
    NeonConfigError,
    NeonError,
    NeonLimitError,
    NeonNotFoundError,
)
from pytest_neon.naming import branch_name, run_annotations
from pytest_neon.neon_branch import NeonBranch, host_of, with_credentials

log = logging.getLogger("pytest_neon.branches")

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
        client: NeonClient,
        settings: Settings,
        *,
        run_id: str,
        counters: RunCounters,
        parent_id: str | None = None,
        workers: int = 1,
        login: tuple[str, str] | None = None,
    ) -> None:
        """``login``: (user, password) every connection string is given instead of the
        role's (the kept local server's run login)."""
        if not settings.project_id:
            raise NeonConfigError("no Neon project: set NEON_PROJECT_ID or --neon-project-id")
        self.client = client
        self.settings = settings
        self.project_id: str = settings.project_id
        self.run_id = run_id
        self.counters = counters
        self.workers = workers
        self.login = login
        #: modules that use neon_branch_shared (``None`` until collected)
        self.shared_modules: int | None = None
        self.created: dict[str, str] = {}  # branch id -> name, in creation order
        self._parent_id: str | None = settings.parent_branch or parent_id
        self._lock = threading.Lock()
        #: branches created without waiting for their operations (see :meth:`wait_ready`)
        self._unsettled: dict[str, CreatedBranch] = {}
        self._settle_lock = threading.Lock()

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
    ) -> NeonBranch:
        """Create a branch from the parent, brought to ``source_id`` if given.

        By default an ephemeral branch of this run (``pytest-neon-<run>-<suffix>``, the
        run's annotations, the setting's expiry); ``name``, ``annotations`` and
        ``expires=False`` make another kind (the migration cache's). With ``wait=False``
        the branch comes back as soon as Neon has answered with its endpoint: its
        operations are waited for by :meth:`wait_ready`, when something needs the branch.
        """
        parent = self.parent_id
        expiry = self.settings.branch_expiry if expires else 0
        name = name or branch_name(self.run_id, suffix)
        if annotations is None:
            annotations = run_annotations(self.run_id)
        with self.counters.phase("create branch"):
            try:
                created = self.client.create_branch(
                    self.project_id,
                    name=name,
                    parent_id=parent,
                    expires_at=datetime.now(UTC) + timedelta(seconds=expiry) if expiry else None,
                    annotations=run_annotations(self.run_id)
                    if annotations is None
                    else annotations,
                )
            except NeonNotFoundError as exc:
                if self.settings.parent_branch:
                    raise self._parent_not_found() from exc
                raise
            except NeonLimitError as exc:
                raise exc.with_message(self.limit_message(exc, name)) from exc
            with self._lock:
                self.created[created.branch.id] = name
            self.counters.add("branches_created")
            if wait or not created.endpoints or source_id:
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

    def wait_ready(self, branch_id: str, *, for_a_test: bool = True) -> None:
        """Wait for the operations of a branch made with ``create(wait=False)`` (once; a
        failure is raised again to the next caller). The summary's phase ``wait for new
        branch`` counts what tests waited (``for_a_test``), not what cleanup did."""
        with self._settle_lock:
            created = self._unsettled.get(branch_id)
            if created is None:
                return
            with (
                self.counters.phase("wait for new branch")
                if for_a_test
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

    def create_kept_copy(self, name: str, *, annotations: Mapping[str, str], source_id: str) -> str:
        """A branch ``name`` with the state of ``source_id``, kept across runs: no expiry,
        never deleted by this run. Returns its id."""
        created = self.client.create_branch(
            self.project_id, name=name, parent_id=self.parent_id, annotations=annotations
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

    def set_expiry(self, branch_id: str, seconds: int) -> None:
        """Move ``branch_id``'s expiry to ``seconds`` from now."""
        expires_at = datetime.now(UTC) + timedelta(seconds=seconds)
        with self.counters.phase("keep alive"):
            self.client.set_branch_expiry(self.project_id, branch_id, expires_at)
