"""Creating a branch: check the request, reserve the branch (hidden) and pin its parent,
clone every database of the parent, then show the branch (a ``CreatedBranch``)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pytest_neon.local.emulator import ids, views
from pytest_neon.local.emulator.api_errors import (
    bad_request,
    locked,
    unprocessable,
)
from pytest_neon.local.emulator.plane.cloning import CloneJob, copy_in, plan_copies
from pytest_neon.local.emulator.plane.context import PlaneContext
from pytest_neon.local.emulator.plane.operations import Operations
from pytest_neon.local.emulator.plane.params import expiry, json_object, optional_string
from pytest_neon.local.emulator.records import (
    JSON,
    BranchRecord,
    EndpointRecord,
    OperationRecord,
)
from pytest_neon.local.emulator.timestamps import utcnow

log = logging.getLogger("pytest_neon.emulator")


@dataclass(frozen=True)
class _Wanted:
    """What a create request asks for (checked, except the parent, which is checked with
    the project)."""

    parent_id: str | None  # None: the default branch
    name: str | None
    protected: bool
    expires_at: datetime | None
    endpoint: bool  # a read_write endpoint
    annotation: dict[str, str]


class BranchCreation:
    """``POST /branches``."""

    def __init__(self, ctx: PlaneContext, operations: Operations) -> None:
        self._ctx = ctx
        self._operations = operations

    def create_branch(self, body: JSON) -> JSON:
        """Create a branch: clone every database of the parent. Returns a ``CreatedBranch``."""
        now = utcnow()
        wanted = _wanted(body, now)
        with self._ctx.lock:
            parent, branch_id = self._parent_for(wanted, now)
            branch = self._new_record(wanted, parent, branch_id, now)
            if self._ctx.faults.operation_fails():
                self._operations.mark_busy(branch, "init", now)
                ops = self._operations.start_failing(branch, [("create_branch", False)], now)
                return self._created_view(branch, ops, now, roles=False)
            clones = self._reserve(branch, parent, now)
        ops, done = self._copy_in(branch, parent, clones)
        log.info("created branch %s (%s) from %s", branch.id, branch.name, parent.id)
        return self._created_view(branch, ops, done)

    def _parent_for(self, wanted: _Wanted, now: datetime) -> tuple[BranchRecord, str]:
        """The parent branch and the new branch's id, once the project may have it (under
        the lock)."""
        project = self._ctx.project
        parent_id = wanted.parent_id or project.default_branch().id
        parent = self._ctx.branch(parent_id, "parent branch")
        if parent.expires_at is not None:
            raise unprocessable(
                f"cannot create a child of branch {parent.id}:"
                " a branch with an expiration time cannot have children"
            )
        branch_id = self._ctx.new_branch_id(wanted.name)
        if parent.busy(now):
            raise locked()
        return parent, branch_id

    def _new_record(
        self, wanted: _Wanted, parent: BranchRecord, branch_id: str, now: datetime
    ) -> BranchRecord:
        """The new branch, hidden and in flight until its databases are made."""
        expires_at = wanted.expires_at
        branch = BranchRecord.starting(
            branch_id,
            wanted.name or branch_id,
            parent.id,
            now,
            protected=wanted.protected,
            expires_at=expires_at,
            ttl_seconds=round((expires_at - now).total_seconds()) if expires_at else None,
            annotation=wanted.annotation,
            annotation_created_at=now if wanted.annotation else None,
            annotation_updated_at=now if wanted.annotation else None,
            visible=False,
            inflight=True,
        )
        if wanted.endpoint:
            branch.endpoints.append(EndpointRecord(ids.endpoint_id(), branch_id, now, now))
        return branch

    def _reserve(self, branch: BranchRecord, parent: BranchRecord, now: datetime) -> list[CloneJob]:
        """Plan a copy of each of the parent's databases; hold the branch's place and pin
        the parent (it is being copied)."""
        settings = self._ctx.settings
        clones = plan_copies(
            branch,
            parent,
            now,
            real_name=settings.database_names.pop(branch.name, None),
            template=settings.database_seeds.pop(branch.name, None),
        )
        self._ctx.project.branches[branch.id] = branch
        parent.pins += 1
        return clones

    def _copy_in(
        self, branch: BranchRecord, parent: BranchRecord, clones: list[CloneJob]
    ) -> tuple[list[OperationRecord], datetime]:
        """Make the copies, store the branch with its operations and make it visible; on
        failure, forget it and drop the copies. Returns the operations and when."""
        ctx = self._ctx
        made: list[datetime] = []

        def finish() -> list[OperationRecord]:
            made.append(utcnow())
            self._operations.mark_busy(branch, "init", made[0])
            return self._operations.start(
                branch, [("create_branch", False), ("start_compute", True)], made[0]
            )

        try:
            ops = copy_in(ctx, branch, clones, finish=finish)
        finally:
            with ctx.lock:
                parent.pins -= 1
        return ops, made[0]

    def _created_view(
        self, branch: BranchRecord, ops: list[OperationRecord], now: datetime, *, roles: bool = True
    ) -> JSON:
        ctx = self._ctx
        with ctx.lock:
            roles_ = list(ctx.project.roles.values()) if roles else []
            host = ctx.server.endpoint_host
            body: JSON = {
                "branch": views.branch_view(ctx.project_id, branch, now),
                "endpoints": [
                    views.endpoint_view(ctx.project_id, branch, ep, ctx.endpoint_host(ep.id), now)
                    for ep in branch.endpoints
                ],
                "operations": self._operations.views_of(ops, now),
                "roles": [views.role_view(branch.id, r) for r in roles_],
                "databases": [views.database_view(branch.id, db) for db in branch.databases],
            }
            if branch.endpoints and len(roles_) == 1 and len(branch.databases) == 1:
                role, db = roles_[0], branch.databases[0]
                body["connection_uris"] = [
                    {
                        "connection_uri": ctx.server.dsn(role.name, role.password, db.real_name),
                        "connection_parameters": {
                            "database": db.real_name,
                            "password": role.password,
                            "role": role.name,
                            "host": host,
                            "pooler_host": host,
                        },
                    }
                ]
            return body


def _wanted(body: JSON, now: datetime) -> _Wanted:
    """Check a create request (``BranchCreateRequest``) as far as it goes without the project:
    each field has its JSON type (a 400 naming the field otherwise)."""
    spec = json_object(body.get("branch", {}), "branch")
    # "If omitted or empty, the branch will be created from the project's default branch."
    parent_id = optional_string(spec.get("parent_id"), "branch.parent_id") or None
    for unsupported in ("parent_lsn", "parent_timestamp"):
        if optional_string(spec.get(unsupported), f"branch.{unsupported}") is not None:
            raise bad_request(
                f"branch.{unsupported} is not supported by the emulator (branch from head)"
            )
    if optional_string(spec.get("init_source"), "branch.init_source") not in (None, "parent-data"):
        raise bad_request("branch.init_source must be parent-data (schema-only is not emulated)")
    archived = spec.get("archived")
    if archived is not None and not isinstance(archived, bool):
        raise bad_request("branch.archived must be a boolean")
    if archived:
        raise bad_request("archived branches are not supported by the emulator")
    name = spec.get("name")
    if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 256):
        raise bad_request("branch.name must be a string of 1 to 256 characters")
    protected = spec.get("protected", False)
    if not isinstance(protected, bool):
        raise bad_request("branch.protected must be a boolean")
    raw_expiry = spec.get("expires_at")
    expires_at = None if raw_expiry is None else expiry(raw_expiry, now, "branch.expires_at")
    if expires_at is not None and protected:
        raise bad_request("a protected branch cannot have an expiration time")
    endpoint = _wants_endpoint(body.get("endpoints"))
    annotation = _annotation(body.get("annotation_value"))
    return _Wanted(parent_id, name, protected, expires_at, endpoint, annotation)


#: endpoint options the emulator accepts but ignores: what JSON each must be, and its types
_ENDPOINT_OPTIONS: dict[str, tuple[str, tuple[type, ...]]] = {
    "autoscaling_limit_min_cu": ("a number", (int, float)),
    "autoscaling_limit_max_cu": ("a number", (int, float)),
    "suspend_timeout_seconds": ("an integer", (int,)),
    "provisioner": ("a string", (str,)),
    "settings": ("a JSON object", (dict,)),
}


def _wants_endpoint(endpoints: Any) -> bool:
    """Whether the request asks for the (one, read_write) endpoint the emulator supports."""
    if endpoints is None:
        return False
    if not isinstance(endpoints, list):
        raise bad_request("endpoints must be a list of endpoint options")
    endpoint_types = []
    for i, ep in enumerate(endpoints):
        options = json_object(ep, f"endpoints[{i}]")
        ep_type = options.get("type")
        if ep_type not in ("read_write", "read_only"):
            raise bad_request(f"endpoints[{i}].type must be read_write or read_only")
        if ep_type == "read_only":
            raise bad_request("read_only endpoints are not supported by the emulator")
        for option, (kind, types) in _ENDPOINT_OPTIONS.items():
            value = options.get(option)
            if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
                raise bad_request(f"endpoints[{i}].{option} must be {kind}")
        endpoint_types.append(ep_type)
    if len(endpoint_types) > 1:
        raise bad_request("a branch can have only one read_write endpoint")
    return bool(endpoint_types)


def _annotation(value: Any) -> dict[str, str]:
    """The ``annotation_value`` (``AnnotationValueData``): at most 50 keys, string values."""
    if value is None:
        return {}
    value = json_object(value, "annotation_value")
    if len(value) > 50:
        raise bad_request("annotation_value must have at most 50 keys")
    for key, item in value.items():
        if not isinstance(item, str):
            raise bad_request(f"annotation_value[{json.dumps(key)}] must be a string")
    return dict(value)
