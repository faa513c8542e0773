"""The :class:`EndpointProxy`: a listener per endpoint; one selector thread accepts on all
of them and relays every logged-in session, a small pool of threads runs handshakes (TLS,
SCRAM, the login on the real server). Started and stopped with the standalone emulator."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import queue
import selectors
import socket
import threading
from collections.abc import Callable

from pytest_neon.local.emulator.proxy.backend_login import ServerAddress
from pytest_neon.local.emulator.proxy.conn import ChannelClosed, PgSocket
from pytest_neon.local.emulator.proxy.relay import Relay
from pytest_neon.local.emulator.proxy.session import ProxyState, Refused, greeting, handshake
from pytest_neon.local.emulator.proxy.targets import Directory
from pytest_neon.local.emulator.proxy.tls import ServerTls

log = logging.getLogger("pytest_neon.emulator")

HANDSHAKE_TIMEOUT = 30.0
HANDSHAKE_THREADS = 8
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


class _Listener:
    __slots__ = ("endpoint_id", "sock")

    def __init__(self, endpoint_id: str, sock: socket.socket) -> None:
        self.endpoint_id = endpoint_id
        self.sock = sock


class EndpointProxy:
    """Listeners on ``bind`` (an address), one per endpoint, leading to the real server at
    ``server``; ``tls`` ends TLS on them (``None``: plain connections only)."""

    def __init__(
        self, directory: Directory, server: ServerAddress, *, bind: str, tls: ServerTls | None
    ) -> None:
        self._bind = bind
        self._advertised = _WILDCARDS.get(bind, bind)
        self._tls = tls
        self._state = ProxyState(directory, server, tls)
        self._lock = threading.Lock()
        self._ports: dict[str, int] = {}
        self._listeners: dict[str, _Listener] = {}  # on the selector thread only
        self._handshaking: set[PgSocket] = set()
        self._selector = selectors.DefaultSelector()
        self._relay = Relay(self._selector)
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            HANDSHAKE_THREADS, thread_name_prefix="neon-emulator-proxy-handshake"
        )
        self._thread = threading.Thread(target=self._run, name="neon-emulator-proxy", daemon=True)
        self._stopping = False

    @property
    def tls(self) -> ServerTls | None:
        """The listeners' TLS (``None``: without TLS)."""
        return self._tls

    def start(self) -> EndpointProxy:
        """Run the selector thread."""
        self._thread.start()
        return self

    def host(self, endpoint_id: str) -> str:
        """``address:port`` of ``endpoint_id``'s listener (opened on first use)."""
        with self._lock:
            if self._stopping:
                raise RuntimeError("the endpoint proxy is stopped")
            port = self._ports.get(endpoint_id)
            if port is None:
                port = self._listen(endpoint_id)
                self._ports[endpoint_id] = port
        host = f"[{self._advertised}]" if ":" in self._advertised else self._advertised
        return f"{host}:{port}"

    def _listen(self, endpoint_id: str) -> int:
        family = socket.AF_INET6 if ":" in self._advertised else socket.AF_INET
        sock = socket.create_server((self._bind, 0), family=family, backlog=128)
        sock.setblocking(False)
        listener = _Listener(endpoint_id, sock)

        def register() -> None:
            self._listeners[endpoint_id] = listener
            self._selector.register(sock, selectors.EVENT_READ, listener)

        self._call(register)
        port = int(sock.getsockname()[1])
        log.debug("endpoint %s listens on port %d", endpoint_id, port)
        return port

    def close(self, endpoint_id: str) -> None:
        """Close ``endpoint_id``'s listener (its sessions end with their databases')."""
        with self._lock:
            if self._ports.pop(endpoint_id, None) is None or self._stopping:
                return

        def unregister() -> None:
            listener = self._listeners.pop(endpoint_id, None)
            if listener is not None:
                self._selector.unregister(listener.sock)
                listener.sock.close()

        self._call(unregister)

    def stop(self) -> None:
        """Close every listener and session and end the threads (idempotent)."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        self._call(lambda: None)  # wakes the loop, which sees _stopping
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        else:
            self._close_everything()
        with self._lock:
            for conn in self._handshaking:  # wakes its thread
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
        self._pool.shutdown(wait=True, cancel_futures=True)

    # --- the selector thread -------------------------------------------------------------------

    def _call(self, fn: Callable[[], None]) -> None:
        self._calls.put(fn)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, events in self._selector.select():
                    data = key.data
                    if data is None:
                        self._drain_calls()
                    elif isinstance(data, _Listener):
                        self._accept(data)
                    else:
                        self._relay.ready(data, events)
        except Exception:
            log.warning("the endpoint proxy's loop failed", exc_info=True)
        finally:
            self._close_everything()

    def _drain_calls(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            try:
                fn = self._calls.get_nowait()
            except queue.Empty:
                return
            fn()

    def _accept(self, listener: _Listener) -> None:
        while True:
            try:
                sock, _ = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(True)
            sock.settimeout(HANDSHAKE_TIMEOUT)
            client = PgSocket(sock)
            with self._lock:
                if self._stopping:
                    client.close()
                    return
                self._handshaking.add(client)
            self._pool.submit(self._serve, client, listener.endpoint_id)

    def _close_everything(self) -> None:
        self._drain_calls_quietly()
        for listener in self._listeners.values():
            _close(listener.sock)
        self._listeners.clear()
        self._relay.close_all()
        self._selector.close()
        _close(self._wake_r)
        _close(self._wake_w)

    def _drain_calls_quietly(self) -> None:
        try:
            self._drain_calls()
        except Exception:
            log.debug("a late call of the endpoint proxy failed", exc_info=True)

    # --- a handshake thread --------------------------------------------------------------------

    def _serve(self, client: PgSocket, endpoint_id: str) -> None:
        """Take ``client`` through its handshake, then hand it to the relay."""
        handed = False
        try:
            login = handshake(client, endpoint_id, self._state)
            if login is None:
                return  # a cancel request, answered
            backend = login.conn
            keys = self._state.new_cancel_key(login)
            try:
                client.send(greeting(login, keys))
                early = client.take_buffered(), backend.take_buffered()
                if early[0]:
                    backend.send(early[0])
                if early[1]:
                    client.send(early[1])
            except BaseException:
                backend.close()
                self._state.forget_cancel_key(keys)
                raise

            def relay() -> None:
                if self._stopping:
                    client.close()
                    backend.close()
                    self._state.forget_cancel_key(keys)
                    return
                self._relay.add(
                    client.sock, backend.sock, lambda: self._state.forget_cancel_key(keys)
                )

            with self._lock:
                self._handshaking.discard(client)
            self._call(relay)
            handed = True
        except Refused as refused:
            with contextlib.suppress(ChannelClosed):
                client.send(refused.error)
        except (ChannelClosed, OSError):
            pass  # the client went away, or took too long
        except Exception:
            log.warning("endpoint %s: a handshake failed", endpoint_id, exc_info=True)
        finally:
            if not handed:
                with self._lock:
                    self._handshaking.discard(client)
                client.close()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
