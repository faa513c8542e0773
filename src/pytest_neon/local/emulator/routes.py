"""The API's routes under ``/api/v2``: which method and path go to which control-plane call,
and whether the call changes something (faults are injected only there) or takes a body."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from pytest_neon.local.emulator.api_errors import ApiError
from pytest_neon.local.emulator.plane.control_plane import ControlPlane
from pytest_neon.local.emulator.records import JSON
from pytest_neon.local.emulator.spec_routes import SPEC_ROUTES

BASE_PATH = "/api/v2"

#: a route's call: (control plane, path arguments, query, body) -> (status, body or None)
Call = Callable[[ControlPlane, dict[str, str], dict[str, str], JSON], tuple[int, JSON | None]]


@dataclass(frozen=True)
class Route:
    """A method and a path template (``{name}`` matches one path segment) and its call."""

    method: str
    template: str
    call: Call
    mutating: bool = False
    has_body: bool = False

    @functools.cached_property
    def pattern(self) -> re.Pattern[str]:
        """The template as a regular expression (compiled on first use, not at import)."""
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template)
        return re.compile(f"^{regex}$")

    @functools.cached_property
    def segments(self) -> int:
        """How many path segments the template has."""
        return self.template.count("/")


def _delete_branch(
    p: ControlPlane, args: dict[str, str], query: dict[str, str], body: JSON
) -> tuple[int, JSON | None]:
    result = p.branches.delete_branch(args["branch_id"])
    return (200, result) if result is not None else (204, None)


def _endpoint_call(call: str) -> Call:
    """The call of ``POST …/endpoints/{endpoint_id}/<call>`` (start, suspend, restart)."""

    def run(
        p: ControlPlane, args: dict[str, str], query: dict[str, str], body: JSON
    ) -> tuple[int, JSON | None]:
        return 200, p.endpoints.act(args["endpoint_id"], call)

    return run


#: in the order they are tried (``/branches/count`` before ``/branches/{branch_id}``)
ROUTES = (
    Route("GET", "/users/me", lambda p, a, q, b: (200, p.account.me())),
    Route("GET", "/users/me/organizations", lambda p, a, q, b: (200, p.account.organizations())),
    Route("GET", "/projects", lambda p, a, q, b: (200, p.account.list_projects(q))),
    Route("GET", "/projects/shared", lambda p, a, q, b: (200, p.account.shared_projects(q))),
    Route("GET", "/projects/{project_id}", lambda p, a, q, b: (200, p.projects.get_project())),
    Route(
        "GET",
        "/projects/{project_id}/branches",
        lambda p, a, q, b: (200, p.branches.list_branches(q)),
    ),
    Route(
        "POST",
        "/projects/{project_id}/branches",
        lambda p, a, q, b: (201, p.creation.create_branch(b)),
        mutating=True,
        has_body=True,
    ),
    Route(
        "GET",
        "/projects/{project_id}/branches/count",
        lambda p, a, q, b: (200, p.branches.count_branches(q)),
    ),
    Route(
        "GET",
        "/projects/{project_id}/branches/{branch_id}",
        lambda p, a, q, b: (200, p.branches.get_branch(a["branch_id"])),
    ),
    Route("DELETE", "/projects/{project_id}/branches/{branch_id}", _delete_branch, mutating=True),
    Route(
        "PATCH",
        "/projects/{project_id}/branches/{branch_id}",
        lambda p, a, q, b: (200, p.branches.update_branch(a["branch_id"], b)),
        mutating=True,
        has_body=True,
    ),
    Route(
        "POST",
        "/projects/{project_id}/branches/{branch_id}/set_as_default",
        lambda p, a, q, b: (200, p.branches.set_as_default(a["branch_id"])),
        mutating=True,
    ),
    Route(
        "POST",
        "/projects/{project_id}/branches/{branch_id}/roles/{role_name}/reset_password",
        lambda p, a, q, b: (200, p.roles.reset_password(a["branch_id"], a["role_name"])),
        mutating=True,
    ),
    Route(
        "POST",
        "/projects/{project_id}/branches/{branch_id}/restore",
        lambda p, a, q, b: (200, p.restore.restore_branch(a["branch_id"], b)),
        mutating=True,
        has_body=True,
    ),
    Route(
        "GET",
        "/projects/{project_id}/branches/{branch_id}/endpoints",
        lambda p, a, q, b: (200, p.endpoints.branch_endpoints(a["branch_id"])),
    ),
    Route(
        "GET",
        "/projects/{project_id}/branches/{branch_id}/roles",
        lambda p, a, q, b: (200, p.roles.roles(a["branch_id"])),
    ),
    Route(
        "DELETE",
        "/projects/{project_id}/branches/{branch_id}/roles/{role_name}",
        lambda p, a, q, b: (200, p.roles.delete_role(a["branch_id"], a["role_name"])),
        mutating=True,
    ),
    Route(
        "POST",
        "/projects/{project_id}/branches/{branch_id}/roles",
        lambda p, a, q, b: (201, p.roles.create_role(a["branch_id"], b)),
        mutating=True,
        has_body=True,
    ),
    Route(
        "GET",
        "/projects/{project_id}/branches/{branch_id}/roles/{role_name}",
        lambda p, a, q, b: (200, p.roles.role(a["branch_id"], a["role_name"])),
    ),
    *(
        Route(
            method,
            "/projects/{project_id}/branches/{branch_id}/roles/{role_name}/reveal_password",
            lambda p, a, q, b: (200, p.roles.reveal_password(a["branch_id"], a["role_name"])),
        )
        for method in ("GET", "POST")  # the API says GET; some clients use POST
    ),
    Route(
        "GET",
        "/projects/{project_id}/branches/{branch_id}/databases",
        lambda p, a, q, b: (200, p.databases.databases(a["branch_id"])),
    ),
    Route(
        "POST",
        "/projects/{project_id}/branches/{branch_id}/databases",
        lambda p, a, q, b: (201, p.databases.create_database(a["branch_id"], b)),
        mutating=True,
        has_body=True,
    ),
    Route(
        "DELETE",
        "/projects/{project_id}/branches/{branch_id}/databases/{database_name}",
        lambda p, a, q, b: (200, p.databases.delete_database(a["branch_id"], a["database_name"])),
        mutating=True,
    ),
    Route(
        "GET",
        "/projects/{project_id}/branches/{branch_id}/databases/{database_name}",
        lambda p, a, q, b: (200, p.databases.database(a["branch_id"], a["database_name"])),
    ),
    Route(
        "GET",
        "/projects/{project_id}/connection_uri",
        lambda p, a, q, b: (200, p.databases.connection_uri(q)),
    ),
    Route(
        "GET",
        "/projects/{project_id}/operations",
        lambda p, a, q, b: (200, p.operations.list_operations(q)),
    ),
    Route(
        "GET",
        "/projects/{project_id}/operations/{operation_id}",
        lambda p, a, q, b: (200, p.operations.get_operation(a["operation_id"])),
    ),
    Route(
        "GET",
        "/projects/{project_id}/endpoints",
        lambda p, a, q, b: (200, p.endpoints.project_endpoints()),
    ),
    *(
        Route(
            "POST",
            f"/projects/{{project_id}}/endpoints/{{endpoint_id}}/{call}",
            _endpoint_call(call),
            mutating=True,
        )
        for call in ("start", "suspend", "restart")
    ),
    Route(
        "POST",
        "/projects/{project_id}/endpoints",
        lambda p, a, q, b: (201, p.endpoints.create_endpoint(b)),
        mutating=True,
        has_body=True,
    ),
    Route(
        "PATCH",
        "/projects/{project_id}/endpoints/{endpoint_id}",
        lambda p, a, q, b: (200, p.endpoints.update_endpoint(a["endpoint_id"], b)),
        mutating=True,
        has_body=True,
    ),
    Route(
        "DELETE",
        "/projects/{project_id}/endpoints/{endpoint_id}",
        lambda p, a, q, b: (200, p.endpoints.delete_endpoint(a["endpoint_id"])),
        mutating=True,
    ),
    Route(
        "GET",
        "/projects/{project_id}/endpoints/{endpoint_id}",
        lambda p, a, q, b: (200, p.endpoints.get_endpoint(a["endpoint_id"])),
    ),
)


def _compiled(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{(\w+)\}", r"[^/]+", template) + "$")


@functools.cache
def _spec(segments: int) -> list[tuple[str, str, re.Pattern[str]]]:
    """Neon's routes of ``segments`` path segments, for the 501 of those the emulator
    does not implement; literal segments before parameters (``/projects/shared`` before
    ``/projects/{project_id}``). Compiled when a path of that length first comes, not at
    import: a run's start waits for the import."""
    return sorted(
        (
            (method, template, _compiled(template))
            for method, template in SPEC_ROUTES
            if template.count("/") == segments
        ),
        key=lambda row: row[1].count("{"),
    )


