"""Requests to the emulator this process runs, answered in-process instead of over HTTP.

Same requests, same answers (the emulator's own request handling, faults and delays
included); only the socket, the HTTP parsing, two thread hand-offs and ``requests``'
preparation of each request (cookies, hooks, redirects, proxies) are left out.
xdist workers are other processes: they still talk HTTP to the controller's emulator.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from requests.structures import CaseInsensitiveDict

from pytest_neon.local.emulator.dispatch import ApiDispatcher

_REASONS = {200: "OK", 201: "Created", 204: "No Content"}


class InProcessSession(requests.Session):
    """A ``requests`` session whose ``request()`` calls under ``api_host`` go straight to
    ``api`` (as ``NeonClient`` makes them: ``params``, ``json`` and ``timeout``).

    Other URLs, and calls with other arguments, are sent by ``requests`` as usual.
    """

    def __init__(self, api_host: str, api: ApiDispatcher) -> None:
        super().__init__()
        self.trust_env = False
        self._prefix = api_host.rstrip("/") + "/"
        self._api = api

    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Answer a request to the emulator by calling it directly."""
        if not url.startswith(self._prefix) or set(kwargs) - {"timeout"}:
            return super().request(method, url, params=params, json=json, **kwargs)
        query = urlencode([(k, v) for k, v in (params or {}).items() if v is not None], doseq=True)
        target = urlsplit(url).path + (f"?{query}" if query else "")
        headers = {name.lower(): str(value) for name, value in self.headers.items()}
        body = b""
        if json is not None:
            body = _dumps(json)
            headers["content-type"] = "application/json"
        answer = self._api.handle(method.upper(), target, headers, body)
        response = requests.Response()
        response.status_code = answer.status
        response.reason = _REASONS.get(answer.status, "")
        response._content, content_headers = answer.encode()
        response.headers = CaseInsensitiveDict(answer.headers)
        response.headers.update(content_headers)
        response.encoding = "utf-8"
        response.url = url + (f"?{query}" if query else "")
        return response


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def in_process_session(api_host: str, api: ApiDispatcher) -> requests.Session:
    """A session whose requests under ``api_host`` go straight to ``api``."""
    return InProcessSession(api_host, api)
