"""The emulator's in-memory model of one project, its time helpers and its API error."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

# RFC 3339 date-time: full date, 'T' (or space), time with seconds, optional fraction, zone.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """``moment`` as Neon writes timestamps: ``2024-02-26T12:00:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 date-time; raise ``ValueError`` for anything else."""
    if not _RFC3339.match(text):
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    normalized = text.upper().replace(" ", "T").replace("Z", "+00:00")
    fraction = re.search(r"\.(\d+)", normalized)
    if fraction and len(fraction.group(1)) > 6:  # Python keeps microseconds at most
        normalized = normalized.replace(fraction.group(0), "." + fraction.group(1)[:6])
    return datetime.fromisoformat(normalized).astimezone(UTC)


class ApiError(Exception):
    """An error answer of the API: HTTP status, Neon error ``code`` and message."""

    def __init__(
        self, status: int, message: str, code: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


CONFLICTING_OPERATIONS = (
    "project already has running conflicting operations, scheduling of new ones is prohibited"
)


def locked() -> ApiError:
    """The 423 Neon answers while a conflicting operation runs."""
    return ApiError(423, CONFLICTING_OPERATIONS)


@dataclass
class Role:
    """A PostgreSQL role of the project (a real, cluster-wide role with LOGIN)."""

    name: str
    password: str
    created_at: datetime


@dataclass
class Database:
    """A logical database of a branch and the real database that holds it."""

    name: str
    owner_name: str
    real_name: str
    created_at: datetime
    updated_at: datetime
    id: int = 0  # assigned by the metadata store


@dataclass
class Endpoint:
    """A read-write compute endpoint of a branch (the PostgreSQL server itself)."""

    id: str
    branch_id: str
    created_at: datetime
    updated_at: datetime


@dataclass
class Operation:
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
class Branch:
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
    databases: list[Database] = field(default_factory=list)
    endpoints: list[Endpoint] = field(default_factory=list)
    # Runtime only, never stored: hidden while being created, in-flight database work,
    # and how many clones currently use this branch as their template.
    visible: bool = True
    inflight: bool = False
    pins: int = 0

    def busy(self, now: datetime) -> bool:
        """Whether a mutating call on this branch conflicts with running work."""
        return self.inflight or now < self.busy_until

    def state(self, now: datetime) -> str:
        """The branch ``current_state`` at ``now``."""
        return self.busy_state if now < self.busy_until else "ready"

    def database(self, name: str) -> Database | None:
        """The logical database called ``name``, if any."""
        return next((db for db in self.databases if db.name == name), None)


@dataclass
class Project:
    """One emulated project: roles, branches and operations."""

    id: str
    created_at: datetime
    updated_at: datetime
    roles: dict[str, Role] = field(default_factory=dict)
    branches: dict[str, Branch] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)

    def default_branch(self) -> Branch:
        """The project's default branch."""
        return next(b for b in self.branches.values() if b.default)

    def children(self, branch_id: str) -> list[Branch]:
        """Branches (also ones still being created) whose parent is ``branch_id``."""
        return [b for b in self.branches.values() if b.parent_id == branch_id]
