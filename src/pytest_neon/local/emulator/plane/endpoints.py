"""Endpoints: the one read-write compute endpoint of a branch (the PostgreSQL server)."""

from __future__ import annotations

from pytest_neon.local.emulator import views
from pytest_neon.local.emulator.api_errors import ApiError
from pytest_neon.local.emulator.plane.context import PlaneContext
from pytest_neon.local.emulator.records import JSON
from pytest_neon.local.emulator.timestamps import utcnow


class Endpoints:
    """The project's endpoints (read only: they come and go with their branches)."""

    def __init__(self, ctx: PlaneContext) -> None:
        self._ctx = ctx

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
