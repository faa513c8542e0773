"""The emulator over HTTP: a threading HTTP/1.1 server whose request handler passes each
request to the :class:`~pytest_neon.local.emulator.dispatch.ApiDispatcher`, and which can
close its clients' keep-alive connections when it stops.

Request bodies (``Content-Length`` or chunked) are capped at :data:`MAX_BODY_BYTES`. A body
the server refuses (too large, malformed framing, a transfer coding other than chunked) gets
a Neon-style JSON error and the connection is closed after it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import selectors
import socket
import socketserver
import threading
import time
from collections.abc import Mapping
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pytest_neon.local.emulator.api_errors import (
    ApiError,
    bad_request,
    not_implemented,
    too_large,
)
from pytest_neon.local.emulator.dispatch import ApiDispatcher, ApiResponse, request_id_of
from pytest_neon.redact import redact

log = logging.getLogger("pytest_neon.emulator")

#: The largest request body the emulator reads (Neon's requests are a few kB at most).
MAX_BODY_BYTES = 1 << 20
# After refusing a body: how long to read and drop what the client still sends before closing
# (closing with unread input resets the connection, which can destroy the answer in flight).
_LINGER_SECONDS = 2.0
_DIGITS = re.compile(r"[0-9]+")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_MAX_LINE = 4096  # a chunk-size line (with extensions) or a trailer field
_MAX_TRAILERS = 64


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

    def handle_expect_100(self) -> bool:
        try:
            body_length(self.headers, MAX_BODY_BYTES)
        except ApiError:
            return True  # no 100 Continue: _serve answers with the refusal at once
        super().handle_expect_100()
        self.wfile.flush()  # wfile is buffered: send the 100 Continue now, not with the answer
        return True

    def _serve(self, method: str) -> None:
        started = time.perf_counter()
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            length = body_length(self.headers, MAX_BODY_BYTES)
            body = read_body(self.rfile, length, MAX_BODY_BYTES)
        except ApiError as exc:
            refused = True
            response = _refusal(exc, headers)
        else:
            refused = False
            response = self.server.api.handle(method, self.path, headers, body)
        if refused or (response.status == 503 and self.server.api.stopping):
            self.close_connection = True
        data, content_headers = response.encode()
        self.send_response(response.status)
        for name, value in content_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        if refused:
            self._discard_input()
        elapsed = (time.perf_counter() - started) * 1000
        log.info("%s %s -> %d (%.1f ms)", method, redact(self.path), response.status, elapsed)

    def _discard_input(self) -> None:
        """Send the answer, half-close, then drop what the client still sends (briefly)."""
        self.wfile.flush()
        deadline = time.monotonic() + _LINGER_SECONDS
        try:
            self.connection.shutdown(socket.SHUT_WR)
            while (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not self.rfile.read(65536):
                    break
        except OSError:
            pass  # timed out or reset: the connection is closed next anyway

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The HTTP server's own refusals (a method it has no handler for, a malformed
        request line, headers too long) with a Neon error body, not an HTML page."""
        headers = getattr(self, "headers", None)
        request_id = request_id_of(headers.get("X-Request-Id") if headers is not None else None)
        phrase = HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else "error"
        body = json.dumps(
            {"code": "", "message": redact(message or phrase), "request_id": request_id}
        ).encode()
        self.close_connection = True
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Neon-Request-Id", request_id)
        self.send_header("Connection", "close")
        self.end_headers()
        if getattr(self, "command", "") != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _serve logs every request itself

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(redact(format % args))


