"""Roles: the project's roles as each branch shows them, and their passwords."""

from __future__ import annotations

import logging

from pytest_neon.local.emulator import ids, views
from pytest_neon.local.emulator.api_errors import ApiError, bad_request, locked, unprocessable
from pytest_neon.local.emulator.plane.context import PlaneContext
from pytest_neon.local.emulator.plane.operations import Operations
from pytest_neon.local.emulator.plane.params import json_object
from pytest_neon.local.emulator.records import JSON, RoleRecord
from pytest_neon.local.emulator.sql import metadata
from pytest_neon.local.emulator.sql.server import Connection
from pytest_neon.local.emulator.timestamps import utcnow
from pytest_neon.redact import register_secret

log = logging.getLogger("pytest_neon.emulator")

#: PostgreSQL's longest identifier, in bytes
MAX_NAME = 63


class Roles:
    """The project's roles (the project has its owner role): read, and a new password."""

    def __init__(self, ctx: PlaneContext, operations: Operations) -> None:
        self._ctx = ctx
        self._operations = operations

    def roles(self, branch_id: str) -> JSON:
        """``RolesResponse``."""
        with self._ctx.lock:
            b = self._ctx.branch(branch_id)
            return {"roles": [views.role_view(b.id, r) for r in self._ctx.project.roles.values()]}

    def role(self, branch_id: str, name: str) -> JSON:
        """``RoleResponse``."""
        with self._ctx.lock:
            b = self._ctx.branch(branch_id)
            return {"role": views.role_view(b.id, self._ctx.role(name))}

    def reveal_password(self, branch_id: str, name: str) -> JSON:
        """``RolePasswordResponse``."""
        with self._ctx.lock:
            self._ctx.branch(branch_id)
            return {"password": self._ctx.role(name).password}

    def create_role(self, branch_id: str, body: JSON) -> JSON:
        """``RoleOperations``: a new role of the project (a real role of the server; a
        name another project of the server has shares its password), with its password."""
        spec = json_object(body.get("role"), "role")
        name, no_login = spec.get("name"), spec.get("no_login", False)
        if not isinstance(name, str) or not 1 <= len(name.encode()) <= MAX_NAME:
            raise bad_request(f"role.name must be a string of 1 to {MAX_NAME} bytes")
        if not isinstance(no_login, bool):
            raise bad_request("role.no_login must be a boolean")
        ctx = self._ctx
        now = utcnow()
        with ctx.lock:
            branch = ctx.branch(branch_id)
            if name in ctx.project.roles:
                raise ApiError(409, f"role {name} already exists")
            if branch.busy(now):
                raise locked()
            ops = self._operations.start(branch, [("apply_config", True)], now)
            with ctx.metadata.transaction() as conn:
                metadata.lock_role_names(conn)
                password = metadata.shared_role_password(conn, name) or ids.password()
                register_secret(password)
                if ctx.roles.ensure(name, password, login=not no_login):
                    metadata.remember_created_role(conn, name)
                role = RoleRecord(name, password, now)
                metadata.insert_role(conn, ctx.project_id, role)
                metadata.insert_operations(conn, ctx.project_id, ops)
            ctx.project.roles[name] = role
            log.info("created role %s", name)
            return {
                "role": {**views.role_view(branch.id, role), "password": password},
                "operations": self._operations.views_of(ops, now),
            }

    def delete_role(self, branch_id: str, name: str) -> JSON:
        """``RoleOperations``: the role leaves the project; the server's role goes too
        when the emulator made it and no other project has it. A role that owns a
        database of any branch stays (422)."""
        ctx = self._ctx
        now = utcnow()
        with ctx.lock:
            branch = ctx.branch(branch_id)
            role = ctx.role(name)
            owned = sorted(
                {
                    db.name
                    for b in ctx.project.branches.values()
                    for db in b.databases
                    if db.owner_name == name
                }
            )
            if owned:
                raise unprocessable(
                    f"role {name} owns database {', '.join(owned)}: delete it first"
                )
            if branch.busy(now):
                raise locked()
            ops = self._operations.start(branch, [("apply_config", True)], now)
            with ctx.metadata.transaction() as conn:
                metadata.lock_role_names(conn)
                metadata.delete_role(conn, ctx.project_id, name)
                metadata.insert_operations(conn, ctx.project_id, ops)
                ours = metadata.created_role(conn, name)
                shared = metadata.role_in_use_elsewhere(conn, name, ctx.project_id)
                if ours and not shared and ctx.roles.drop(name):
                    metadata.forget_created_role(conn, name)
            del ctx.project.roles[name]
            log.info("deleted role %s", name)
            return {
                "role": views.role_view(branch.id, role),
                "operations": self._operations.views_of(ops, now),
            }

    def reset_password(self, branch_id: str, name: str) -> JSON:
        """``RoleOperations``: the role gets a new password on the server; connection
        strings with the old one stop working.

        A project's role is a role of the whole server, shared by every project the server
        holds: they all get the new password.
        """
        ctx = self._ctx
        now = utcnow()
        with ctx.lock:
            branch = ctx.branch(branch_id)
            role = ctx.role(name)
            if branch.busy(now):
                raise locked()
            password = ids.password()
            register_secret(password)
            ops = self._operations.start(branch, [("apply_config", True)], now)

            with ctx.metadata.transaction() as conn:
                metadata.lock_role_names(conn)
                ctx.roles.ensure(name, password)
                _store_password(conn, name, password)
                metadata.insert_operations(conn, ctx.project_id, ops)
            role.password = password
            log.info("reset the password of role %s", name)
            return {
                "role": views.role_view(branch.id, role),
                "operations": self._operations.views_of(ops, now),
            }


def _store_password(conn: Connection, name: str, password: str) -> None:
    conn.execute(
        f"UPDATE {metadata.SCHEMA}.roles SET password = %s WHERE name = %s", (password, name)
    )
