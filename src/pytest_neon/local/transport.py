"""Requests to the emulator this process runs, answered in-process instead of over HTTP.

Same requests, same answers (the emulator's own request handling, faults and delays
included); only the socket, the HTTP parsing and two thread hand-offs are left out.
xdist workers are other processes: they still talk HTTP to the controller's emulator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from pytest_neon.local.emulator.server import Api

_REASONS = {200: "OK", 201: "Created", 204: "No Content"}


class InProcessAdapter(BaseAdapter):
    """A ``requests`` transport adapter that hands each request to an emulator's ``Api``."""

    def __init__(self, api: Api) -> None:
        super().__init__()
        self._api = api

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Answer ``request`` by calling the emulator directly."""
        url = urlsplit(request.url or "")
        target = url.path + (f"?{url.query}" if url.query else "")
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        headers = {name.lower(): value for name, value in request.headers.items()}
        answer = self._api.handle(request.method or "GET", target, headers, bytes(body))
        response = requests.Response()
        response.status_code = answer.status
        response.reason = _REASONS.get(answer.status, "")
        response._content, content_headers = answer.encode()
        response.headers = CaseInsensitiveDict(answer.headers)
        response.headers.update(content_headers)
        response.encoding = "utf-8"
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        """Nothing to release."""


def in_process_session(api_host: str, api: Api) -> requests.Session:
    """A session whose requests under ``api_host`` go straight to ``api``."""
    session = requests.Session()
    session.trust_env = False
    session.mount(api_host.rstrip("/") + "/", InProcessAdapter(api))
    return session
