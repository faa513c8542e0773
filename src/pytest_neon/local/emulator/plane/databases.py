"""Databases: a branch's logical databases, and the connection URI of one (a real DSN to
the real database behind it)."""

from __future__ import annotations

from collections.abc import Mapping

from pytest_neon.local.emulator import views
from pytest_neon.local.emulator.api_errors import ApiError, bad_request
from pytest_neon.local.emulator.plane.context import PlaneContext
from pytest_neon.local.emulator.plane.params import boolean
from pytest_neon.local.emulator.records import JSON


class Databases:
    """The branches' databases (read only: they are copied with their branches)."""

    def __init__(self, ctx: PlaneContext) -> None:
        self._ctx = ctx

    def databases(self, branch_id: str) -> JSON:
        """``DatabasesResponse``."""
        with self._ctx.lock:
            b = self._ctx.branch(branch_id)
            return {"databases": [views.database_view(b.id, db) for db in b.databases]}

    def database(self, branch_id: str, name: str) -> JSON:
        """``DatabaseResponse``."""
        with self._ctx.lock:
            b = self._ctx.branch(branch_id)
            db = b.database(name)
            if db is None:
                raise ApiError(404, "database not found")
            return {"database": views.database_view(b.id, db)}

    def _branch_of(self, endpoint_id: str | None) -> str:
        """The branch of ``endpoint_id``; the default branch without one (caller locks)."""
        project = self._ctx.project
        if not endpoint_id:
            return project.default_branch().id
        for b in project.branches.values():
            if b.visible and any(ep.id == endpoint_id for ep in b.endpoints):
                return b.id
        raise ApiError(404, "endpoint not found")

    def connection_uri(self, query: Mapping[str, str]) -> JSON:
        """``ConnectionURIResponse``: a real DSN to the branch's real database (the branch
        ``branch_id``, else that of ``endpoint_id``, else the default branch).

        ``pooled=true`` returns the same DSN: there is no pooler in front of the emulator's
        PostgreSQL, so pooled and direct connections go to the same server.
        """
        database_name = query.get("database_name")
        role_name = query.get("role_name")
        if not database_name:
            raise bad_request("database_name is required")
        if not role_name:
            raise bad_request("role_name is required")
        boolean(query.get("pooled"), "pooled")
        ctx = self._ctx
        with ctx.lock:
            endpoint_id = query.get("endpoint_id")
            branch_id = query.get("branch_id") or self._branch_of(endpoint_id)
            b = ctx.branch(branch_id)
            if not b.endpoints:
                raise ApiError(404, f"branch {b.id} has no read_write endpoint")
            if endpoint_id and endpoint_id not in {ep.id for ep in b.endpoints}:
                raise ApiError(404, "endpoint not found")
            db = b.database(database_name)
            if db is None:
                raise ApiError(404, "database not found")
            role = ctx.role(role_name)
            return {"uri": ctx.server.dsn(role.name, role.password, db.real_name)}
