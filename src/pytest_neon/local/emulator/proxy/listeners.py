"""The :class:`EndpointProxy`: a listener per endpoint, all served by one event loop on
one thread; started and stopped with the standalone emulator."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
from collections.abc import Callable

from pytest_neon.local.emulator.proxy.backend_login import ServerAddress
from pytest_neon.local.emulator.proxy.channel import Channel
from pytest_neon.local.emulator.proxy.session import ProxyState, serve
from pytest_neon.local.emulator.proxy.targets import Directory, Target
from pytest_neon.local.emulator.proxy.tls import ServerTls

log = logging.getLogger("pytest_neon.emulator")

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


class _ClientChannel(Channel):
    """A client's channel: its session starts when it connects."""

    def __init__(self, proxy: EndpointProxy, endpoint_id: str) -> None:
        super().__init__()
        self._proxy = proxy
        self._endpoint_id = endpoint_id

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._proxy._track(self, self._endpoint_id)


class EndpointProxy:
    """Listeners on ``bind`` (an address), one per endpoint, leading to the real server at
    ``server``; ``tls`` ends TLS on them (``None``: plain connections only)."""

    def __init__(
        self, directory: Directory, server: ServerAddress, *, bind: str, tls: ServerTls | None
    ) -> None:
        self._bind = bind
        self._advertised = _WILDCARDS.get(bind, bind)
        self._tls = tls
        self._directory = directory
        self._server = server
        self._lock = threading.Lock()
        self._listeners: dict[str, tuple[asyncio.Server, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._lookups = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="neon-emulator-proxy-lookup"
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="neon-emulator-proxy", daemon=True
        )
        self._state = ProxyState(directory, server, tls, self._lookup)
        self._stopped = False

    @property
    def tls(self) -> ServerTls | None:
        """The listeners' TLS (``None``: without TLS)."""
        return self._tls

    def start(self) -> EndpointProxy:
        """Run the event loop."""
        self._thread.start()
        return self

    def host(self, endpoint_id: str) -> str:
        """``address:port`` of ``endpoint_id``'s listener (opened on first use)."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("the endpoint proxy is stopped")
            known = self._listeners.get(endpoint_id)
            if known is None:
                known = self._listen(endpoint_id)
                self._listeners[endpoint_id] = known
        host = f"[{self._advertised}]" if ":" in self._advertised else self._advertised
        return f"{host}:{known[1]}"

    def _listen(self, endpoint_id: str) -> tuple[asyncio.Server, int]:
        family = socket.AF_INET6 if ":" in self._advertised else socket.AF_INET
        sock = socket.create_server((self._bind, 0), family=family, backlog=128)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        port = int(sock.getsockname()[1])

        def factory() -> Channel:
            return _ClientChannel(self, endpoint_id)

        made = asyncio.run_coroutine_threadsafe(
            self._loop.create_server(factory, sock=sock), self._loop
        )
        try:
            server = made.result(timeout=10)
        except BaseException:
            sock.close()
            raise
        log.debug("endpoint %s listens on port %d", endpoint_id, port)
        return server, port

    def close(self, endpoint_id: str) -> None:
        """Close ``endpoint_id``'s listener (its sessions end with their databases')."""
        with self._lock:
            known = self._listeners.pop(endpoint_id, None)
        if known is not None and not self._stopped:
            self._loop.call_soon_threadsafe(known[0].close)

    def stop(self) -> None:
        """Close every listener and session, and end the loop's thread (idempotent)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            listeners, self._listeners = list(self._listeners.values()), {}
        if self._thread.is_alive():
            done = asyncio.run_coroutine_threadsafe(self._shutdown(listeners), self._loop)
            try:
                done.result(timeout=10)
            except Exception:
                log.warning("the endpoint proxy did not stop cleanly", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()
        self._lookups.shutdown(wait=False, cancel_futures=True)

    async def _shutdown(self, listeners: list[tuple[asyncio.Server, int]]) -> None:
        for server, _ in listeners:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    # --- on the loop ---------------------------------------------------------------------------

    def _track(self, client: Channel, endpoint_id: str) -> None:
        task = self._loop.create_task(serve(client, endpoint_id, self._state))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lookup(self, ask: Callable[[], Target]) -> Target:
        return await self._loop.run_in_executor(self._lookups, ask)
