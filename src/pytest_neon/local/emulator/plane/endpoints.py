"""Endpoints: the one read-write compute endpoint of a branch (the PostgreSQL server):
read, and started, suspended or restarted."""

from __future__ import annotations

from pytest_neon.local.emulator import views
from pytest_neon.local.emulator.api_errors import ApiError, locked
from pytest_neon.local.emulator.plane.context import PlaneContext
from pytest_neon.local.emulator.plane.operations import Operations, Steps
from pytest_neon.local.emulator.records import JSON, BranchRecord, EndpointRecord
from pytest_neon.local.emulator.sql import metadata
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
                ctx.databases.close_sessions([db.real_name for db in branch.databases])
            ep.suspended, ep.updated_at = suspended, now
            ops = self._operations.start(branch, steps, now)
            ctx.metadata.persist(lambda conn: metadata.insert_operations(conn, ctx.project_id, ops))
            return {
                "endpoint": views.endpoint_view(
                    ctx.project_id, branch, ep, ctx.server.endpoint_host, now
                ),
                "operations": self._operations.views_of(ops, now),
            }

    def branch_endpoints(self, branch_id: str) -> JSON:
        """``EndpointsResponse`` of one branch."""
        ctx = self._ctx
        now = utcnow()
        with ctx.lock:
            b = ctx.branch(branch_id)
            host = ctx.server.endpoint_host
            return {
                "endpoints": [
                    views.endpoint_view(ctx.project_id, b, ep, host, now) for ep in b.endpoints
                ]
            }

    def project_endpoints(self) -> JSON:
        """``EndpointsResponse`` of the whole project."""
        ctx = self._ctx
        now = utcnow()
        with ctx.lock:
            host = ctx.server.endpoint_host
            return {
                "endpoints": [
                    views.endpoint_view(ctx.project_id, b, ep, host, now)
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
            for b in ctx.project.branches.values():
                for ep in b.endpoints:
                    if ep.id == endpoint_id and b.visible:
                        return {
                            "endpoint": views.endpoint_view(
                                ctx.project_id, b, ep, ctx.server.endpoint_host, now
                            )
                        }
        raise ApiError(404, "endpoint not found")
