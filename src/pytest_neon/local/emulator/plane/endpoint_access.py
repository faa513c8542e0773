"""What a connection to an endpoint's host leads to: the endpoint's branch, the project's
role (a role of the server) and the branch's real database behind the logical name."""

from __future__ import annotations

from pytest_neon.local.emulator.plane.context import PlaneContext
from pytest_neon.local.emulator.proxy.targets import Refusal, Target


class EndpointAccess:
    """The proxy's :class:`~pytest_neon.local.emulator.proxy.targets.Directory`."""

    def __init__(self, ctx: PlaneContext) -> None:
        self._ctx = ctx

    def target(self, endpoint_id: str, role: str, database: str) -> Target:
        """The real login for ``role`` on ``database`` through ``endpoint_id``."""
        ctx = self._ctx
        with ctx.lock:
            for branch in ctx.project.branches.values():
                endpoint = next((ep for ep in branch.endpoints if ep.id == endpoint_id), None)
                if endpoint is not None and branch.visible:
                    break
            else:
                raise Refusal("XX000", f"endpoint {endpoint_id} not found")
            # as on Neon, a connection starts a suspended compute again
            endpoint.suspended = False
            record = ctx.project.roles.get(role)
            db = branch.database(database)
            if db is None:
                raise Refusal("3D000", f'database "{database}" does not exist')
            return Target(
                role=role,
                password=record.password if record is not None else None,
                database=db.real_name,
                read_only=endpoint.type == "read_only",
            )
