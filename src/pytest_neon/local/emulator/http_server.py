"""The emulator over HTTP: a threading HTTP/1.1 server whose request handler passes each
request to the :class:`~pytest_neon.local.emulator.dispatch.ApiDispatcher`, and which can
close its clients' keep-alive connections when it stops."""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pytest_neon.local.emulator.dispatch import ApiDispatcher, ApiResponse
from pytest_neon.redact import redact

log = logging.getLogger("pytest_neon.emulator")


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
            response = ApiResponse(400, {"code": "", "message": "invalid Content-Length"})
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

    def __init__(self, address: tuple[str, int], api: ApiDispatcher) -> None:
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
