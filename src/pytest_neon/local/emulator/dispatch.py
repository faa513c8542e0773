"""One request in, one :class:`ApiResponse` out, whatever the transport: the emulator's
request handling (refusal while stopping, delay, rate limit, auth, route, injected faults,
JSON body, Neon-style errors and request ids)."""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from pytest_neon.local.emulator import ids
from pytest_neon.local.emulator.api_errors import ApiError, locked
from pytest_neon.local.emulator.faults import Faults
from pytest_neon.local.emulator.plane.control_plane import ControlPlane
from pytest_neon.local.emulator.records import JSON
from pytest_neon.local.emulator.routes import BASE_PATH, match
from pytest_neon.redact import redact

log = logging.getLogger("pytest_neon.emulator")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass
class ApiResponse:
    """A response of the API: status, JSON body (``None`` for no body) and extra headers."""

    status: int
    body: JSON | None
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, dict[str, str]]:
        """The body as sent (JSON, UTF-8) and the headers describing it (``Content-Type``)."""
        if self.body is None:
            return b"", {}
        return json.dumps(self.body).encode(), {"Content-Type": "application/json"}


class ApiDispatcher:
    """Transport-independent request handling for one :class:`ControlPlane`."""

    def __init__(self, plane: ControlPlane, faults: Faults, api_key: str | None) -> None:
        self.plane = plane
        self.faults = faults
        self.api_key = api_key
        self.stopping = False
        self._active = 0
        self._idle = threading.Condition()

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> ApiResponse:
        """Answer one request (``target``: path and query; ``headers``: lower-case names)."""
        request_id = request_id_of(headers.get("x-request-id"))
        with self._idle:
            self._active += 1
        try:
            response = self._handle(method, target, headers, body)
        except ApiError as exc:
            response = ApiResponse(
                exc.status,
                {"code": exc.code, "message": redact(exc.message), "request_id": request_id},
                dict(exc.headers),
            )
        except Exception as exc:
            log.error(
                "internal error on %s %s:\n%s",
                method,
                redact(target),
                redact(traceback.format_exc()),
            )
            message = redact(f"internal error in the emulator: {type(exc).__name__}: {exc}")
            response = ApiResponse(500, {"code": "", "message": message, "request_id": request_id})
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()
        response.headers["X-Neon-Request-Id"] = request_id
        return response

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being handled; ``False`` on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    def _handle(
        self, method: str, target: str, headers: Mapping[str, str], raw_body: bytes
    ) -> ApiResponse:
        if self.stopping:
            raise ApiError(503, "the emulator is shutting down")
        self.faults.delay_request()
        retry_after = self.faults.rate_limited()
        if retry_after is not None:
            raise ApiError(429, "rate limit exceeded", headers={"Retry-After": str(retry_after)})
        self._authorize(headers.get("authorization"))
        parts = urlsplit(target)
        path = parts.path.rstrip("/")
        if not path.startswith(BASE_PATH + "/"):
            raise ApiError(404, f"not found: the API is under {BASE_PATH}")
        path = path[len(BASE_PATH) :]
        route, args = match(method, path)
        if args.get("project_id", self.plane.project_id) != self.plane.project_id:
            raise ApiError(404, "project not found")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.plane.sweep_if_due()
        if route.mutating:
            self._inject_failure()
        body = _json_body(raw_body) if route.has_body else {}
        status, payload = route.call(self.plane, args, query, body)
        return ApiResponse(status, payload)

    def _authorize(self, header: str | None) -> None:
        if self.api_key is None:
            return
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.api_key.encode()
        ):
            raise ApiError(401, "authentication failed: missing or invalid API key")

    def _inject_failure(self) -> None:
        injected = self.faults.injected_failure()
        if injected == 503:
            raise ApiError(503, "service unavailable (fault injected by the emulator)")
        if injected == 423:
            raise locked()


def _json_body(raw_body: bytes) -> JSON:
    """The request's JSON object (``{}`` for an empty body)."""
    if not raw_body.strip():
        return {}
    try:
        parsed = json.loads(raw_body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # (too deep, too long)
        raise ApiError(400, f"invalid JSON body: {type(exc).__name__}: {exc}"[:300]) from None
    if not isinstance(parsed, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return parsed


def request_id_of(given: str | None) -> str:
    """The request's id: the client's ``X-Request-Id`` when it is a sane one, else new."""
    return given if given and _REQUEST_ID.match(given) else ids.request_id()
