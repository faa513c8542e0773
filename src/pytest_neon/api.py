"""A small typed client of Neon's API v2 on ``requests``: timeouts, retries, operation waits.

It never logs or raises with the API key or a password in the text.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests

from pytest_neon.errors import (
    NeonAPIError,
    NeonAuthError,
    NeonConfigError,
    NeonConflictError,
    NeonError,
    NeonLimitError,
    NeonNotFoundError,
    NeonOperationError,
    NeonTimeoutError,
)
from pytest_neon.models import (
    JSON,
    Branch,
    BranchOperations,
    CreatedBranch,
    Endpoint,
    Operation,
    Project,
)
from pytest_neon.redact import register_secret
from pytest_neon.retry import RETRY_STATUSES, RetryPolicy, retry_after_seconds

DEFAULT_API_HOST = "https://console.neon.tech/api/v2"
#: Seconds one HTTP request may wait for an answer; a call retries for up to 3 times that.
TIMEOUT_ENV = "NEON_API_TIMEOUT"
DEFAULT_TIMEOUT = 30.0
log = logging.getLogger("pytest_neon.api")


def timeout_from_env(environ: Mapping[str, str]) -> float:
    """``NEON_API_TIMEOUT`` in seconds (default 30); raise NeonConfigError when invalid."""
    raw = environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 3600:
        raise NeonConfigError(
            f"{TIMEOUT_ENV} must be a number of seconds between 0 and 3600 "
            f"(default {DEFAULT_TIMEOUT:.0f}), got {raw!r}"
        )
    return seconds


def client_limits(seconds: float) -> tuple[tuple[float, float], RetryPolicy]:
    """Request timeouts (connect, read) and the retry policy for a request timeout of ``seconds``.

    A request waits up to ``seconds`` for an answer (at most 10 s to connect); one call,
    retries and backoff included, gives up after ``3 * seconds``.
    """
    return (min(10.0, seconds), seconds), RetryPolicy(max_elapsed=3 * seconds)


@dataclass
class ApiStats:
    """Counters of one client's traffic, for the run summary."""

    calls: int = 0
    retries: int = 0
    waiting_seconds: float = 0.0
    by_call: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, name: str) -> None:
        """Record one HTTP request of call ``name``."""
        with self._lock:
            self.calls += 1
            self.by_call[name] = self.by_call.get(name, 0) + 1

    def add_wait(self, seconds: float, *, retry: bool = False) -> None:
        """Record time spent waiting on Neon (backoff sleeps, operation polls)."""
        with self._lock:
            self.waiting_seconds += seconds
            if retry:
                self.retries += 1


def _error_class(status: int, code: str) -> type[NeonAPIError]:
    if status in (401, 403):
        return NeonAuthError
    if status == 404:
        return NeonNotFoundError
    if status in (409, 423):
        return NeonConflictError
    if status == 422 and code == "BRANCHES_LIMIT_EXCEEDED":
        return NeonLimitError
    return NeonAPIError


