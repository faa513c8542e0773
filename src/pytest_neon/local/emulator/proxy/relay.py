"""The :class:`Relay`: logged-in sessions' bytes, both ways, on the proxy's selector thread
(non-blocking sockets, TLS or not; a side whose peer cannot keep up stops being read)."""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
from collections.abc import Callable

_CHUNK = 64 * 1024
_RETRY = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class _End:
    """One socket of a relayed session."""

    __slots__ = ("events", "on_close", "out", "peer", "reading", "sock")

    def __init__(self, sock: socket.socket, on_close: Callable[[], None]) -> None:
        self.sock = sock
        self.peer: _End = self
        self.out = bytearray()  # what its peer sent that it could not take yet
        self.reading = True
        self.events = 0  # as registered with the selector
        self.on_close = on_close


class Relay:
    """Every relayed session of one proxy, on its ``selector`` (used by one thread)."""

    def __init__(self, selector: selectors.BaseSelector) -> None:
        self._selector = selector
        self._ends: set[_End] = set()
        self._buffer = bytearray(_CHUNK)  # one read buffer: no allocation per read
        self._view = memoryview(self._buffer)

    def add(
        self, client: socket.socket, server: socket.socket, on_close: Callable[[], None]
    ) -> None:
        """Relay between ``client`` and ``server`` (``on_close`` once either side ends)."""
        a, b = _End(client, on_close), _End(server, lambda: None)
        a.peer, b.peer = b, a
        for end in (a, b):
            end.sock.setblocking(False)
            self._ends.add(end)
            self._update(end)
        for end in (a, b):  # TLS may hold bytes already decrypted
            if isinstance(end.sock, ssl.SSLSocket) and end.sock.pending():
                self._read(end)

    def ready(self, end: _End, events: int) -> None:
        """The selector says ``end``'s socket is ready for ``events``."""
        if events & selectors.EVENT_WRITE and end in self._ends:
            self._flush(end)
        if events & selectors.EVENT_READ and end in self._ends:
            self._read(end)

    def close_all(self) -> None:
        """End every session."""
        for end in list(self._ends):
            self._close(end)

    def _read(self, end: _End) -> None:
        while end.reading:
            try:
                size = end.sock.recv_into(self._buffer)
            except _RETRY:
                return
            except OSError:
                self._close(end)
                return
            if not size:
                self._close(end)
                return
            self._send(end.peer, self._view[:size])
            if end not in self._ends:
                return
            if end.peer.out:  # the peer is behind: stop reading until it catches up
                end.reading = False
                self._update(end)
                return
            if not (isinstance(end.sock, ssl.SSLSocket) and end.sock.pending()):
                return

    def _send(self, end: _End, data: memoryview) -> None:
        if end.out:
            end.out += data
            return
        try:
            sent = end.sock.send(data)
        except _RETRY:
            sent = 0
        except OSError:
            self._close(end)
            return
        if sent < len(data):
            end.out += data[sent:]
            self._update(end)

    def _flush(self, end: _End) -> None:
        while end.out:
            try:
                sent = end.sock.send(end.out)
            except _RETRY:
                return
            except OSError:
                self._close(end)
                return
            del end.out[:sent]
        self._update(end)
        peer = end.peer
        if not peer.reading:
            peer.reading = True
            self._update(peer)
            if isinstance(peer.sock, ssl.SSLSocket) and peer.sock.pending():
                self._read(peer)

    def _update(self, end: _End) -> None:
        events = (selectors.EVENT_READ if end.reading else 0) | (
            selectors.EVENT_WRITE if end.out else 0
        )
        if events == end.events:
            return
        if not end.events:
            self._selector.register(end.sock, events, end)
        elif not events:
            self._selector.unregister(end.sock)
        else:
            self._selector.modify(end.sock, events, end)
        end.events = events

    def _close(self, end: _End) -> None:
        for side in (end, end.peer):
            if side not in self._ends:
                continue
            self._ends.discard(side)
            if side.events:
                self._selector.unregister(side.sock)
                side.events = 0
            if isinstance(side.sock, ssl.SSLSocket):
                with contextlib.suppress(OSError, ValueError):
                    side.sock.unwrap()  # close_notify, without waiting for the peer's
            with contextlib.suppress(OSError):
                side.sock.close()
            side.on_close()
