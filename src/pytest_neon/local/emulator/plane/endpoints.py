"""Endpoints: the compute endpoints of a branch (the PostgreSQL server): created, read,
moved to another branch, started, suspended, restarted and deleted."""

from __future__ import annotations

from datetime import datetime

from pytest_neon.local.emulator import ids, views
from pytest_neon.local.emulator.api_errors import ApiError, bad_request, locked
from pytest_neon.local.emulator.plane.context import PlaneContext
from pytest_neon.local.emulator.plane.operations import Operations, Steps
from pytest_neon.local.emulator.plane.params import json_object
from pytest_neon.local.emulator.records import JSON, BranchRecord, EndpointRecord, OperationRecord
from pytest_neon.local.emulator.sql import metadata
from pytest_neon.local.emulator.sql.server import Connection
from pytest_neon.local.emulator.timestamps import utcnow

#: what each call does: its operations, whether the compute ends up suspended, and
#: whether its sessions end (a suspend or a restart stops the compute)
_CALLS: dict[str, tuple[Steps, bool, bool]] = {
    "start": ([("start_compute", True)], False, False),
    "suspend": ([("suspend_compute", True)], True, True),
    "restart": ([("suspend_compute", True), ("start_compute", True)], False, True),
}


class Endpoints:
    """The project's endpoints: they come and go with their branches; started, suspended
    and restarted as operations (a suspended endpoint still takes connections: Neon
    starts it again on the first one)."""

    def __init__(self, ctx: PlaneContext, operations: Operations) -> None:
        self._ctx = ctx
        self._operations = operations

    def _find(self, endpoint_id: str) -> tuple[BranchRecord, EndpointRecord]:
        for b in self._ctx.project.branches.values():
            for ep in b.endpoints:
                if ep.id == endpoint_id and b.visible:
                    return b, ep
        raise ApiError(404, "endpoint not found")

    def create_endpoint(self, body: JSON) -> JSON:
        """``EndpointOperations``: a new endpoint of a branch: ``read_only`` (its
        connection strings open sessions that may not write; any number), or the
        branch's ``read_write`` one if it has none."""
        spec = json_object(body.get("endpoint"), "endpoint")
        branch_id, kind = spec.get("branch_id"), spec.get("type")
        if not isinstance(branch_id, str) or not branch_id:
            raise bad_request("endpoint.branch_id is required")
        if kind not in ("read_write", "read_only"):
            raise bad_request("endpoint.type must be read_write or read_only")
        ctx = self._ctx
        now = utcnow()
        with ctx.lock:
            branch = ctx.branch(branch_id)
            if kind == "read_write" and branch.read_write is not None:
                raise ApiError(409, f"branch {branch.id} already has a read_write endpoint")
            if branch.busy(now):
                raise locked()
            ep = EndpointRecord(ids.endpoint_id(), branch.id, now, now, type=kind)
            branch.endpoints.append(ep)
            ops = self._operations.start(branch, [("start_compute", True)], now, ep)

            def change(conn: Connection) -> None:
                metadata.insert_endpoint(conn, ctx.project_id, ep)
                metadata.insert_operations(conn, ctx.project_id, ops)

            ctx.metadata.persist(change)
            return self._answer(branch, ep, ops, now)

    def update_endpoint(self, endpoint_id: str, body: JSON) -> JSON:
        """``EndpointOperations``: ``branch_id`` moves the endpoint to another branch (its
        sessions end; a branch has one ``read_write`` endpoint at most); other settings
        are taken and kept nowhere (a compute here has no size and no pooler)."""
        spec = json_object(body.get("endpoint"), "endpoint")
        moved = spec.get("branch_id")
        if moved is not None and (not isinstance(moved, str) or not moved):
            raise bad_request("endpoint.branch_id must be a branch id")
        ctx = self._ctx
        now = utcnow()
        with ctx.lock:
            branch, ep = self._find(endpoint_id)
            if moved is None or moved == branch.id:
                ep.updated_at = now
                return self._answer(branch, ep, [], now)
            target = ctx.branch(moved)
            if ep.type == "read_write" and target.read_write is not None:
                raise ApiError(409, f"branch {target.id} already has a read_write endpoint")
            if branch.busy(now) or target.busy(now):
                raise locked()
            self._stop_compute(branch)
            branch.endpoints.remove(ep)
            ep.branch_id, ep.updated_at, ep.suspended = target.id, now, False
            target.endpoints.append(ep)
            steps: Steps = [("suspend_compute", True), ("start_compute", True)]
            ops = self._operations.start(target, steps, now, ep)

            def change(conn: Connection) -> None:
                metadata.move_endpoint(conn, ctx.project_id, ep)
                metadata.insert_operations(conn, ctx.project_id, ops)

            ctx.metadata.persist(change)
            return self._answer(target, ep, ops, now)

    def delete_endpoint(self, endpoint_id: str) -> JSON:
        """``EndpointOperations``: the endpoint goes (its sessions end)."""
        ctx = self._ctx
        now = utcnow()
        with ctx.lock:
            branch, ep = self._find(endpoint_id)
            if branch.busy(now):
                raise locked()
            if ep.type == "read_write" or len(branch.endpoints) == 1:
                self._stop_compute(branch)
            ops = self._operations.start(branch, [("suspend_compute", True)], now, ep)
            branch.endpoints.remove(ep)
            ctx.endpoint_gone(ep.id)

            def change(conn: Connection) -> None:
                metadata.delete_endpoint(conn, ctx.project_id, ep.id)
                metadata.insert_operations(conn, ctx.project_id, ops)

            ctx.metadata.persist(change)
            return self._answer(branch, ep, ops, now)

    def _stop_compute(self, branch: BranchRecord) -> None:
        """End the sessions on ``branch``'s databases (its compute stops)."""
        self._ctx.databases.close_sessions([db.real_name for db in branch.databases])

    def _answer(
        self, branch: BranchRecord, ep: EndpointRecord, ops: list[OperationRecord], now: datetime
    ) -> JSON:
        ctx = self._ctx
        return {
            "endpoint": views.endpoint_view(
                ctx.project_id, branch, ep, ctx.endpoint_host(ep.id), now
            ),
            "operations": self._operations.views_of(ops, now),
        }

    def act(self, endpoint_id: str, call: str) -> JSON:
        """``EndpointOperations`` of ``start``, ``suspend`` or ``restart``."""
        steps, suspended, ends_sessions = _CALLS[call]
        ctx = self._ctx
        now = utcnow()
        with ctx.lock:
            branch, ep = self._find(endpoint_id)
            if branch.busy(now):
                raise locked()
            if ends_sessions:
                self._stop_compute(branch)
            ep.suspended, ep.updated_at = suspended, now
            ops = self._operations.start(branch, steps, now, ep)
            ctx.metadata.persist(lambda conn: metadata.insert_operations(conn, ctx.project_id, ops))
            return self._answer(branch, ep, ops, now)

    def branch_endpoints(self, branch_id: str) -> JSON:
        """``EndpointsResponse`` of one branch."""
        ctx = self._ctx
        now = utcnow()
        with ctx.lock:
            b = ctx.branch(branch_id)
            return {
                "endpoints": [
                    views.endpoint_view(ctx.project_id, b, ep, ctx.endpoint_host(ep.id), now)
                    for ep in b.endpoints
                ]
            }

    def project_endpoints(self) -> JSON:
        """``EndpointsResponse`` of the whole project."""
        ctx = self._ctx
        now = utcnow()
        with ctx.lock:
            return {
                "endpoints": [
                    views.endpoint_view(ctx.project_id, b, ep, ctx.endpoint_host(ep.id), now)
                    for b in ctx.project.branches.values()
                    if b.visible
                    for ep in b.endpoints
                ]
            }

    def get_endpoint(self, endpoint_id: str) -> JSON:
        """``EndpointResponse``."""
        ctx = self._ctx
        now = utcnow()
        with ctx.lock:
            branch, ep = self._find(endpoint_id)
            host = ctx.endpoint_host(ep.id)
            return {"endpoint": views.endpoint_view(ctx.project_id, branch, ep, host, now)}
