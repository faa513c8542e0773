"""Requests to the emulator this process runs, answered in-process instead of over HTTP.

Same requests, same answers (the emulator's own request handling, faults and delays
included); only the socket, the HTTP parsing, two thread hand-offs and an HTTP library
are left out (``requests`` is not even imported). xdist workers are other processes: they
still talk HTTP to the controller's emulator.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from pytest_neon.api.transport import HttpResponse, HttpSession

if TYPE_CHECKING:
    from pytest_neon.local.emulator.dispatch import ApiDispatcher

_REASONS = {200: "OK", 201: "Created", 204: "No Content"}


class _Headers(dict[str, str]):
    """Response headers, looked up without regard to case."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())


class InProcessAnswer:
    """The emulator's answer, as the transport reads an HTTP response."""

    def __init__(self, status: int, content: bytes, headers: Mapping[str, str]) -> None:
        self.status_code = status
        self.reason: str | None = _REASONS.get(status, "")
        self.content = content
        self.headers = _Headers({k.lower(): v for k, v in headers.items()})

    def json(self) -> Any:
        """The body, decoded."""
        return json.loads(self.content)


class InProcessSession:
    """A session whose calls under ``api_host`` go straight to ``api``, as ``NeonClient``
    makes them (``params``, ``json`` and ``timeout``); any other URL is refused."""

    trust_env = False  # there is no proxy to look up

    def __init__(self, api_host: str, api: ApiDispatcher | Callable[[], ApiDispatcher]) -> None:
        """``api``: the emulator's request handler, or what gives it on the first call
        (an emulator started then)."""
        self.headers: dict[str, str | bytes] = {}
        self._prefix = api_host.rstrip("/") + "/"
        self._api = api

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        timeout: tuple[float, float] | None = None,
    ) -> HttpResponse:
        """Answer a request to the emulator by calling it directly."""
        if not url.startswith(self._prefix):
            raise ConnectionError(f"{url} is not the emulator this process runs")
        query = urlencode([(k, v) for k, v in (params or {}).items() if v is not None], doseq=True)
        target = urlsplit(url).path + (f"?{query}" if query else "")
        headers = {name.lower(): _text(value) for name, value in self.headers.items()}
        body = b""
        if json is not None:
            body = _dumps(json)
            headers["content-type"] = "application/json"
        api = self._api if hasattr(self._api, "handle") else self._api()
        answer = api.handle(method.upper(), target, headers, body)
        content, content_headers = answer.encode()
        return InProcessAnswer(answer.status, content, {**answer.headers, **content_headers})

    def close(self) -> None:
        """Nothing to close."""


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def in_process_session(
    api_host: str, api: ApiDispatcher | Callable[[], ApiDispatcher]
) -> HttpSession:
    """A session whose requests under ``api_host`` go straight to ``api`` (or to what it
    gives, on the first call)."""
    return InProcessSession(api_host, api)
