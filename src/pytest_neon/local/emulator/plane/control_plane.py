"""The :class:`ControlPlane` of one project: its parts, one per resource, over one shared
:class:`~pytest_neon.local.emulator.plane.context.PlaneContext`."""

from __future__ import annotations

from pytest_neon.local.emulator.faults import Faults
from pytest_neon.local.emulator.plane.account import Account
from pytest_neon.local.emulator.plane.branch_create import BranchCreation
from pytest_neon.local.emulator.plane.branches import Branches
from pytest_neon.local.emulator.plane.context import EndpointHosts, PlaneContext, PlaneSettings
from pytest_neon.local.emulator.plane.databases import Databases
from pytest_neon.local.emulator.plane.endpoint_access import EndpointAccess
from pytest_neon.local.emulator.plane.endpoints import Endpoints
from pytest_neon.local.emulator.plane.expiry import ExpirySweep
from pytest_neon.local.emulator.plane.operations import Operations
from pytest_neon.local.emulator.plane.projects import Projects
from pytest_neon.local.emulator.plane.restore import BranchRestore
from pytest_neon.local.emulator.plane.roles import Roles
from pytest_neon.local.emulator.sql.server import SqlServer
from pytest_neon.local.emulator.sql.spares import SparePool


class ControlPlane:
    """The emulated control plane of one project over one PostgreSQL server.

    The API's calls are on its parts: ``account`` (the user, ``GET /projects``),
    ``projects``, ``branches``, ``creation`` (create a
    branch), ``restore``, ``endpoints``, ``roles``, ``databases`` and ``operations``.
    """

    def __init__(
        self, server: SqlServer, project_id: str, *, faults: Faults, max_branches: int = 500
    ) -> None:
        self.settings = PlaneSettings(max_branches=max_branches)
        ctx = PlaneContext(server, project_id, faults=faults, settings=self.settings)
        self._ctx = ctx
        self.operations = Operations(ctx)
        self.projects = Projects(ctx)
        self.account = Account(ctx, self.projects)
        self.branches = Branches(ctx, self.operations)
        self.creation = BranchCreation(ctx, self.operations)
        self.restore = BranchRestore(ctx, self.operations)
        self.endpoints = Endpoints(ctx, self.operations)
        self.roles = Roles(ctx, self.operations)
        self.databases = Databases(ctx, self.operations)
        self._expiry = ExpirySweep(ctx, self.branches)
        self.endpoint_access = EndpointAccess(ctx)

    # --- lifecycle -----------------------------------------------------------------------------

    def open(self) -> None:
        """Connect, take the project lock, then resume the project or create it."""
        self.projects.open()

    def real_database(self, branch_id: str) -> str:
        """The real database holding branch ``branch_id``'s first database."""
        with self._ctx.lock:
            return self._ctx.branch(branch_id).databases[0].real_name

    def serve_endpoints(self, hosts: EndpointHosts | None) -> None:
        """Endpoints report ``hosts``' listeners from now on (``None``: the server's host)."""
        with self._ctx.lock:
            self._ctx.endpoint_hosts = hosts

    def close(self, *, drop_spares: bool = True) -> None:
        """Drop the spares (unless the whole project is dropped next); release the
        metadata connection (and with it the project lock)."""
        self._ctx.spares.close(drop=drop_spares)
        self._ctx.metadata.close()

    def drop_everything(self) -> None:
        """Drop every real database of the project, its metadata and unused roles."""
        self.projects.drop_everything()

    # --- expiry --------------------------------------------------------------------------------

    def sweep(self) -> int:
        """Delete every expired branch, as Neon's background job does; returns how many."""
        return self._expiry.sweep()

    def sweep_if_due(self) -> None:
        """Run :meth:`sweep` (called on each request: cheap when no branch has expired)."""
        self.sweep()

    # --- what the emulator and tests read or tune ----------------------------------------------

    @property
    def project_id(self) -> str:
        """The project this control plane serves."""
        return self._ctx.project_id

    @property
    def default_branch_id(self) -> str:
        """The id of the project's default branch."""
        with self._ctx.lock:
            return self._ctx.project.default_branch().id

    @property
    def spares(self) -> SparePool:
        """The spare copies made for restores."""
        return self._ctx.spares

    @property
    def max_branches(self) -> int:
        """How many branches the project may have (more: 422 ``BRANCHES_LIMIT_EXCEEDED``)."""
        return self.settings.max_branches

    @max_branches.setter
    def max_branches(self, value: int) -> None:
        self.settings.max_branches = value

    @property
    def clone_wait(self) -> float:
        """Seconds to retry a clone whose template is in use."""
        return self.settings.clone_wait

    @clone_wait.setter
    def clone_wait(self, value: float) -> None:
        self.settings.clone_wait = value

    @property
    def evict_after(self) -> float | None:
        """Seconds after which sessions left on a template are cut (``None``: never)."""
        return self.settings.evict_after

    @evict_after.setter
    def evict_after(self, value: float | None) -> None:
        self.settings.evict_after = value

    def clone_seconds(self) -> dict[str, dict[str, float]]:
        """Seconds per clone measured so far, by template database and ``STRATEGY``."""
        return self._ctx.databases.strategy.measured()
