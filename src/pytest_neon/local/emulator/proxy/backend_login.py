"""The proxy as a client of the real server: connect, log in as the role (SCRAM-SHA-256,
md5, cleartext or trust: whatever the server asks), and read up to ``ReadyForQuery``."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import struct
from dataclasses import dataclass

from pytest_neon.local.emulator.proxy import wire
from pytest_neon.local.emulator.proxy.channel import Channel
from pytest_neon.local.emulator.proxy.scram import SCRAM, ScramClient, ScramError

CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class ServerAddress:
    """Where the real server listens: a TCP host and port, or a Unix-socket directory."""

    host: str
    port: int
    tls: bool = False  # ask for TLS first (the superuser URL's sslmode asks for it)

    async def open(self) -> Channel:
        """A connected :class:`Channel` to the server."""
        loop = asyncio.get_running_loop()
        if self.host.startswith("/"):
            path = f"{self.host}/.s.PGSQL.{self.port}"
            _, channel = await loop.create_unix_connection(Channel, path)
        else:
            _, channel = await loop.create_connection(Channel, self.host or "localhost", self.port)
        if self.tls and not self.host.startswith("/"):
            channel = await _upgrade(channel)
        return channel


async def _upgrade(channel: Channel) -> Channel:
    channel.write(struct.pack("!II", 8, wire.SSL_REQUEST))
    if await channel.read_exact(1) != b"S":
        raise BackendRefused(wire.error_response("08001", "the server refused TLS"))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # as libpq's sslmode=require
    assert channel.transport is not None
    loop = asyncio.get_running_loop()
    transport = await loop.start_tls(channel.transport, channel, context)
    assert isinstance(transport, asyncio.Transport)
    channel.transport = transport
    return channel


class BackendRefused(Exception):
    """The server refused the login; ``error`` is its ``ErrorResponse`` (to pass on)."""

    def __init__(self, error: bytes) -> None:
        super().__init__("the server refused the login")
        self.error = error


@dataclass
class Login:
    """A logged-in session: its channel, its cancel key, and the server's messages after
    ``AuthenticationOk`` (``ParameterStatus``, notices), ``ReadyForQuery`` last."""

    channel: Channel
    pid: int
    key: int
    messages: bytes


async def log_in(address: ServerAddress, user: str, password: str, params: dict[str, str]) -> Login:
    """Log ``user`` in with ``params`` (which name the database)."""
    channel = await asyncio.wait_for(address.open(), CONNECT_TIMEOUT)
    try:
        return await asyncio.wait_for(_handshake(channel, user, password, params), CONNECT_TIMEOUT)
    except BaseException:
        channel.close()
        raise


async def _handshake(channel: Channel, user: str, password: str, params: dict[str, str]) -> Login:
    channel.write(wire.startup_packet({"user": user, **params}))
    scram: ScramClient | None = None
    pid = key = 0
    kept = bytearray()
    while True:
        kind, body = await channel.read_message()
        if kind == b"E":
            raise BackendRefused(wire.message(kind, body))
        if kind == b"R":
            code = wire.auth_code(body)
            if code == wire.AUTH_OK:
                continue
            if code == wire.AUTH_CLEARTEXT:
                channel.write(wire.message(b"p", wire.cstring(password)))
            elif code == wire.AUTH_MD5:
                inner = hashlib.md5((password + user).encode()).hexdigest()  # noqa: S324
                outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()  # noqa: S324
                channel.write(wire.message(b"p", wire.cstring("md5" + outer)))
            elif code == wire.AUTH_SASL:
                offered = [m for m in body[4:].split(b"\0") if m]
                if SCRAM.encode() not in offered:
                    raise _refused("the server offers no SASL mechanism the proxy speaks")
                scram = ScramClient(password)
                channel.write(wire.sasl_initial_response(SCRAM, scram.first()))
            elif code == wire.AUTH_SASL_CONTINUE and scram is not None:
                channel.write(wire.message(b"p", scram.final(body[4:])))
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
                return Login(channel, pid, key, bytes(kept))


def _refused(text: str) -> BackendRefused:
    return BackendRefused(wire.error_response("08001", f"the emulator's proxy: {text}"))


async def send_cancel(address: ServerAddress, pid: int, key: int) -> None:
    """Ask the server to cancel the query running in its backend ``pid``."""
    channel = await asyncio.wait_for(address.open(), CONNECT_TIMEOUT)
    channel.write(wire.cancel_request(pid, key))
    channel.close()