def body_length(headers: Message, limit: int) -> int | None:
    """The request body's length from its ``Content-Length`` (0 without one), ``None`` for
    a chunked body.

    Raises :class:`ApiError`: 400 for a malformed or conflicting value, 413 above ``limit``,
    501 for a transfer coding other than chunked.
    """
    encodings = headers.get_all("Transfer-Encoding")
    if encodings:
        if headers.get_all("Content-Length"):
            raise bad_request("a request cannot have both Transfer-Encoding and Content-Length")
        codings = [coding.strip().lower() for raw in encodings for coding in raw.split(",")]
        if codings != ["chunked"]:
            given = ", ".join(encodings)[:80]
            raise not_implemented(f"unsupported Transfer-Encoding {given!r}: only chunked is")
        return None
    values = {
        value.strip() for raw in headers.get_all("Content-Length") or [] for value in raw.split(",")
    }
    if not values:
        return 0
    if len(values) > 1:
        raise bad_request("conflicting Content-Length values")
    (value,) = values
    if not _DIGITS.fullmatch(value):
        raise bad_request(f"invalid Content-Length {value[:40]!r}")
    digits = value.lstrip("0") or "0"
    if len(digits) > len(str(limit)) or int(digits) > limit:
        raise too_large(limit)
    return int(digits)


def read_body(rfile: io.BufferedIOBase, length: int | None, limit: int) -> bytes:
    """Read a body of ``length`` bytes, or a chunked one (``None``) of at most ``limit``.

    Raises :class:`ApiError`: 400 when the input ends early or is malformed, 413 when a
    chunked body grows beyond ``limit``.
    """
    if length is None:
        return _read_chunked(rfile, limit)
    body = rfile.read(length) if length else b""
    if len(body) < length:
        raise bad_request(f"the request body ended after {len(body)} of {length} bytes")
    return body


def _read_chunked(rfile: io.BufferedIOBase, limit: int) -> bytes:
    """Decode a chunked body (extensions ignored, trailer fields read and dropped)."""
    chunks: list[bytes] = []
    total = 0
    while True:
        size_field = _read_line(rfile, "chunk-size").split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_field):
            raise bad_request(f"invalid chunk size {size_field[:20]!r}")
        size = int(size_field, 16)
        if size == 0:
            break
        total += size
        if total > limit:
            raise too_large(limit)
        chunk = rfile.read(size)
        if len(chunk) < size or rfile.readline(2) not in (b"\r\n", b"\n"):
            raise bad_request("a chunk of the request body is cut short or not ended by CRLF")
        chunks.append(chunk)
    for _ in range(_MAX_TRAILERS):
        if _read_line(rfile, "trailer") in (b"\r\n", b"\n"):
            return b"".join(chunks)
    raise bad_request(f"more than {_MAX_TRAILERS} trailer fields")


def _read_line(rfile: io.BufferedIOBase, what: str) -> bytes:
    """One line of chunked framing; a 400 :class:`ApiError` if cut short or too long."""
    line = rfile.readline(_MAX_LINE + 1)
    if not line.endswith(b"\n"):
        raise bad_request(f"{what} line of the request body cut short or too long")
    return line


def _refusal(exc: ApiError, headers: Mapping[str, str]) -> ApiResponse:
    """The Neon-style error answer to a request refused before the dispatcher saw it."""
    request_id = request_id_of(headers.get("x-request-id"))
    body = {"code": exc.code, "message": redact(exc.message), "request_id": request_id}
    return ApiResponse(exc.status, body, {**exc.headers, "X-Neon-Request-Id": request_id})


class EmulatorHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that can close its clients' keep-alive connections."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: ApiDispatcher) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.api = api
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()
        # shutdown() wakes the serving loop at once, instead of waiting for a poll to end
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._stopped = threading.Event()
        self._stopped.set()
        super().__init__(address, _RequestHandler)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Handle requests until :meth:`shutdown` (which wakes this loop at once)."""
        self._stopped.clear()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while not self._stopping:
                    ready = selector.select(poll_interval)
                    if self._stopping:
                        break
                    if any(key.fileobj is self for key, _ in ready):
                        self.handle_request()  # (ready: it does not block)
                    self.service_actions()
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` and wait until it has returned."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

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
