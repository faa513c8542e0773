"""SQLAlchemy engines follow the test's branch, with no configuration.

Two class-level listeners see every engine, sync or async, made before or after they
were added:

- ``do_connect``: a new connection whose address (host, port, database) is one of this
  process's worker branches goes to the branch the running test has instead (and to its
  pooler host if it asked for the pooler); the connection is stamped with that branch and
  how many resets it has seen.
- the pool's ``checkout``: a pooled connection stamped with another branch, or opened
  before the branch's last reset, is refused; SQLAlchemy replaces it with a new one,
  which the first listener sends to the current branch.

Engines on other addresses are left alone. A connection held open across tests (a
session-scoped ``Connection``) cannot be moved: hold engines, not connections.

Installed by the SQLAlchemy integration, and by the plugin itself at a checkout once the
application has imported SQLAlchemy. Never imports pytest.
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from pytest_neon.neon_branch import NeonBranch
    from pytest_neon.worker_pool import WorkerPool

log = logging.getLogger("pytest_neon.engines")

#: key in a pool entry's ``info``: (router, branch id or None when not ours, resets)
_STAMP = "pytest_neon_branch"
Stamp = tuple[int, str | None, int]
_DATABASE_KEYS = ("dbname", "database")  # psycopg and psycopg2; asyncpg and pg8000
_PORT = 5432


class Address(NamedTuple):
    """Where a connection goes: host (lower case), port, database."""

    host: str
    port: int
    database: str


def _port(value: object) -> int:
    try:
        return int(str(value)) if value not in (None, "") else _PORT
    except ValueError:
        return -1  # several ports ("5432,5433"): no branch of ours


def _addresses(branch: NeonBranch) -> tuple[Address, Address]:
    """The branch's direct address and the one through Neon's pooler."""
    direct = urlsplit(branch.connection_string)
    pooled = urlsplit(branch.pooled_connection_string)
    database = unquote(direct.path.lstrip("/"))
    return (
        Address((direct.hostname or "").lower(), direct.port or _PORT, database),
        Address((pooled.hostname or "").lower(), pooled.port or _PORT, database),
    )


_tokens = itertools.count(1)


class Router:
    """What the listeners ask: where a connection to an address should go now."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.token = next(_tokens)  # tells its stamps from those of an earlier router
        self._resets: dict[str, int] = {}  # branch id -> resets seen
        self._known: dict[Address, tuple[str, bool]] = {}  # -> (branch id, pooled)
        self._lock = threading.Lock()

    def after_reset(self, branch: NeonBranch) -> None:
        """Reset listener: connections opened before now to ``branch`` are stale."""
        with self._lock:
            self._resets[branch.branch_id] = self._resets.get(branch.branch_id, 0) + 1

    def _lookup(self, address: Address) -> tuple[str, bool] | None:
        found = self._known.get(address)
        if found is None:
            with self._lock:
                for branch in self.pool.branches():
                    direct, pooled = _addresses(branch)
                    self._known[direct] = (branch.branch_id, False)
                    self._known[pooled] = (branch.branch_id, True)
            found = self._known.get(address)
        return found

    def route(self, params: dict[str, Any]) -> Stamp:
        """Point connection ``params`` (a dialect's keyword arguments, changed in place)
        at the current branch when they name one of this process's; the stamp."""
        key = next((k for k in _DATABASE_KEYS if k in params), None)
        host = params.get("host")
        if key is None or not isinstance(host, str):
            return self.not_ours
        address = Address(host.lower(), _port(params.get("port")), str(params[key]))
        found = self._lookup(address)
        current = self.pool.current_branch
        if found is None or current is None:
            return self.not_ours
        if found[0] != current.branch_id:
            target = current.pooled_connection_string if found[1] else current.connection_string
            url = urlsplit(target)
            params["host"] = url.hostname or host
            params["port"] = url.port or _PORT
            params[key] = unquote(url.path.lstrip("/"))
            if url.username is not None and unquote(url.username) == params.get("user"):
                params["password"] = unquote(url.password or "")
        return self.stamp(current)

    @property
    def not_ours(self) -> Stamp:
        """The stamp of a connection to an address that is no worker branch."""
        return (self.token, None, 0)

    def stamp(self, branch: NeonBranch) -> Stamp:
        """What a connection to ``branch`` opened now is stamped with."""
        return (self.token, branch.branch_id, self._resets.get(branch.branch_id, 0))

    def stale(self, stamp: Stamp) -> bool:
        """Whether a connection stamped ``stamp`` no longer serves the current test."""
        current = self.pool.current_branch
        return stamp[1] is not None and current is not None and stamp != self.stamp(current)

    def follows(self, host: str | None, port: int | None, database: str | None) -> bool:
        """Whether an engine on this address follows the test's branch."""
        if not host or database is None:
            return False
        return self._lookup(Address(host.lower(), _port(port), database)) is not None

    def identify(self, driver_connection: Any) -> Stamp:
        """The stamp of a connection opened before this router: one to a worker branch
        counts as stale (when it opened is unknown)."""
        info = getattr(driver_connection, "info", None)
        host, dbname = getattr(info, "host", None), getattr(info, "dbname", None)
        if not isinstance(host, str) or not isinstance(dbname, str):
            return self.not_ours
        found = self._lookup(Address(host.lower(), _port(getattr(info, "port", None)), dbname))
        return (self.token, found[0], -1) if found is not None else self.not_ours


