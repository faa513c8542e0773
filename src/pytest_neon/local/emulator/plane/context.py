"""What the parts of one project's control plane share: the server and its real databases,
the project in memory and the lock that guards it, the metadata writer, settings, faults."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from pytest_neon.local.emulator import ids
from pytest_neon.local.emulator.api_errors import ApiError, unprocessable
from pytest_neon.local.emulator.faults import Faults
from pytest_neon.local.emulator.records import BranchRecord, ProjectRecord, RoleRecord
from pytest_neon.local.emulator.sql import metadata
from pytest_neon.local.emulator.sql.cluster_roles import ClusterRoles
from pytest_neon.local.emulator.sql.metadata_writer import MetadataWriter
from pytest_neon.local.emulator.sql.real_databases import RealDatabases
from pytest_neon.local.emulator.sql.server import SqlServer
from pytest_neon.local.emulator.sql.spares import SparePool
from pytest_neon.local.emulator.sql.swap import DatabaseSwapper


@dataclass
class PlaneSettings:
    """Limits and patience of a control plane (tests tune them while it serves)."""

    max_branches: int = 500
    clone_wait: float = 3.0  # seconds to retry a clone whose template is in use
    # then sessions left on the template are cut (PostgreSQL cannot copy it otherwise)
    evict_after: float | None = 1.0
    # real database names asked for up front, by branch name (one-database parents only)
    database_names: dict[str, str] = field(default_factory=dict)
    # real databases to copy instead of the parent's, by branch name (one-database parents
    # only): the kept server's migration cache, copied straight into a new branch
    database_seeds: dict[str, str] = field(default_factory=dict)


class EndpointHosts(Protocol):
    """Where each endpoint's ``host`` leads (the endpoint proxy's listeners)."""

    def host(self, endpoint_id: str) -> str:
        """``address:port`` of the endpoint's listener."""
        ...

    def close(self, endpoint_id: str) -> None:
        """The endpoint is gone: close its listener."""
        ...


class PlaneContext:
    """The state one project's control plane shares between its parts (one per resource).

    ``lock`` guards the project in memory; hold it to read or change a record.
    """

    def __init__(
        self, server: SqlServer, project_id: str, *, faults: Faults, settings: PlaneSettings
    ) -> None:
        self.server = server
        self.project_id = project_id
        self.faults = faults
        self.settings = settings
        self.lock = threading.RLock()
        self.comment = metadata.comment_for(project_id)
        self.metadata = MetadataWriter(server, project_id)
        self.databases = RealDatabases(server)
        self.swapper = DatabaseSwapper(server)
        self.roles = ClusterRoles(server)
        self.spares = SparePool(self.databases, self.swapper, self.comment)
        self._project: ProjectRecord | None = None
        #: the endpoints' listeners; ``None``: an endpoint's host is the server's
        self.endpoint_hosts: EndpointHosts | None = None

    @property
    def project(self) -> ProjectRecord:
        """The project (once the control plane is open)."""
        if self._project is None:
            raise RuntimeError("the control plane is not open")
        return self._project

    @property
    def is_open(self) -> bool:
        """Whether the project is loaded (or created)."""
        return self._project is not None

    def set_project(self, project: ProjectRecord) -> None:
        """Serve ``project`` from now on (when the control plane opens)."""
        self._project = project

    def branch(self, branch_id: str, what: str = "branch") -> BranchRecord:
        """The visible branch ``branch_id``, else a 404 naming it ``what``."""
        branch = self.project.branches.get(branch_id)
        if branch is None or not branch.visible:
            raise ApiError(404, f"{what} not found")
        return branch

    def new_branch_id(self, name: str | None) -> str:
        """An unused id for a new branch called ``name`` (``None``: named after its id),
        once the project may have it: a 409 for a name in use, a 422 at the branch limit
        (the caller holds the lock)."""
        branches = self.project.branches
        if name is not None and any(b.name == name for b in branches.values()):
            raise ApiError(409, "branch already exists")
        limit = self.settings.max_branches
        if len(branches) >= limit:
            raise unprocessable(
                f"branches limit exceeded: the project already has {len(branches)}"
                f" branches (limit {limit})",
                code="BRANCHES_LIMIT_EXCEEDED",
            )
        branch_id = ids.branch_id()
        while branch_id in branches:
            branch_id = ids.branch_id()
        return branch_id

    def endpoint_host(self, endpoint_id: str) -> str:
        """The ``host`` an endpoint reports: its listener, else the server's host."""
        if self.endpoint_hosts is not None:
            return self.endpoint_hosts.host(endpoint_id)
        return self.server.endpoint_host

    def endpoint_gone(self, endpoint_id: str) -> None:
        """Close the listener of an endpoint that was deleted (with its branch or alone)."""
        if self.endpoint_hosts is not None:
            self.endpoint_hosts.close(endpoint_id)

    def role(self, name: str) -> RoleRecord:
        """The project's role ``name``, else a 404."""
        role = self.project.roles.get(name)
        if role is None:
            raise ApiError(404, "role not found")
        return role
