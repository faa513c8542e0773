"""The account the API key belongs to: the current user, their organizations (none: a
personal account) and their projects (the one the emulator serves)."""

from __future__ import annotations

from pytest_neon.local.emulator import views
from pytest_neon.local.emulator.api_errors import bad_request
from pytest_neon.local.emulator.plane.context import PlaneContext
from pytest_neon.local.emulator.plane.projects import Projects
from pytest_neon.local.emulator.records import JSON

#: the most projects a page may hold (the API's ``limit`` maximum)
MAX_PAGE = 400


class Account:
    """``/users/me``, ``/users/me/organizations``, ``GET /projects`` and
    ``GET /projects/shared``."""

    def __init__(self, ctx: PlaneContext, projects: Projects) -> None:
        self._ctx = ctx
        self._projects = projects

    def me(self) -> JSON:
        """``CurrentUserInfoResponse``."""
        return views.user_view(self._ctx.settings.max_branches)

    def organizations(self) -> JSON:
        """``OrganizationsResponse``: a personal account belongs to none."""
        return {"organizations": []}

    def list_projects(self, query: dict[str, str]) -> JSON:
        """``ProjectsResponse`` + ``PaginationResponse``: the project, unless the page
        starts after it (``cursor``), the search does not match it, or another
        organization is asked for."""
        limit = _limit(query.get("limit"))
        project = self._projects.get_project()["project"]
        search = query.get("search", "").lower()
        shown = (
            limit > 0
            and query.get("cursor", "") < project["id"]
            and (search in project["id"].lower() or search in project["name"].lower())
            and not query.get("org_id")
        )
        projects = [{**project, "active_time": 0}] if shown else []
        body: JSON = {"projects": projects, "applications": {}, "integrations": {}}
        if projects:
            body["pagination"] = {"cursor": project["id"]}
        return body

    def shared_projects(self, query: dict[str, str]) -> JSON:
        """``ProjectsResponse``: projects others shared with the user (none)."""
        _limit(query.get("limit"))
        return {"projects": [], "applications": {}, "integrations": {}}


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return 10
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(
            f"limit must be a whole number from 1 to {MAX_PAGE}, got {raw!r}"
        ) from None
    if not 1 <= value <= MAX_PAGE:
        raise bad_request(f"limit must be a whole number from 1 to {MAX_PAGE}, got {value}")
    return value