_router: Router | None = None
_installed = False
_install_lock = threading.Lock()


def follow(pool: WorkerPool) -> None:
    """Make every SQLAlchemy engine on one of ``pool``'s branches follow the test's
    branch (imports SQLAlchemy; once per process)."""
    global _router, _installed
    with _install_lock:
        if _router is None or _router.pool is not pool:
            _router = Router(pool)
            pool.add_reset_listener(_router.after_reset)
        if _installed:
            return
        from sqlalchemy import Engine, event
        from sqlalchemy.pool import Pool

        event.listen(Engine, "do_connect", _on_connect)
        event.listen(Pool, "checkout", _on_checkout)
        _installed = True
    log.debug("SQLAlchemy engines follow the worker branch")


def unfollow(pool: WorkerPool) -> None:
    """``pool``'s session ends: its engines follow nothing any more (listeners removed)."""
    global _router, _installed
    with _install_lock:
        if _router is None or _router.pool is not pool:
            return
        _router = None
        if _installed:
            from sqlalchemy import Engine, event
            from sqlalchemy.pool import Pool

            event.remove(Engine, "do_connect", _on_connect)
            event.remove(Pool, "checkout", _on_checkout)
            _installed = False


def follows(engine: Any) -> bool:
    """Whether ``engine`` (``Engine`` or ``AsyncEngine``) follows the test's branch: its
    URL is one of this process's worker branches."""
    url = engine.url
    return _router is not None and _router.follows(url.host, url.port, url.database)


def follow_if_imported(pool: WorkerPool) -> None:
    """:func:`follow`, when the application has imported SQLAlchemy (cheap otherwise)."""
    if (_router is None or _router.pool is not pool) and "sqlalchemy" in sys.modules:
        follow(pool)


def _on_connect(dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
    router = _router
    if router is not None and record is not None:
        record.info[_STAMP] = router.route(cparams)


def _on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    router = _router
    if router is None:
        return
    info = record.info
    stamp = info.get(_STAMP)
    if stamp is None or stamp[0] != router.token:  # opened before this router
        stamp = router.identify(getattr(record, "driver_connection", dbapi_connection))
        info[_STAMP] = stamp
    if router.stale(stamp):
        from sqlalchemy.exc import DisconnectionError

        raise DisconnectionError(
            "pytest-neon: this connection is to a branch the test does not have, or was "
            "reset since it opened"
        )
