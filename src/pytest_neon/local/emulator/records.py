"""The emulator's in-memory records of one project: roles, branches (with their databases
and endpoints) and operations. The metadata store keeps them; views turn them into JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: a JSON object, as requests and responses carry them
JSON = dict[str, Any]


@dataclass
class RoleRecord:
    """A PostgreSQL role of the project (a real, cluster-wide role with LOGIN)."""

    name: str
    password: str
    created_at: datetime


@dataclass
class DatabaseRecord:
    """A logical database of a branch and the real database that holds it."""

    name: str
    owner_name: str
    real_name: str
    created_at: datetime
    updated_at: datetime
    id: int = 0  # assigned by the metadata store


@dataclass
class EndpointRecord:
    """A compute endpoint of a branch (the PostgreSQL server itself): ``read_write`` (one
    per branch) or ``read_only`` (its sessions may not write)."""

    id: str
    branch_id: str
    created_at: datetime
    updated_at: datetime
    suspended: bool = False  # suspended through the API (not kept across restarts)
    type: str = "read_write"


@dataclass
class OperationRecord:
    """An operation; its status is computed from the time it finishes."""

    id: str
    branch_id: str
    endpoint_id: str | None
    action: str
    seq: int  # position in the batch: the first runs, later ones are scheduled
    created_at: datetime
    finish_at: datetime
    error: str | None = None

    def status(self, now: datetime) -> str:
        """Neon's status of this operation at ``now`` (a failing one fails when it ends)."""
        if now >= self.finish_at:
            return "finished" if self.error is None else "failed"
        return "running" if self.seq == 0 else "scheduling"


@dataclass
class BranchRecord:
    """A branch: metadata plus the real databases that hold its data."""

    id: str
    name: str
    parent_id: str | None
    default: bool
    protected: bool
    created_at: datetime
    updated_at: datetime
    busy_since: datetime
    busy_until: datetime
    busy_state: str  # state while its operations run: "init" or "resetting"
    expires_at: datetime | None = None
    ttl_seconds: int | None = None
    last_reset_at: datetime | None = None
    annotation: dict[str, str] = field(default_factory=dict)
    annotation_created_at: datetime | None = None
    annotation_updated_at: datetime | None = None
    databases: list[DatabaseRecord] = field(default_factory=list)
    endpoints: list[EndpointRecord] = field(default_factory=list)
    # Runtime only, never stored: hidden while being created, in-flight database work,
    # and how many clones currently use this branch as their template.
    visible: bool = True
    inflight: bool = False
    pins: int = 0

    @classmethod
    def starting(
        cls, branch_id: str, name: str, parent_id: str | None, now: datetime, **fields: Any
    ) -> BranchRecord:
        """A branch made ``now``, its first operations starting (``init``); ``fields``
        set the rest (``default``, ``protected``, ``visible``…)."""
        values: dict[str, Any] = {"default": False, "protected": False, **fields}
        return cls(
            id=branch_id,
            name=name,
            parent_id=parent_id,
            created_at=now,
            updated_at=now,
            busy_since=now,
            busy_until=now,
            busy_state="init",
            **values,
        )

    def busy(self, now: datetime) -> bool:
        """Whether a mutating call on this branch conflicts with running work."""
        return self.inflight or now < self.busy_until

    def state(self, now: datetime) -> str:
        """The branch ``current_state`` at ``now``."""
        return self.busy_state if now < self.busy_until else "ready"

    def database(self, name: str) -> DatabaseRecord | None:
        """The logical database called ``name``, if any."""
        return next((db for db in self.databases if db.name == name), None)

    @property
    def read_write(self) -> EndpointRecord | None:
        """The branch's read-write endpoint, if it has one."""
        return next((ep for ep in self.endpoints if ep.type == "read_write"), None)


@dataclass
class ProjectRecord:
    """One emulated project: roles, branches and operations."""

    id: str
    created_at: datetime
    updated_at: datetime
    roles: dict[str, RoleRecord] = field(default_factory=dict)
    branches: dict[str, BranchRecord] = field(default_factory=dict)
    operations: dict[str, OperationRecord] = field(default_factory=dict)

    def default_branch(self) -> BranchRecord:
        """The project's default branch."""
        return next(b for b in self.branches.values() if b.default)

    def children(self, branch_id: str) -> list[BranchRecord]:
        """Branches (also ones still being created) whose parent is ``branch_id``."""
        return [b for b in self.branches.values() if b.parent_id == branch_id]
