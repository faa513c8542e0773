"""Databases: a branch's logical databases (each a real database: created, copied with
the branch, deleted), and the connection URI of one (a real DSN to it)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from urllib.parse import quote

from pytest_neon.local.emulator import ids, views
from pytest_neon.local.emulator.api_errors import ApiError, bad_request, locked
from pytest_neon.local.emulator.plane.context import PlaneContext
from pytest_neon.local.emulator.plane.operations import Operations
from pytest_neon.local.emulator.plane.params import boolean, json_object
from pytest_neon.local.emulator.records import JSON, BranchRecord, DatabaseRecord
from pytest_neon.local.emulator.sql import metadata
from pytest_neon.local.emulator.sql.server import Connection
from pytest_neon.local.emulator.timestamps import utcnow

#: PostgreSQL's longest identifier
MAX_NAME = 63
#: what a read-only endpoint's connection strings add: sessions that may not write
READ_ONLY_QUERY = "options=" + quote("-c default_transaction_read_only=on", safe="")


class Databases:
    """The branches' databases."""

    def __init__(self, ctx: PlaneContext, operations: Operations) -> None:
        self._ctx = ctx
        self._operations = operations

    def create_database(self, branch_id: str, body: JSON) -> JSON:
        """``DatabaseOperations``: a new (empty) database on one branch, owned by one of the
        project's roles; branches made from it later copy it."""
        spec = json_object(body.get("database"), "database")
        name, owner = spec.get("name"), spec.get("owner_name")
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
            raise bad_request(f"database.name must be a string of 1 to {MAX_NAME} characters")
        if not isinstance(owner, str) or not owner:
            raise bad_request("database.owner_name must be the name of one of the project's roles")
        ctx = self._ctx
        now = utcnow()
        with ctx.lock:
            branch = ctx.branch(branch_id)
            ctx.role(owner)
            if branch.database(name) is not None:
                raise ApiError(409, f"database {name} already exists")
            if branch.busy(now):
                raise locked()
            real = ids.real_database_name()
            ctx.databases.create(real, owner, ctx.comment)
            db = DatabaseRecord(name, owner, real, now, now)
            branch.databases.append(db)
            return self._applied(branch, db, now)

    def delete_database(self, branch_id: str, name: str) -> JSON:
        """``DatabaseOperations``: the database is dropped from the branch."""
        ctx = self._ctx
        now = utcnow()
        with ctx.lock:
            branch = ctx.branch(branch_id)
            db = branch.database(name)
            if db is None:
                raise ApiError(404, "database not found")
            if branch.busy(now):
                raise locked()
            ctx.databases.close_sessions([db.real_name])
            ctx.databases.drop(db.real_name)
            branch.databases.remove(db)
            return self._applied(branch, db, now)

    def _applied(self, branch: BranchRecord, db: DatabaseRecord, now: datetime) -> JSON:
        """``DatabaseOperations`` of a change to ``branch``'s databases, which is stored
        with its ``apply_config`` operation (the caller holds the lock)."""
        ctx = self._ctx
        branch.updated_at = now
        ops = self._operations.start(branch, [("apply_config", True)], now)

        def change(conn: Connection) -> None:
            metadata.update_branch(conn, ctx.project_id, branch)
            metadata.insert_operations(conn, ctx.project_id, ops)

        ctx.metadata.persist(change)
        return {
            "database": views.database_view(branch.id, db),
            "operations": self._operations.views_of(ops, now),
        }

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
            endpoint = next((ep for ep in b.endpoints if ep.id == endpoint_id), None)
            if endpoint_id and endpoint is None:
                raise ApiError(404, "endpoint not found")
            endpoint = endpoint or b.read_write
            if endpoint is None:
                raise ApiError(404, f"branch {b.id} has no read_write endpoint")
            db = b.database(database_name)
            if db is None:
                raise ApiError(404, "database not found")
            role = ctx.role(role_name)
            dsn = ctx.server.dsn(role.name, role.password, db.real_name)
            if endpoint.type == "read_only":  # its sessions may read only
                dsn += ("&" if "?" in dsn else "?") + READ_ONLY_QUERY
            return {"uri": dsn}