def _format_time(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value.microsecond:  # whole seconds, never earlier than asked
        value = value.replace(microsecond=0) + timedelta(seconds=1)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class NeonClient:
    """Neon API v2 client.

    ``key_source`` says where the key came from (``NEON_API_KEY``, ``--neon-api-key``) so
    that a refused key can be reported usefully without showing it.
    """

    def __init__(
        self,
        api_key: str,
        *,
        api_host: str = DEFAULT_API_HOST,
        key_source: str = "NEON_API_KEY",
        timeout: tuple[float, float] | None = None,
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
    ) -> None:
        register_secret(api_key)
        self.api_host = api_host.rstrip("/")
        self.key_source = key_source
        default_timeout, default_retry = client_limits(DEFAULT_TIMEOUT)
        self.timeout = default_timeout if timeout is None else timeout
        self.retry = retry or default_retry
        self.stats = ApiStats()
        self._op_seconds: dict[str, float] = {}  # how long operations usually take, by kind
        self._session = session or requests.Session()
        if session is None and _is_loopback(self.api_host):
            # a local emulator: never through a proxy, and no per-request proxy lookup
            self._session.trust_env = False
        self._session.headers.update(
            {
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json",
                "User-Agent": "pytest-neon",
            }
        )

    def close(self) -> None:
        """Close the underlying HTTP session."""
        self._session.close()

    # -- transport -------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        name: str,
        params: Mapping[str, Any] | None = None,
        body: JSON | None = None,
        ok_missing: bool = False,
        failures: list[str] | None = None,
    ) -> JSON:
        """Send one call with retries; ``{}`` for a 204, or a 404 when ``ok_missing``.

        ``failures`` collects why earlier attempts were retried (e.g. ``ConnectionError``).
        A 429 does not count as a failed attempt (the API is up, only busy): the time
        budget alone bounds how long rate limiting is waited out.
        """
        url = self.api_host + path
        started = time.monotonic()
        attempt = 0
        throttled = 0  # attempts answered 429
        while True:
            attempt += 1
            self.stats.count(name)
            t0 = time.monotonic()
            wait: float | None = None
            failure: str
            last_response: requests.Response | None = None
            try:
                response = self._session.request(
                    method, url, params=params, json=body, timeout=self.timeout
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                failure = f"{type(exc).__name__}"
                log.debug("%s %s -> %s (attempt %d)", method, path, failure, attempt)
            else:
                elapsed_ms = (time.monotonic() - t0) * 1000
                status = response.status_code
                log.debug("%s %s -> %d in %.0f ms", method, path, status, elapsed_ms)
                if status < 400:
                    if status == 204 or not response.content:
                        return {}
                    return self._json(response, method, path)
                if status == 404 and ok_missing:
                    return {}
                if status not in RETRY_STATUSES:
                    raise self._error(response, method, path)
                failure = f"HTTP {status}"
                if status == 429:
                    throttled += 1
                    wait = retry_after_seconds(response.headers.get("Retry-After"))
                last_response = response
            spent = time.monotonic() - started
            failed = attempt - throttled
            delay = wait if wait is not None else self.retry.backoff(max(1, failed))
            if failed >= self.retry.max_attempts or spent + delay > self.retry.max_elapsed:
                if last_response is not None:
                    err = self._error(last_response, method, path)
                    raise err.with_message(
                        f"{err.message} (gave up after {attempt} attempts in {spent:.1f}s)"
                    )
                raise NeonTimeoutError(
                    f"Neon API unreachable at {self.api_host}: {method} {path} failed with "
                    f"{failure} {attempt} times in {spent:.1f}s; check the network or "
                    f"--neon-api-host / NEON_API_HOST (each attempt waits up to "
                    f"{self.timeout[1]:g}s: {TIMEOUT_ENV})"
                )
            if failures is not None:
                failures.append(failure)
            log.debug("retrying %s %s in %.2fs after %s", method, path, delay, failure)
            self._wait(delay, retry=True)

    def _wait(self, seconds: float, *, retry: bool = False) -> None:
        """Sleep, counting the time as spent waiting on Neon."""
        time.sleep(seconds)
        self.stats.add_wait(seconds, retry=retry)

    def _json(self, response: requests.Response, method: str, path: str) -> JSON:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise NeonAPIError(
                f"Neon API answered {method} {path} with a body that is not a JSON object",
                status=response.status_code,
                method=method,
                path=path,
            )
        return data

    def _error(self, response: requests.Response, method: str, path: str) -> NeonAPIError:
        try:
            data = response.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        status = response.status_code
        code = str(data.get("code") or "")
        message = str(data.get("message") or response.reason or "")
        request_id = str(data.get("request_id") or response.headers.get("X-Neon-Request-Id", ""))
        cls = _error_class(status, code)
        if status == 401:
            text = (
                f"Neon refused the API key from {self.key_source} (401 Unauthorized); "
                "create a key in the Neon console and set NEON_API_KEY or --neon-api-key"
            )
        elif status == 403:
            text = (
                f"the API key from {self.key_source} may not {method} {path} "
                f"(403 Forbidden: {message})"
            )
        else:
            text = f"Neon API {method} {path} failed with {status}: {message}"
            if code:
                text += f" [{code}]"
        if request_id:
            text += f" (request id {request_id})"
        return cls(
            text,
            status=status,
            code=code,
            neon_message=message,
            request_id=request_id,
            method=method,
            path=path,
        )

    # -- calls -----------------------------------------------------------------------------

    @staticmethod
    def _p(*parts: str) -> str:
        return "/" + "/".join(quote(p, safe="") for p in parts)

    def get_project(self, project_id: str) -> Project:
        """``GET /projects/{project_id}``."""
        data = self._request("GET", self._p("projects", project_id), name="get_project")
        return Project.from_json(data.get("project") or {})

    def list_branches(self, project_id: str, *, search: str | None = None) -> list[Branch]:
        """All branches of a project (every page), optionally filtered by name ``search``."""
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

    def restore_branch(
        self, project_id: str, branch_id: str, *, source_branch_id: str
    ) -> BranchOperations:
        """Reset ``branch_id`` to the head of ``source_branch_id``, keeping its endpoint."""
        data = self._request(
            "POST",
            self._p("projects", project_id, "branches", branch_id, "restore"),
            name="restore_branch",
            body={"source_branch_id": source_branch_id},
        )
        return BranchOperations.from_json(data)

    def list_branch_endpoints(self, project_id: str, branch_id: str) -> list[Endpoint]:
        """The compute endpoints of a branch."""
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
        data = self._request(
            "GET",
            self._p("projects", project_id, "operations", operation_id),
            name="get_operation",
        )
        return Operation.from_json(data.get("operation") or {})

    # -- waits -----------------------------------------------------------------------------

    def wait_for_operations(
        self,
        project_id: str,
        operations: Iterable[Operation],
        *,
        timeout: float = 120.0,
        poll: float = 0.1,
        max_poll: float = 1.0,
    ) -> None:
        """Wait until every operation is terminal; raise if one failed or time runs out.

        Neon runs a branch's operations in order, so each poll (every ``poll`` seconds,
        growing to ``max_poll``) reads only the last one still pending: once it has
        ``finished``, the ones before it have too. Any other end state is looked into.
        """
        pending = list(operations)
        started = time.monotonic()
        deadline = started + timeout
        key = pending[-1].action if pending else ""
        learned = self._op_seconds.get(key)
        # With a learned duration, sleep through (nearly) all of it, then poll finely.
        interval = poll if learned is None else max(learned * 0.95, 0.02)
        after_first = poll if learned is None else max(poll / 2, 0.02)
        first_round = True
        while True:
            for op in pending:
                if op.failed:
                    raise _operation_failed(op)
            pending = [op for op in pending if not op.done]
            if not pending:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                ids = ", ".join(f"{op.action} {op.id}" for op in pending)
                raise NeonTimeoutError(
                    f"Neon operations did not finish within {timeout:.0f}s: {ids}"
                )
            self._wait(min(interval, remaining))
            interval = after_first * 2 if first_round else min(max_poll, interval * 2)
            first_round = False
            last = self.get_operation(project_id, pending[-1].id)
            if last.status == "finished":
                # Neon's own measure of the run time beats ours, which includes the polls.
                took = last.duration_ms / 1000 if last.duration_ms else None
                self._learn(key, took or time.monotonic() - started)
                return
            if last.done:  # failed, skipped or cancelled: find out what happened before it
                pending = [self.get_operation(project_id, op.id) for op in pending[:-1]]
                pending.append(last)
            else:
                pending[-1] = last

    def _learn(self, action: str, seconds: float) -> None:
        before = self._op_seconds.get(action)
        self._op_seconds[action] = seconds if before is None else (before + seconds) / 2

    def wait_for_endpoint(
        self,
        project_id: str,
        branch_id: str,
        *,
        timeout: float = 120.0,
        poll: float = 0.1,
        max_poll: float = 1.0,
    ) -> Endpoint:
        """Wait until the branch's read-write endpoint is ``active`` (or ``idle``)."""
        deadline = time.monotonic() + timeout
        interval = poll
        while True:
            endpoints = self.list_branch_endpoints(project_id, branch_id)
            ready = [e for e in endpoints if e.ready]
            if ready:
                return ready[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NeonTimeoutError(
                    f"the endpoint of branch {branch_id} did not become active within "
                    f"{timeout:.0f}s"
                )
            self._wait(min(interval, remaining))
            interval = min(max_poll, interval * 2)

    def settle(
        self, project_id: str, created: CreatedBranch, *, timeout: float = 120.0
    ) -> Endpoint:
        """Wait for a new branch's operations, then return its active endpoint.

        When a ``start_compute`` operation finished, the endpoint is known to be active
        and no further call is made.
        """
        self.wait_for_operations(project_id, created.operations, timeout=timeout)
        started = any(op.action == "start_compute" for op in created.operations)
        active = [e for e in created.endpoints if e.ready]
        if created.endpoints and (started or active):
            return created.endpoints[0]
        return self.wait_for_endpoint(project_id, created.branch.id, timeout=timeout)


def _operation_failed(op: Operation) -> NeonError:
    detail = f": {op.error}" if op.error else ""
    where = f" on branch {op.branch_id}" if op.branch_id else ""
    return NeonOperationError(
        f"Neon operation {op.action} {op.id}{where} ended {op.status}{detail}",
        operation_id=op.id,
        branch_id=op.branch_id or "",
        action=op.action,
    )


def _password_of(uri: str) -> str | None:
    try:
        password = urlsplit(uri).password
    except ValueError:
        return None
    return unquote(password) if password else None


__all__ = [
    "DEFAULT_API_HOST",
    "DEFAULT_TIMEOUT",
    "TIMEOUT_ENV",
    "ApiStats",
    "NeonClient",
    "client_limits",
    "timeout_from_env",
]
