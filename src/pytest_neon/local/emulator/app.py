"""The :class:`Emulator`: a Neon API v2 emulator served in-process over a real PostgreSQL."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pytest_neon.local.emulator import ids
from pytest_neon.local.emulator.dispatch import ApiDispatcher
from pytest_neon.local.emulator.faults import Faults, FaultSettings
from pytest_neon.local.emulator.http_server import EmulatorHTTPServer
from pytest_neon.local.emulator.plane.control_plane import ControlPlane
from pytest_neon.local.emulator.routes import BASE_PATH
from pytest_neon.local.emulator.sql.server import Connection, SqlServer
from pytest_neon.redact import register_secret

if TYPE_CHECKING:
    from pytest_neon.local.emulator.proxy.listeners import EndpointProxy

log = logging.getLogger("pytest_neon.emulator")

SWEEP_INTERVAL = 0.5  # seconds between two passes of the expiry sweeper


class Emulator:
    """A Neon API v2 emulator for one project over the PostgreSQL at ``postgres_url``.

    ``postgres_url`` is a superuser DSN. Branches are real databases cloned by template;
    metadata lives in the schema ``neon_emulator`` of the URL's database, so starting again
    with the same ``project_id`` resumes the project. ``api_key=None`` disables auth.
    ``client_address`` is the (host, port) the branches' connection strings name, when not
    the URL's; ``tablespace`` the one the branches' databases go to (default: the
    server's). ``clone_strategy``: ``FILE_COPY`` (default) or ``WAL_LOG`` for every clone,
    or ``AUTO``: the faster one, measured on the server. ``fail_operations`` is the
    probability that a create or restore answers as usual but its operation ends
    ``failed`` (with an error text) and nothing is done.

    With ``endpoint_proxy`` (the default) each endpoint's ``host`` is a listener of its own
    (``127.0.0.1:PORT``) that ends TLS and SCRAM-SHA-256(-PLUS) and leads to the branch's
    real databases, as Neon's proxy does; ``connection_uri`` stays a direct DSN. The
    plugin's own emulator goes without it.
    """

    def __init__(
        self,
        postgres_url: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        project_id: str | None = None,
        api_key: str | None = None,
        request_delay: float = 0.0,
        operation_delay: float = 0.0,
        rate_limit: float | None = None,
        fail_rate: float = 0.0,
        seed: int | None = None,
        max_branches: int = 500,
        fail_operations: float = 0.0,
        client_address: tuple[str, int] | None = None,
        tablespace: str | None = None,
        clone_strategy: str = "FILE_COPY",
        endpoint_proxy: bool = True,
    ) -> None:
        if project_id is not None and not ids.PATH_ID.match(project_id):
            raise ValueError(f"project_id must match {ids.PATH_ID.pattern}")
        if max_branches < 1:
            raise ValueError("max_branches must be >= 1")
        register_secret(api_key)
        self._url = postgres_url
        self._host = host
        self._port = port
        self._project_id = project_id or ids.project_id()
        self._api_key = api_key
        self._max_branches = max_branches
        self._client_address = client_address
        self._tablespace = tablespace
        self._clone_strategy = clone_strategy
        self._endpoint_proxy = endpoint_proxy
        self._proxy: EndpointProxy | None = None
        self._faults = Faults(
            FaultSettings(
                request_delay=request_delay,
                operation_delay=operation_delay,
                rate_limit=rate_limit,
                fail_rate=fail_rate,
                seed=seed,
                fail_operations=fail_operations,
            )
        )
        self._sql: SqlServer | None = None
        self._plane: ControlPlane | None = None
        self._server: EmulatorHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop_sweeper = threading.Event()
        self._state = "new"  # new -> running -> stopped
        self._lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Open (or create) the project and serve in a daemon thread; returns once listening."""
        with self._lock:
            if self._state == "running":
                return self
            if self._state == "stopped":
                raise RuntimeError("a stopped Emulator cannot be restarted; create a new one")
            try:
                self._sql = SqlServer(
                    self._url,
                    client_address=self._client_address,
                    tablespace=self._tablespace,
                    clone_strategy=self._clone_strategy,
                )
                self._plane = ControlPlane(
                    self._sql,
                    self._project_id,
                    faults=self._faults,
                    max_branches=self._max_branches,
                )
                self._plane.open()
                if self._endpoint_proxy:
                    self._proxy = self._start_proxy(self._sql, self._plane)
                api = ApiDispatcher(self._plane, self._faults, self._api_key)
                self._server = EmulatorHTTPServer((self._host, self._port), api)
            except BaseException:
                self._close_backend()
                raise
            serve = threading.Thread(
                target=self._server.serve_forever,  # (stop wakes it at once)
                name=f"neon-emulator-{self._project_id}",
                daemon=True,
            )
            sweep = threading.Thread(
                target=self._sweep_forever,
                name=f"neon-emulator-sweeper-{self._project_id}",
                daemon=True,
            )
            self._threads = [serve, sweep]
            for thread in self._threads:
                thread.start()
            self._state = "running"
        log.info("Neon API emulator for project %s serving at %s", self._project_id, self.api_host)
        return self

    def stop(self, drop: bool = False, *, abandon: bool = False) -> None:
        """Stop serving (idempotent); with ``drop=True`` also drop the project's databases.

        Without ``drop`` the databases and metadata stay, and a new ``Emulator`` with the
        same ``project_id`` resumes the project. ``abandon``: the project is dropped by
        someone else next (the kept server's watchdog): its spare copies are left to that.
        """
        with self._lock:
            if self._state != "running":
                self._state = "stopped"
                return
            self._state = "stopped"
            server = self._server
            assert server is not None
            server.shutdown()
            server.api.stopping = True
            if not server.api.wait_idle(timeout=30):
                log.warning("requests still running at shutdown")
            server.close_clients()
            server.server_close()
            self._stop_sweeper.set()
            for thread in self._threads:
                thread.join(timeout=10)
            try:
                if drop and self._plane is not None:
                    self._plane.drop_everything()
                    log.info("dropped project %s", self._project_id)
            finally:
                self._close_backend(abandon=abandon and not drop)
        log.info("Neon API emulator for project %s stopped", self._project_id)

    def _start_proxy(self, sql: SqlServer, plane: ControlPlane) -> EndpointProxy:
        # imported here: the plugin's own emulator never loads asyncio, ssl or the proxy
        from pytest_neon.local.emulator.proxy.backend_login import ServerAddress
        from pytest_neon.local.emulator.proxy.listeners import EndpointProxy
        from pytest_neon.local.emulator.proxy.tls import server_tls

        tls = sql.sslmode in ("require", "verify-ca", "verify-full")
        address = ServerAddress(sql.host, sql.port, tls=tls)
        proxy = EndpointProxy(plane.endpoint_access, address, bind=self._host, tls=server_tls())
        proxy.start()
        plane.serve_endpoints(proxy)
        return proxy

    def _close_backend(self, *, abandon: bool = False) -> None:
        if self._proxy is not None:
            if self._plane is not None:
                self._plane.serve_endpoints(None)
            self._proxy.stop()
            self._proxy = None
        if self._plane is not None:
            self._plane.close(drop_spares=not abandon)
        if self._sql is not None:
            self._sql.close()

    def _sweep_forever(self) -> None:
        while not self._stop_sweeper.wait(SWEEP_INTERVAL):
            try:
                assert self._plane is not None
                self._plane.sweep()
            except Exception:
                log.warning("expiry sweep failed", exc_info=True)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- settings at run time -----------------------------------------------------------------

    def configure_faults(self, **changes: Any) -> FaultSettings:
        """Change fault settings while serving: ``request_delay``, ``operation_delay``,
        ``rate_limit``, ``fail_rate``, ``fail_operations`` or ``seed``. Returns the new
        settings."""
        return self._faults.configure(**changes)

    @property
    def faults(self) -> FaultSettings:
        """The current fault settings."""
        return self._faults.settings

    # --- properties ----------------------------------------------------------------------------

    @property
    def project_id(self) -> str:
        """The emulated project's id."""
        return self._project_id

    @property
    def api_key(self) -> str | None:
        """The API key requests must carry as ``Bearer``, or ``None`` when auth is off."""
        return self._api_key

    @property
    def api(self) -> ApiDispatcher:
        """The request handler (for in-process callers; see ``pytest_neon.local.transport``)."""
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return self._server.api

    @property
    def port(self) -> int:
        """The TCP port the emulator listens on."""
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return int(self._server.server_address[1])

    @property
    def api_host(self) -> str:
        """The API base URL, e.g. ``http://127.0.0.1:PORT/api/v2`` (for ``NEON_API_HOST``)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}{BASE_PATH}"

    @property
    def endpoint_tls(self) -> bool | None:
        """Whether the endpoints' listeners serve TLS (``None``: no listeners)."""
        if self._proxy is None:
            return None
        return self._proxy.tls is not None

    @property
    def endpoint_certificate(self) -> str | None:
        """The PEM certificate of the endpoints' listeners (for ``sslmode=verify-full``)."""
        if self._proxy is None or self._proxy.tls is None:
            return None
        return self._proxy.tls.certificate_pem

    @property
    def default_branch_id(self) -> str:
        """The id of the project's default branch (``main``)."""
        if self._plane is None:
            raise RuntimeError("the emulator is not started")
        return self._plane.default_branch_id

    def name_database(self, branch_name: str, real_name: str) -> None:
        """Give the database of the next branch named ``branch_name`` (of a parent with one
        database) the real name ``real_name``: its connection string is then known before
        it exists (the plugin's kept local server)."""
        self.control_plane.settings.database_names[branch_name] = real_name

    @contextlib.contextmanager
    def server_connection(self) -> Iterator[Connection]:
        """An autocommit connection of the server's superuser, from the emulator's pool
        (internal to the plugin: one connection less to open at a run's start)."""
        if self._sql is None:
            raise RuntimeError("the emulator is not started")
        with self._sql.connection() as conn:
            yield conn

    def seed_database(self, branch_name: str, template: str) -> None:
        """Make the database of the next branch named ``branch_name`` (of a parent with one
        database) a copy of the server's database ``template`` rather than of its parent's:
        the kept server's migration cache, in one copy (internal to the plugin)."""
        self.control_plane.settings.database_seeds[branch_name] = template

    def real_database(self, branch_id: str) -> str:
        """The real database holding branch ``branch_id``'s only (or first) database
        (internal to the plugin: a parked project's, see ``pytest_neon.local.parking``)."""
        return self.control_plane.real_database(branch_id)

    @property
    def control_plane(self) -> ControlPlane:
        """The control plane (internal; for tests that tune it)."""
        if self._plane is None:
            raise RuntimeError("the emulator is not started")
        return self._plane
