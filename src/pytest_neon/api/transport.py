"""One call to Neon's API: the HTTP session, timeouts, retries with backoff, error mapping.

It never logs or raises with the API key or a password in the text.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from pytest_neon.api.retry import RETRY_STATUSES, RetryPolicy, retry_after_seconds
from pytest_neon.errors import (
    NeonAPIError,
    NeonAuthError,
    NeonConflictError,
    NeonLimitError,
    NeonNotFoundError,
    NeonTimeoutError,
)
from pytest_neon.redact import register_secret

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from pytest_neon.api.types import JSON


class HttpResponse(Protocol):
    """What the transport reads of an answer (a ``requests.Response`` has it)."""

    status_code: int
    reason: str | None
    content: bytes

    @property
    def headers(self) -> Mapping[str, str]: ...

    def json(self) -> Any: ...


class HttpSession(Protocol):
    """What the transport needs of an HTTP session (a ``requests.Session`` has it)."""

    @property
    def headers(self) -> MutableMapping[str, str | bytes]: ...

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None,
        json: Any,
        timeout: tuple[float, float],
    ) -> HttpResponse: ...

    def close(self) -> None: ...


def _network_errors() -> tuple[type[BaseException], ...]:
    """The exceptions of an HTTP call that failed on the way (worth retrying)."""
    import requests

    return (requests.ConnectionError, requests.Timeout)


def _requests_session(loopback: bool) -> HttpSession:
    import requests

    session = requests.Session()
    if loopback:  # a local emulator: never through a proxy, and no per-request proxy lookup
        session.trust_env = False
    return session  # type: ignore[return-value]


log = logging.getLogger("pytest_neon.api")

#: Seconds one HTTP request may wait for an answer; a call retries for up to 3 times that.
DEFAULT_TIMEOUT = 30.0


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


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class _Attempt:
    """What one try of a call came back with, when it was not a final answer."""

    failure: str
    response: HttpResponse | None = None
    throttled: bool = False  # a 429: the API is up, only busy
    retry_after: float | None = None


class ApiTransport:
    """Sends calls to ``api_host`` with the key; retries what is worth retrying.

    ``key_source`` says where the key came from (``NEON_API_KEY``, ``--neon-api-key``) so
    that a refused key can be reported usefully without showing it.
    """

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
        register_secret(api_key)
        self.api_host = api_host.rstrip("/")
        self.key_source = key_source
        default_timeout, default_retry = client_limits(DEFAULT_TIMEOUT)
        self.timeout = default_timeout if timeout is None else timeout
        self.retry = retry or default_retry
        self.stats = ApiStats()
        self._session = session or _requests_session(_is_loopback(self.api_host))
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

    def wait(self, seconds: float, *, retry: bool = False) -> None:
        """Sleep, counting the time as spent waiting on Neon."""
        time.sleep(seconds)
        self.stats.add_wait(seconds, retry=retry)

    def request(
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
        started = time.monotonic()
        attempt = throttled = 0
        while True:
            attempt += 1
            outcome = self._try(method, path, name, params, body, ok_missing)
            if not isinstance(outcome, _Attempt):
                return outcome
            throttled += outcome.throttled
            spent = time.monotonic() - started
            failed = attempt - throttled
            delay = outcome.retry_after
            if delay is None:
                delay = self.retry.backoff(max(1, failed))
            if failed >= self.retry.max_attempts or spent + delay > self.retry.max_elapsed:
                raise self._gave_up(outcome, method, path, attempt, spent)
            if failures is not None:
                failures.append(outcome.failure)
            log.debug("retrying %s %s in %.2fs after %s", method, path, delay, outcome.failure)
            self.wait(delay, retry=True)

    def _try(
        self,
        method: str,
        path: str,
        name: str,
        params: Mapping[str, Any] | None,
        body: JSON | None,
        ok_missing: bool,
    ) -> JSON | _Attempt:
        """One attempt: the answer, or what went wrong in a way worth retrying."""
        self.stats.count(name)
        t0 = time.monotonic()
        try:
            response = self._session.request(
                method, self.api_host + path, params=params, json=body, timeout=self.timeout
            )
        except _network_errors() as exc:
            log.debug("%s %s -> %s", method, path, type(exc).__name__)
            return _Attempt(type(exc).__name__)
        status = response.status_code
        log.debug("%s %s -> %d in %.0f ms", method, path, status, (time.monotonic() - t0) * 1e3)
        if status < 400:
            if status == 204 or not response.content:
                return {}
            return self._json(response, method, path)
        if status == 404 and ok_missing:
            return {}
        if status not in RETRY_STATUSES:
            raise self._error(response, method, path)
        if status == 429:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            return _Attempt(f"HTTP {status}", response, throttled=True, retry_after=retry_after)
        return _Attempt(f"HTTP {status}", response)

    def _gave_up(
        self, last: _Attempt, method: str, path: str, attempts: int, spent: float
    ) -> Exception:
        if last.response is not None:
            err = self._error(last.response, method, path)
            return err.with_message(
                f"{err.message} (gave up after {attempts} attempts in {spent:.1f}s)"
            )
        return NeonTimeoutError(
            f"Neon API unreachable at {self.api_host}: {method} {path} failed with "
            f"{last.failure} {attempts} times in {spent:.1f}s; check the network or "
            f"--neon-api-host / NEON_API_HOST (each attempt waits up to "
            f"{self.timeout[1]:g}s: --neon-api-timeout / NEON_API_TIMEOUT)"
        )

    @staticmethod
    def _json(response: HttpResponse, method: str, path: str) -> JSON:
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

    def _error(self, response: HttpResponse, method: str, path: str) -> NeonAPIError:
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
        return _error_class(status, code)(
            text,
            status=status,
            code=code,
            neon_message=message,
            request_id=request_id,
            method=method,
            path=path,
        )