def match(method: str, path: str) -> tuple[Route, dict[str, str]]:
    """The route of ``method`` on ``path`` (under ``BASE_PATH``) and its path arguments.

    A route of Neon's API that the emulator does not implement is a 501 naming it; a path
    Neon has with other methods only, a 405; any other path, a 404.
    """
    spec = [(m, t) for m, t, pattern in _spec(path.count("/")) if pattern.match(path)]
    best = spec[0][1] if spec else None  # the template Neon would take the path for
    allowed: set[str] = {m for m, t in spec if t == best}
    segments = path.count("/")
    for route in ROUTES:
        if route.segments != segments:
            continue  # (its pattern cannot match)
        m = route.pattern.match(path)
        if m is None or (best is not None and route.template != best):
            continue
        if route.method == method:
            return route, {k: unquote(v) for k, v in m.groupdict().items()}
        allowed.add(route.method)
    if (method, best) in spec:
        raise ApiError(
            501,
            f"{method} {best} is not implemented by the pytest-neon emulator "
            "(its README lists what is)",
            code="NOT_IMPLEMENTED",
        )
    if allowed:
        methods = ", ".join(sorted(allowed))
        raise ApiError(
            405, f"method {method} not allowed on {path}: {methods}", headers={"Allow": methods}
        )
    raise ApiError(404, f"not found: no route {path} in Neon's API v2")
