"""A small typed client of Neon's API v2: the calls pytest-neon makes, and the waits.

Transport (timeouts, retries, errors) is :mod:`pytest_neon.api.transport`; waiting for
operations and endpoints is :mod:`pytest_neon.api.waits`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from pytest_neon.api.retry import RetryPolicy
from pytest_neon.api.transport import ApiStats, ApiTransport, HttpSession
from pytest_neon.errors import NeonConflictError
from pytest_neon.redact import register_secret

# The records and the waits load with the first call that needs them: a run that makes
# no API call (a parked local project taken over) does not pay for their classes.
if TYPE_CHECKING:
    from pytest_neon.api.types import (
        JSON,
        Branch,
        BranchOperations,
        CreatedBranch,
        Endpoint,
        Operation,
        Project,
    )
    from pytest_neon.api.waits import Waits


def _format_time(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value.microsecond:  # whole seconds, never earlier than asked
        value = value.replace(microsecond=0) + timedelta(seconds=1)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NeonClient:
    """Neon API v2 client (see :class:`~pytest_neon.api.transport.ApiTransport` for the
    arguments)."""

    def __init__(
        self,
        api_key: str,
        *,
        api_host: str,
        key_source: str = "NEON_API_KEY",
        timeout: tuple[float, float] | None = None,
        retry: RetryPolicy | None = None,
        session: HttpSession | None = None,
    ) -> None:
        self.http = ApiTransport(
            api_key,
            api_host=api_host,
            key_source=key_source,
            timeout=timeout,
            retry=retry,
            session=session,
        )

    @cached_property
    def waits(self) -> Waits:
        """Polls operations and endpoints for this client."""
        from pytest_neon.api.waits import Waits

        return Waits(self.http, self.get_operation, self.list_branch_endpoints)

    @property
    def api_host(self) -> str:
        """The API's base URL."""
        return self.http.api_host

    @property
    def key_source(self) -> str:
        """Where the API key came from, as a user would name it."""
        return self.http.key_source

    @property
    def stats(self) -> ApiStats:
        """Counters of this client's calls."""
        return self.http.stats

    def close(self) -> None:
        """Close the underlying HTTP session."""
        self.http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> JSON:
        return self.http.request(method, path, **kwargs)

    # -- calls -----------------------------------------------------------------------------

    @staticmethod
    def _p(*parts: str) -> str:
        return "/" + "/".join(quote(p, safe="") for p in parts)

    def get_project(self, project_id: str) -> Project:
        """``GET /projects/{project_id}``."""
        from pytest_neon.api.types import Project

        data = self._request("GET", self._p("projects", project_id), name="get_project")
        return Project.from_json(data.get("project") or {})

    def list_branches(self, project_id: str, *, search: str | None = None) -> list[Branch]:
        """All branches of a project (every page), optionally filtered by name ``search``."""
        from pytest_neon.api.types import Branch

        branches: list[Branch] = []
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            params: dict[str, Any] = {"limit": 100, "sort_by": "created_at"}
            if search:
                params["search"] = search
            if cursor:
                params["cursor"] = cursor
            data = self._request(
                "GET",
                self._p("projects", project_id, "branches"),
                name="list_branches",
                params=params,
            )
            annotations = data.get("annotations") or {}
            page = [b for b in data.get("branches") or [] if isinstance(b, dict)]
            for item in page:
                branch_id = str(item.get("id", ""))
                if branch_id in seen:
                    continue
                seen.add(branch_id)
                branches.append(Branch.from_json(item, annotations.get(branch_id)))
            pagination = data.get("pagination") or {}
            next_cursor = pagination.get("next") if isinstance(pagination, dict) else None
            if not page or not next_cursor or next_cursor == cursor:
                return branches
            cursor = str(next_cursor)

    def get_branch(self, project_id: str, branch_id: str) -> Branch:
        """``GET /projects/{project_id}/branches/{branch_id}`` with its annotation."""
        from pytest_neon.api.types import Branch

        data = self._request(
            "GET", self._p("projects", project_id, "branches", branch_id), name="get_branch"
        )
        return Branch.from_json(data.get("branch") or {}, data.get("annotation"))

    def create_branch(
        self,
        project_id: str,
        *,
        name: str,
        parent_id: str | None = None,
        expires_at: datetime | None = None,
        annotations: Mapping[str, str] | None = None,
        endpoint: bool = True,
    ) -> CreatedBranch:
        """Create a branch (with a read-write endpoint unless ``endpoint`` is false)."""
        from pytest_neon.api.types import CreatedBranch

        branch: JSON = {"name": name}
        if parent_id:
            branch["parent_id"] = parent_id
        if expires_at is not None:
            branch["expires_at"] = _format_time(expires_at)
        body: JSON = {"branch": branch}
        if endpoint:
            body["endpoints"] = [{"type": "read_write"}]
        if annotations:
            body["annotation_value"] = dict(annotations)
        path = self._p("projects", project_id, "branches")
        failures: list[str] = []
        try:
            data = self._request("POST", path, name="create_branch", body=body, failures=failures)
        except NeonConflictError as exc:
            # A create retried after its answer was lost finds the branch it made.
            lost = any(not f.startswith("HTTP") for f in failures)
            if exc.status != 409 or not lost:
                raise
            existing = [b for b in self.list_branches(project_id, search=name) if b.name == name]
            if not existing or dict(annotations or {}) != existing[0].annotations:
                raise
            found = existing[0]
            return CreatedBranch(
                branch=found,
                endpoints=tuple(self.list_branch_endpoints(project_id, found.id)),
                operations=(),
            )
        return CreatedBranch.from_json(data)

    def delete_branch(self, project_id: str, branch_id: str) -> tuple[Operation, ...]:
        """Delete a branch; a branch that is already gone is not an error."""
        from pytest_neon.api.types import BranchOperations

        data = self._request(
            "DELETE",
            self._p("projects", project_id, "branches", branch_id),
            name="delete_branch",
            ok_missing=True,
        )
        return BranchOperations.from_json(data).operations if data else ()

    def set_branch_expiry(self, project_id: str, branch_id: str, expires_at: datetime) -> None:
        """Move a branch's expiry (``PATCH`` of the branch)."""
        self._request(
            "PATCH",
            self._p("projects", project_id, "branches", branch_id),
            name="update_branch",
            body={"branch": {"expires_at": _format_time(expires_at)}},
        )

    def clear_branch_expiry(self, project_id: str, branch_id: str) -> None:
        """Remove a branch's expiry (``PATCH`` of the branch)."""
        self._request(
            "PATCH",
            self._p("projects", project_id, "branches", branch_id),
            name="update_branch",
            body={"branch": {"expires_at": None}},
        )

    def rename_branch(self, project_id: str, branch_id: str, name: str) -> None:
        """Rename a branch (``PATCH``); a taken name is a :class:`NeonConflictError`."""
        self._request(
            "PATCH",
            self._p("projects", project_id, "branches", branch_id),
            name="update_branch",
            body={"branch": {"name": name}},
        )

    def publish_branch(self, project_id: str, branch_id: str, name: str) -> None:
        """Rename a branch and remove its expiry, in one call (``PATCH`` of the branch); a
        taken name is a :class:`NeonConflictError`."""
        self._request(
            "PATCH",
            self._p("projects", project_id, "branches", branch_id),
            name="update_branch",
            body={"branch": {"name": name, "expires_at": None}},
        )

    def restore_branch(
        self, project_id: str, branch_id: str, *, source_branch_id: str
    ) -> BranchOperations:
        """Reset ``branch_id`` to the head of ``source_branch_id``, keeping its endpoint."""
        from pytest_neon.api.types import BranchOperations

        data = self._request(
            "POST",
            self._p("projects", project_id, "branches", branch_id, "restore"),
            name="restore_branch",
            body={"source_branch_id": source_branch_id},
        )
        return BranchOperations.from_json(data)

    def list_branch_endpoints(self, project_id: str, branch_id: str) -> list[Endpoint]:
        """The compute endpoints of a branch."""
        from pytest_neon.api.types import Endpoint

        data = self._request(
            "GET",
            self._p("projects", project_id, "branches", branch_id, "endpoints"),
            name="list_branch_endpoints",
        )
        return [Endpoint.from_json(e) for e in data.get("endpoints") or [] if isinstance(e, dict)]

    def connection_uri(
        self,
        project_id: str,
        *,
        branch_id: str,
        database_name: str,
        role_name: str,
        endpoint_id: str | None = None,
        pooled: bool = False,
    ) -> str:
        """A connection string for a role and database on a branch."""
        params: dict[str, Any] = {
            "branch_id": branch_id,
            "database_name": database_name,
            "role_name": role_name,
            "pooled": "true" if pooled else "false",
        }
        if endpoint_id:
            params["endpoint_id"] = endpoint_id
        data = self._request(
            "GET",
            self._p("projects", project_id, "connection_uri"),
            name="connection_uri",
            params=params,
        )
        uri = str(data.get("uri", ""))
        register_secret(_password_of(uri))
        return uri

    def reveal_password(self, project_id: str, branch_id: str, role_name: str) -> str:
        """A role's password (registered as a secret before it is returned)."""
        data = self._request(
            "GET",
            self._p(
                "projects",
                project_id,
                "branches",
                branch_id,
                "roles",
                role_name,
                "reveal_password",
            ),
            name="reveal_password",
        )
        password = str(data.get("password", ""))
        register_secret(password)
        return password

    def get_operation(self, project_id: str, operation_id: str) -> Operation:
        """``GET /projects/{project_id}/operations/{operation_id}``."""
        from pytest_neon.api.types import Operation

        data = self._request(
            "GET",
            self._p("projects", project_id, "operations", operation_id),
            name="get_operation",
        )
        return Operation.from_json(data.get("operation") or {})

    # -- waits -----------------------------------------------------------------------------

    def wait_for_operations(
        self, project_id: str, operations: Iterable[Operation], **kwargs: Any
    ) -> None:
        """See :meth:`pytest_neon.api.waits.Waits.for_operations`."""
        self.waits.for_operations(project_id, operations, **kwargs)

    def settle(
        self, project_id: str, created: CreatedBranch, *, timeout: float = 120.0
    ) -> Endpoint:
        """See :meth:`pytest_neon.api.waits.Waits.settle`."""
        return self.waits.settle(project_id, created, timeout=timeout)


def _password_of(uri: str) -> str | None:
    try:
        password = urlsplit(uri).password
    except ValueError:
        return None
    return unquote(password) if password else None
