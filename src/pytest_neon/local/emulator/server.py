"""HTTP side of the emulator: routing under ``/api/v2``, JSON, Neon errors, auth and faults."""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import socket
import socketserver
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pytest_neon.local.emulator import ids
from pytest_neon.local.emulator.api_errors import ApiError, locked
from pytest_neon.local.emulator.faults import Faults
from pytest_neon.local.emulator.plane.control_plane import ControlPlane
from pytest_neon.local.emulator.records import JSON
from pytest_neon.redact import redact

log = logging.getLogger("pytest_neon.emulator")

BASE_PATH = "/api/v2"
Handler = Callable[[dict[str, str], dict[str, str], JSON], tuple[int, JSON | None]]


@dataclass
class Response:
    """A response of the API: status, JSON body (``None`` for no body) and extra headers."""

    status: int
    body: JSON | None
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, dict[str, str]]:
        """The body as sent (JSON, UTF-8) and the headers describing it (``Content-Type``)."""
        if self.body is None:
            return b"", {}
        return json.dumps(self.body).encode(), {"Content-Type": "application/json"}


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    mutating: bool = False
    has_body: bool = False


def _compile(template: str) -> re.Pattern[str]:
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
    return re.compile(f"^{regex}$")


class Api:
    """Transport-independent request handling for one :class:`ControlPlane`."""

    def __init__(self, plane: ControlPlane, faults: Faults, api_key: str | None) -> None:
        self.plane = plane
        self.faults = faults
        self.api_key = api_key
        self.stopping = False
        self._active = 0
        self._idle = threading.Condition()
        p = plane
        self._routes = [
            self._route(
                "GET", "/projects/{project_id}", lambda a, q, b: (200, p.projects.get_project())
            ),
            self._route(
                "GET",
                "/projects/{project_id}/branches",
                lambda a, q, b: (200, p.branches.list_branches(q)),
            ),
            self._route(
                "POST",
                "/projects/{project_id}/branches",
                lambda a, q, b: (201, p.creation.create_branch(b)),
                mutating=True,
                has_body=True,
            ),
            self._route(
                "GET",
                "/projects/{project_id}/branches/count",
                lambda a, q, b: (200, p.branches.count_branches(q)),
            ),
            self._route(
                "GET",
                "/projects/{project_id}/branches/{branch_id}",
                lambda a, q, b: (200, p.branches.get_branch(a["branch_id"])),
            ),
            self._route(
                "DELETE",
                "/projects/{project_id}/branches/{branch_id}",
                self._delete_branch,
                mutating=True,
            ),
            self._route(
                "PATCH",
                "/projects/{project_id}/branches/{branch_id}",
                lambda a, q, b: (200, p.branches.update_branch(a["branch_id"], b)),
                mutating=True,
                has_body=True,
            ),
            self._route(
                "POST",
                "/projects/{project_id}/branches/{branch_id}/restore",
                lambda a, q, b: (200, p.restore.restore_branch(a["branch_id"], b)),
                mutating=True,
                has_body=True,
            ),
            self._route(
                "GET",
                "/projects/{project_id}/branches/{branch_id}/endpoints",
                lambda a, q, b: (200, p.endpoints.branch_endpoints(a["branch_id"])),
            ),
            self._route(
                "GET",
                "/projects/{project_id}/branches/{branch_id}/roles",
                lambda a, q, b: (200, p.roles.roles(a["branch_id"])),
            ),
            self._route(
                "GET",
                "/projects/{project_id}/branches/{branch_id}/roles/{role_name}",
                lambda a, q, b: (200, p.roles.role(a["branch_id"], a["role_name"])),
            ),
            *(
                self._route(
                    method,
                    "/projects/{project_id}/branches/{branch_id}/roles/{role_name}/reveal_password",
                    lambda a, q, b: (200, p.roles.reveal_password(a["branch_id"], a["role_name"])),
                )
                for method in ("GET", "POST")  # the API says GET; some clients use POST
            ),
            self._route(
                "GET",
                "/projects/{project_id}/branches/{branch_id}/databases",
                lambda a, q, b: (200, p.databases.databases(a["branch_id"])),
            ),
            self._route(
                "GET",
                "/projects/{project_id}/branches/{branch_id}/databases/{database_name}",
                lambda a, q, b: (200, p.databases.database(a["branch_id"], a["database_name"])),
            ),
            self._route(
                "GET",
                "/projects/{project_id}/connection_uri",
                lambda a, q, b: (200, p.databases.connection_uri(q)),
            ),
            self._route(
                "GET",
                "/projects/{project_id}/operations",
                lambda a, q, b: (200, p.operations.list_operations(q)),
            ),
            self._route(
                "GET",
                "/projects/{project_id}/operations/{operation_id}",
                lambda a, q, b: (200, p.operations.get_operation(a["operation_id"])),
            ),
            self._route(
                "GET",
                "/projects/{project_id}/endpoints",
                lambda a, q, b: (200, p.endpoints.project_endpoints()),
            ),
            self._route(
                "GET",
                "/projects/{project_id}/endpoints/{endpoint_id}",
                lambda a, q, b: (200, p.endpoints.get_endpoint(a["endpoint_id"])),
            ),
        ]

    @staticmethod
    def _route(
        method: str,
        template: str,
        handler: Handler,
        *,
        mutating: bool = False,
        has_body: bool = False,
    ) -> _Route:
        return _Route(method, _compile(template), handler, mutating, has_body)

    def _delete_branch(
        self, args: dict[str, str], query: dict[str, str], body: JSON
    ) -> tuple[int, JSON | None]:
        result = self.plane.branches.delete_branch(args["branch_id"])
        return (200, result) if result is not None else (204, None)

    # --- request handling ----------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer one request (``target``: path and query; ``headers``: lower-case names)."""
        request_id = _request_id(headers.get("x-request-id"))
        with self._idle:
            self._active += 1
        try:
            response = self._handle(method, target, headers, body)
        except ApiError as exc:
            response = Response(
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
            response = Response(500, {"code": "", "message": message, "request_id": request_id})
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
    ) -> Response:
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
            raise ApiError(404, "not found")
        path = path[len(BASE_PATH) :]
        route, args = self._match(method, path)
        if args["project_id"] != self.plane.project_id:
            raise ApiError(404, "project not found")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.plane.sweep_if_due()
        if route.mutating:
            injected = self.faults.injected_failure()
            if injected == 503:
                raise ApiError(503, "service unavailable (fault injected by the emulator)")
            if injected == 423:
                raise locked()
        body: JSON = {}
        if route.has_body and raw_body.strip():
            try:
                parsed = json.loads(raw_body)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ApiError(400, f"invalid JSON body: {exc}") from None
            if not isinstance(parsed, dict):
                raise ApiError(400, "the request body must be a JSON object")
            body = parsed
        status, payload = route.handler(args, query, body)
        return Response(status, payload)

    def _authorize(self, header: str | None) -> None:
        if self.api_key is None:
            return
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.api_key.encode()
        ):
            raise ApiError(401, "authentication failed: missing or invalid API key")

    def _match(self, method: str, path: str) -> tuple[_Route, dict[str, str]]:
        allowed = False
        for route in self._routes:
            m = route.pattern.match(path)
            if m is None:
                continue
            if route.method == method:
                return route, {k: unquote(v) for k, v in m.groupdict().items()}
            allowed = True
        if allowed:
            raise ApiError(405, f"method {method} not allowed")
        raise ApiError(404, "not found")


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _request_id(given: str | None) -> str:
    return given if given and _REQUEST_ID.match(given) else ids.request_id()


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pytest-neon-emulator"
    sys_version = ""
    timeout = 120  # idle keep-alive connections are closed after this many seconds
    # Send headers and body in one segment: no Nagle / delayed-ACK stall (40 ms per call).
    disable_nagle_algorithm = True
    wbufsize = -1
    server: EmulatorHTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        started = time.perf_counter()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            response = Response(400, {"code": "", "message": "invalid Content-Length"})
        else:
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            response = self.server.api.handle(method, self.path, headers, body)
        if response.status == 503 and self.server.api.stopping:
            self.close_connection = True
        data, content_headers = response.encode()
        self.send_response(response.status)
        for name, value in content_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        elapsed = (time.perf_counter() - started) * 1000
        log.info("%s %s -> %d (%.1f ms)", method, redact(self.path), response.status, elapsed)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _serve logs every request itself

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(redact(format % args))


class EmulatorHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that can close its clients' keep-alive connections."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: Api) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.api = api
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), which can stall.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def track(self, conn: socket.socket, *, add: bool) -> None:
        """Remember (or forget) an open client connection."""
        with self._clients_lock:
            if add:
                self._clients.add(conn)
            else:
                self._clients.discard(conn)

    def close_clients(self) -> None:
        """Shut down every open client connection (idle keep-alive ones included)."""
        with self._clients_lock:
            clients = list(self._clients)
        for conn in clients:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection error from %s", client_address, exc_info=True)
