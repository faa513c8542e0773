"""Roles: the project's roles as each branch shows them, and their passwords."""

from __future__ import annotations

from pytest_neon.local.emulator import views
from pytest_neon.local.emulator.plane.context import PlaneContext
from pytest_neon.local.emulator.records import JSON


class Roles:
    """The project's roles (read only: the project has its owner role)."""

    def __init__(self, ctx: PlaneContext) -> None:
        self._ctx = ctx

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
