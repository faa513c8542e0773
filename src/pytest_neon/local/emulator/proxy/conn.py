"""A :class:`PgSocket`: a blocking socket (TLS or not) read as PostgreSQL's handshake
needs it: whole packets and messages, with what was read past them kept for the relay."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct

from pytest_neon.local.emulator.proxy import wire


class ChannelClosed(Exception):
    """The other end went away (or sent something no handshake accepts)."""


class PgSocket:
    """One side of a session during its handshake."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

    def read_exact(self, n: int) -> bytes:
        """``n`` bytes, waiting for them."""
        while len(self._buffer) < n:
            try:
                data = self.sock.recv(65536)
            except OSError as exc:
                raise ChannelClosed(str(exc)) from None
            if not data:
                raise ChannelClosed("the connection closed")
            self._buffer += data
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def read_packet(self) -> bytes:
        """An untyped packet (startup, SSL, cancel): its body after the length."""
        (length,) = struct.unpack("!I", self.read_exact(4))
        if not 8 <= length <= wire.MAX_STARTUP:
            raise ChannelClosed("invalid startup packet length")
        return self.read_exact(length - 4)

    def read_message(self) -> tuple[bytes, bytes]:
        """A typed message: its type byte and body."""
        head = self.read_exact(5)
        (length,) = struct.unpack("!I", head[1:])
        if not 4 <= length <= wire.MAX_HANDSHAKE_MESSAGE:
            raise ChannelClosed("invalid message length")
        return head[:1], self.read_exact(length - 4)

    @property
    def buffered(self) -> int:
        """Bytes read and not taken yet."""
        return len(self._buffer)

    def take_buffered(self) -> bytes:
        """What was read past the handshake (the relay sends it on first)."""
        data, self._buffer = bytes(self._buffer), bytearray()
        return data

    def send(self, data: bytes) -> None:
        """Send all of ``data``."""
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ChannelClosed(str(exc)) from None

    def start_tls(self, context: ssl.SSLContext, *, server_side: bool) -> None:
        """Go on over TLS (nothing may be buffered: it would be from before TLS)."""
        if self._buffer:
            raise ChannelClosed("data sent before TLS was set up")
        try:
            self.sock = context.wrap_socket(self.sock, server_side=server_side)
        except (OSError, ssl.SSLError) as exc:
            raise ChannelClosed(f"TLS handshake failed: {exc}") from None

    def close(self) -> None:
        """Close the socket (over TLS: with a close_notify first, as clients expect)."""
        if isinstance(self.sock, ssl.SSLSocket):
            with contextlib.suppress(OSError, ValueError):
                self.sock.settimeout(1.0)
                self.sock.unwrap()
        with contextlib.suppress(OSError):
            self.sock.close()
