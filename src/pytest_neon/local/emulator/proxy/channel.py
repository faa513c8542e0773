"""A :class:`Channel`: one side of a proxied session (the client's socket or the real
server's) as an asyncio protocol. It reads whole messages during the handshake, then
relays every byte to its peer straight from ``data_received``, pausing the peer while its
own socket cannot keep up."""

from __future__ import annotations

import asyncio
import struct

from pytest_neon.local.emulator.proxy import wire


class ChannelClosed(Exception):
    """The other end went away (or sent something no handshake accepts)."""


class Channel(asyncio.Protocol):
    """One side of a session."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._peer: Channel | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        peer = self._peer
        if peer is not None:
            if peer.transport is not None:
                peer.transport.write(data)
            return
        self._buffer += data
        self._wake()

    def eof_received(self) -> bool | None:
        self._closed = True
        self._wake()
        if self._peer is not None:
            self._peer.close()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._wake()
        if self._peer is not None:
            self._peer.close()
        if not self.done.done():
            self.done.set_result(None)

    def pause_writing(self) -> None:
        if self._peer is not None and self._peer.transport is not None:
            self._peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self._peer is not None and self._peer.transport is not None:
            self._peer.transport.resume_reading()

    # --- the handshake -------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read_exact(self, n: int) -> bytes:
        """``n`` bytes, waiting for them."""
        while len(self._buffer) < n:
            if self._closed:
                raise ChannelClosed("the connection closed")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def read_packet(self) -> bytes:
        """An untyped packet (startup, SSL, cancel): its body after the length."""
        (length,) = struct.unpack("!I", await self.read_exact(4))
        if not 8 <= length <= wire.MAX_STARTUP:
            raise ChannelClosed("invalid startup packet length")
        return await self.read_exact(length - 4)

    async def read_message(self) -> tuple[bytes, bytes]:
        """A typed message: its type byte and body."""
        head = await self.read_exact(5)
        (length,) = struct.unpack("!I", head[1:])
        if not 4 <= length <= wire.MAX_HANDSHAKE_MESSAGE:
            raise ChannelClosed("invalid message length")
        return head[:1], await self.read_exact(length - 4)

    @property
    def buffered(self) -> int:
        """Bytes read and not taken yet."""
        return len(self._buffer)

    def write(self, data: bytes) -> None:
        """Send ``data`` (dropped once closed)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        """Close the socket (after what is written)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # --- relaying ------------------------------------------------------------------------------

    def relay(self, peer: Channel) -> None:
        """From now on every byte read goes to ``peer`` (what was read and not taken, first)."""
        self._peer = peer
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            peer.write(data)
        if self._closed:
            peer.close()
