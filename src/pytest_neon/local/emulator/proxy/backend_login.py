"""The proxy as a client of the real server: connect, log in as the role (SCRAM-SHA-256,
md5, cleartext or trust: whatever the server asks), and read up to ``ReadyForQuery``."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import struct
from dataclasses import dataclass

from pytest_neon.local.emulator.proxy import wire
from pytest_neon.local.emulator.proxy.conn import ChannelClosed, PgSocket
from pytest_neon.local.emulator.proxy.scram import SCRAM, ScramClient, ScramError

CONNECT_TIMEOUT = 10.0


class BackendRefused(Exception):
    """The server refused the login; ``error`` is its ``ErrorResponse`` (to pass on)."""

    def __init__(self, error: bytes) -> None:
        super().__init__("the server refused the login")
        self.error = error


@dataclass(frozen=True)
class ServerAddress:
    """Where the real server listens: a TCP host and port, or a Unix-socket directory."""

    host: str
    port: int
    tls: bool = False  # ask for TLS first (the superuser URL's sslmode asks for it)

    def open(self) -> PgSocket:
        """A connected socket to the server (blocking, with a timeout)."""
        if self.host.startswith("/"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(CONNECT_TIMEOUT)
            try:
                sock.connect(f"{self.host}/.s.PGSQL.{self.port}")
            except OSError:
                sock.close()
                raise
            return PgSocket(sock)
        sock = socket.create_connection((self.host or "localhost", self.port), CONNECT_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = PgSocket(sock)
        if self.tls:
            conn.send(struct.pack("!II", 8, wire.SSL_REQUEST))
            if conn.read_exact(1) != b"S":
                conn.close()
                raise BackendRefused(wire.error_response("08001", "the server refused TLS"))
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # as libpq's sslmode=require
            conn.start_tls(context, server_side=False)
        return conn


@dataclass
class Login:
    """A logged-in session: its socket, its cancel key, and the server's messages after
    ``AuthenticationOk`` (``ParameterStatus``, notices), ``ReadyForQuery`` last."""

    conn: PgSocket
    pid: int
    key: int
    messages: bytes


def log_in(address: ServerAddress, user: str, password: str, params: dict[str, str]) -> Login:
    """Log ``user`` in with ``params`` (which name the database)."""
    conn = address.open()
    try:
        return _handshake(conn, user, password, params)
    except BaseException:
        conn.close()
        raise


def _handshake(conn: PgSocket, user: str, password: str, params: dict[str, str]) -> Login:
    conn.send(wire.startup_packet({"user": user, **params}))
    scram: ScramClient | None = None
    pid = key = 0
    kept = bytearray()
    while True:
        kind, body = conn.read_message()
        if kind == b"E":
            raise BackendRefused(wire.message(kind, body))
        if kind == b"R":
            code = wire.auth_code(body)
            if code == wire.AUTH_OK:
                continue
            if code == wire.AUTH_CLEARTEXT:
                conn.send(wire.message(b"p", wire.cstring(password)))
            elif code == wire.AUTH_MD5:
                inner = hashlib.md5((password + user).encode()).hexdigest()  # noqa: S324
                outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()  # noqa: S324
                conn.send(wire.message(b"p", wire.cstring("md5" + outer)))
            elif code == wire.AUTH_SASL:
                offered = [m for m in body[4:].split(b"\0") if m]
                if SCRAM.encode() not in offered:
                    raise _refused("the server offers no SASL mechanism the proxy speaks")
                scram = ScramClient(password)
                conn.send(wire.sasl_initial_response(SCRAM, scram.first()))
            elif code == wire.AUTH_SASL_CONTINUE and scram is not None:
                conn.send(wire.message(b"p", scram.final(body[4:])))
            elif code == wire.AUTH_SASL_FINAL and scram is not None:
                try:
                    scram.verify(body[4:])
                except ScramError as exc:
                    raise _refused(str(exc)) from None
            else:
                raise _refused(f"the server asks for authentication {code}, not spoken here")
        elif kind == b"K":
            pid, key = struct.unpack("!II", body[:8])
        else:
            kept += wire.message(kind, body)
            if kind == b"Z":
                return Login(conn, pid, key, bytes(kept))


def _refused(text: str) -> BackendRefused:
    return BackendRefused(wire.error_response("08001", f"the emulator's proxy: {text}"))


def send_cancel(address: ServerAddress, pid: int, key: int) -> None:
    """Ask the server to cancel the query running in its backend ``pid``."""
    conn = address.open()
    try:
        conn.send(wire.cancel_request(pid, key))
        with contextlib.suppress(ChannelClosed):
            conn.read_exact(1)  # the server closes it once the request is handled
    finally:
        conn.close()
