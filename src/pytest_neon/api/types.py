"""Typed views of the Neon API v2 objects pytest-neon uses.

Each ``from_json`` reads only the fields the project needs and ignores the rest, so new
fields and new enum values that Neon adds never break parsing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

JSON = dict[str, Any]  # a JSON object, as the API sends and takes it

#: Operation states after which nothing more happens.
TERMINAL_OK = frozenset({"finished", "skipped", "cancelled"})
#: Operation states that mean the operation did not do its job.
TERMINAL_FAILED = frozenset({"failed", "error"})


def _str(data: JSON, key: str, default: str = "") -> str:
    value = data.get(key)
    return value if isinstance(value, str) else default


def _opt_str(data: JSON, key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and value else None


def parse_time(value: object) -> datetime | None:
    """Parse an RFC 3339 timestamp as Neon sends it; ``None`` when absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Project:
    """A Neon project."""

    id: str
    name: str
    branches_limit: int | None = None  # the owner's (plan's) branches per project

    @classmethod
    def from_json(cls, data: JSON) -> Project:
        """Build from the ``project`` object of a project response."""
        owner = data.get("owner")
        limit = owner.get("branches_limit") if isinstance(owner, dict) else None
        return cls(
            id=_str(data, "id"),
            name=_str(data, "name"),
            branches_limit=limit if type(limit) is int else None,
        )


@dataclass(frozen=True)
class Branch:
    """A Neon branch."""

    id: str
    project_id: str
    name: str
    parent_id: str | None = None
    current_state: str = ""
    default: bool = False
    protected: bool = False
    created_at: datetime | None = None
    expires_at: datetime | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: JSON, annotation: JSON | None = None) -> Branch:
        """Build from a ``branch`` object and, optionally, its annotation object."""
        value = (annotation or {}).get("value")
        annotations = {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
        return cls(
            id=_str(data, "id"),
            project_id=_str(data, "project_id"),
            name=_str(data, "name"),
            parent_id=_opt_str(data, "parent_id"),
            current_state=_str(data, "current_state"),
            default=bool(data.get("default", False)),
            protected=bool(data.get("protected", False)),
            created_at=parse_time(data.get("created_at")),
            expires_at=parse_time(data.get("expires_at")),
            annotations=annotations,
        )


@dataclass(frozen=True)
class Endpoint:
    """A compute endpoint of a branch."""

    id: str
    branch_id: str
    host: str
    type: str
    current_state: str

    @property
    def ready(self) -> bool:
        """True once it accepts connections (``idle`` computes start on connect)."""
        return self.current_state in ("active", "idle")

    @classmethod
    def from_json(cls, data: JSON) -> Endpoint:
        """Build from an ``endpoint`` object."""
        return cls(
            id=_str(data, "id"),
            branch_id=_str(data, "branch_id"),
            host=_str(data, "host"),
            type=_str(data, "type"),
            current_state=_str(data, "current_state"),
        )


@dataclass(frozen=True)
class Operation:
    """A control-plane operation started by a mutating call."""

    id: str
    project_id: str
    action: str
    status: str
    branch_id: str | None = None
    endpoint_id: str | None = None
    error: str | None = None
    duration_ms: int | None = None  # total_duration_ms: how long it ran, once it ended

    @classmethod
    def from_json(cls, data: JSON) -> Operation:
        """Build from an ``operation`` object."""
        duration = data.get("total_duration_ms")
        return cls(
            id=_str(data, "id"),
            project_id=_str(data, "project_id"),
            action=_str(data, "action"),
            status=_str(data, "status"),
            branch_id=_opt_str(data, "branch_id"),
            endpoint_id=_opt_str(data, "endpoint_id"),
            error=_opt_str(data, "error"),
            duration_ms=duration if isinstance(duration, int) else None,
        )

    @property
    def done(self) -> bool:
        """True once nothing more will happen to this operation."""
        return self.status in TERMINAL_OK or self.status in TERMINAL_FAILED

    @property
    def failed(self) -> bool:
        """True when the operation ended without doing its job."""
        return self.status in TERMINAL_FAILED


def _objects(data: JSON, key: str) -> list[JSON]:
    items = data.get(key)
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


@dataclass(frozen=True)
class BranchOperations:
    """A branch together with the operations a call on it started."""

    branch: Branch
    operations: tuple[Operation, ...]

    @classmethod
    def from_json(cls, data: JSON) -> BranchOperations:
        """Build from a ``BranchOperations`` response body."""
        return cls(
            branch=Branch.from_json(data.get("branch") or {}),
            operations=tuple(Operation.from_json(o) for o in _objects(data, "operations")),
        )


@dataclass(frozen=True)
class CreatedBranch:
    """The answer to a branch creation."""

    branch: Branch
    endpoints: tuple[Endpoint, ...]
    operations: tuple[Operation, ...]

    @classmethod
    def from_json(cls, data: JSON) -> CreatedBranch:
        """Build from a ``CreatedBranch`` response body."""
        return cls(
            branch=Branch.from_json(data.get("branch") or {}),
            endpoints=tuple(Endpoint.from_json(e) for e in _objects(data, "endpoints")),
            operations=tuple(Operation.from_json(o) for o in _objects(data, "operations")),
        )
