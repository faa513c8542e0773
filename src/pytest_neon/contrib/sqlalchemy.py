"""SQLAlchemy integration: app engines that follow the branch, a session engine, rollback sessions.

Enable it in the top ``conftest.py``::

    pytest_plugins = ["pytest_neon.contrib.sqlalchemy"]

What it adds:

- every engine whose URL is one of the worker's branches (the application's own, built
  from ``DATABASE_URL`` at import) follows the test's branch and replaces connections a
  reset cut (:mod:`pytest_neon.engines`; the plugin also does it by itself once SQLAlchemy
  is imported). :func:`register_engine` and the ini key ``neon_sqlalchemy_engines``
  (``module:attribute`` per line) empty the pools of engines it cannot match after every
  reset. ``pool_pre_ping=True`` on the engine is the alternative that needs no plugin.
- ``neon_session_engine`` (session scope): one pooled engine that follows the test's branch.
- ``neon_session``: a ``Session`` inside an outer transaction, savepoints for the test's own
  commits, everything rolled back after the test. No branch reset is spent on it.
- ``neon_async_session``: the same with an ``AsyncSession`` (psycopg async), for async tests
  run by AnyIO (``@pytest.mark.anyio``); needs ``greenlet`` (``sqlalchemy[asyncio]``).

PYTEST_DONT_REWRITE (a plugin module that ``conftest.py`` may also import from).
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, overload

import pytest
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from pytest_neon import engines
from pytest_neon.ini import add_ini, read_list
from pytest_neon.integration import (
    add_reset_listener,
    checkout,
    current_session,
    forget_rolled_back_work,
    sqlalchemy_url,
    when_session_ready,
)
from pytest_neon.neon_branch import NeonBranch
from pytest_neon.neon_session import NeonSession
from pytest_neon.plugin_state import STATE, env_var

__all__ = [
    "ENGINES_INI",
    "async_rollback_session",
    "neon_async_session",
    "neon_session",
    "neon_session_engine",
    "register_engine",
    "rollback_session",
]

ENGINES_INI = "neon_sqlalchemy_engines"

# Engines whose pools are emptied after each reset. Weak: an engine a test throws away
# is not kept alive by the plugin.
_sync_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
_async_engines: weakref.WeakSet[Engine] = weakref.WeakSet()  # their sync_engine
_lock = threading.Lock()
_GENERATION_KEY = "pytest_neon_generation"
_generation = 0  # bumped by every reset; async pool entries older than it are replaced
_listening: weakref.WeakSet[NeonSession] = weakref.WeakSet()

# Tests that already say which branch they want; a test that asks for neon_session_engine
# without any of them is treated as a readwrite test.
_BRANCH_FIXTURES = frozenset(
    {
        "neon_session",
        "neon_async_session",
        "neon_branch_readwrite",
        "neon_branch_readonly",
        "neon_branch_shared",
        "neon_branch",
    }
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ini key naming the application's engines."""
    add_ini(
        parser,
        ENGINES_INI,
        "application SQLAlchemy engines (module:attribute, one per line) whose pools "
        "pytest-neon empties after every branch reset (pytest_neon.contrib.sqlalchemy)",
        "linelist",
        default=[],
    )


def pytest_configure(config: pytest.Config) -> None:
    """Listen to this process's resets, from the moment it has a session (made before
    ``conftest.py``, or, on the kept local server, when a test first needs it)."""
    when_session_ready(config, _listen)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The application engines named in the ini key."""
    try:
        specs = read_list(config, ENGINES_INI, "linelist")
    except (pytest.UsageError, ValueError, TypeError):
        return []
    if not specs:
        return []
    return [f"neon-sqlalchemy: pools emptied after every reset: {', '.join(specs)}"]


@overload
def register_engine(engine: Engine) -> Engine: ...
@overload
def register_engine(engine: AsyncEngine) -> AsyncEngine: ...
def register_engine(engine: Engine | AsyncEngine) -> Engine | AsyncEngine:
    """Empty ``engine``'s pool after every branch reset; returns ``engine``.

    For the application's own engines, e.g. in ``conftest.py``::

        from myapp.db import engine
        register_engine(engine)

    A reset replaces the branch's data and drops its server connections; without this,
    the first query on a pooled connection fails (``pool_pre_ping=True`` is the other cure,
    at one round trip per checkout). Works for ``Engine`` and ``AsyncEngine``.
    """
    if isinstance(engine, AsyncEngine):
        sync = engine.sync_engine
        with _lock:
            if sync in _async_engines:
                return engine
            _async_engines.add(sync)
        # An async pool cannot be closed from the (synchronous) reset: its connections
        # belong to an event loop. Each one is replaced at its next checkout instead.
        event.listen(sync, "connect", _stamp_generation)
        event.listen(sync, "checkout", _refuse_stale)
    elif isinstance(engine, Engine):
        with _lock:
            _sync_engines.add(engine)
    else:
        raise TypeError(
            f"register_engine() takes a SQLAlchemy Engine or AsyncEngine, not {engine!r}"
        )
    return engine


def _stamp_generation(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info[_GENERATION_KEY] = _generation


def _refuse_stale(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
    if record.info.get(_GENERATION_KEY, 0) < _generation:
        raise DisconnectionError("pytest-neon: the branch was reset since this connection opened")


def _after_reset(branch: NeonBranch) -> None:
    """Reset listener: drop every registered engine's pooled connections."""
    global _generation
    with _lock:
        _generation += 1
        engines = list(_sync_engines)
    for engine in engines:
        engine.dispose()


def _session_or_none(config: pytest.Config) -> NeonSession | None:
    state = config.stash.get(STATE, None)
    return state.session if state is not None else None


def _listen(session: NeonSession | None) -> None:
    """Make every engine on the worker branch follow the test's branch; add the reset
    listener to ``session``, once."""
    if session is None:
        return
    engines.follow(session.pool)
    with _lock:
        if session in _listening:
            return
        _listening.add(session)
    add_reset_listener(session, _after_reset)


def _resolve(spec: str) -> Engine | AsyncEngine:
    __tracebackhide__ = True
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{spec!r} is not module:attribute (e.g. myapp.db:engine)")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not isinstance(target, Engine | AsyncEngine):
        raise TypeError(f"{spec} is a {type(target).__name__}, not a SQLAlchemy Engine")
    return target


def _refuse_stuck(session: NeonSession | None, engine: Engine | AsyncEngine, spec: str) -> None:
    """A registered engine that does not follow the branch stays on one: a worker must
    then have just one."""
    __tracebackhide__ = True
    if session is None or session.pool.size < 2 or engines.follows(engine):
        return
    pytest.fail(
        f"pytest-neon: {spec} stays on one branch (its URL is not this worker's branch: "
        f"engines built from {session.settings.env_var} follow the test's branch), but "
        f"each worker takes turns on {session.pool.size}: "
        "set --neon-worker-branches / NEON_WORKER_BRANCHES / neon_worker_branches to 1, "
        f"or build the engine from {session.settings.env_var}",
        pytrace=False,
    )


@pytest.fixture(scope="session", autouse=True)
def _neon_sqlalchemy_app_engines(pytestconfig: pytest.Config) -> None:
    """Register the engines named by the ini key (importing their modules if needed)."""
    session = _session_or_none(pytestconfig)
    for spec in read_list(pytestconfig, ENGINES_INI, "linelist"):
        try:
            register_engine(_resolve(spec))
        except Exception as exc:
            pytest.fail(
                f"pytest-neon: {ENGINES_INI} = {spec}: {type(exc).__name__}: {exc}",
                pytrace=False,
            )
    with _lock:
        registered = [*_sync_engines, *_async_engines]
    for engine in registered:
        _refuse_stuck(session, engine, f"registered engine {engine.url!r}")


@pytest.fixture(autouse=True)
def _neon_session_engine_guard(request: pytest.FixtureRequest) -> None:
    """A test that uses ``neon_session_engine`` alone is a readwrite test (reset after)."""
    names = request.fixturenames
    if "neon_session_engine" in names and _BRANCH_FIXTURES.isdisjoint(names):
        request.getfixturevalue("neon_branch_readwrite")


class _BranchEngines:
    """One pooled engine per branch of this worker, made on first use; each one's pool is
    emptied after its branch is reset. Also one unpooled async engine per branch."""

    def __init__(self) -> None:
        self._engines: dict[str, Engine] = {}
        self._async: dict[str, AsyncEngine] = {}
        self._lock = threading.Lock()

    def get(self, branch: NeonBranch) -> Engine:
        with self._lock:
            engine = self._engines.get(branch.connection_string)
            if engine is None:
                engine = create_engine(sqlalchemy_url(branch.connection_string))
                self._engines[branch.connection_string] = engine
            return engine

    def get_async(self, branch: NeonBranch) -> AsyncEngine:
        """The branch's async engine: unpooled, so no connection outlives a test's loop
        (and a reset leaves it nothing to empty)."""
        with self._lock:
            engine = self._async.get(branch.connection_string)
            if engine is None:
                engine = create_async_engine(
                    sqlalchemy_url(branch.connection_string), poolclass=NullPool
                )
                self._async[branch.connection_string] = engine
            return engine

    def after_reset(self, branch: NeonBranch) -> None:
        with self._lock:
            engine = self._engines.get(branch.connection_string)
        if engine is not None:
            engine.dispose()

    def dispose(self) -> None:
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
            unpooled, self._async = list(self._async.values()), {}
        for engine in engines:
            engine.dispose()
        for async_engine in unpooled:
            # NullPool holds no connection: disposing needs no event loop
            async_engine.sync_engine.dispose()


@pytest.fixture(scope="session")
def _neon_branch_engines(
    _neon_source: str, pytestconfig: pytest.Config
) -> Iterator[_BranchEngines]:
    session = current_session(pytestconfig)
    engines = _BranchEngines()
    add_reset_listener(session, engines.after_reset)
    try:
        yield engines
    finally:
        engines.dispose()


@pytest.fixture(scope="session")
def neon_session_engine(
    _neon_branch_engines: _BranchEngines, pytestconfig: pytest.Config
) -> Engine:
    """One pooled SQLAlchemy engine for the whole session, on the test's branch.

    Built on the worker's first branch, it follows the test's branch from then on
    (:mod:`pytest_neon.engines`); connections a reset cut are replaced. A test that uses
    it without ``neon_session`` or a ``neon_branch_*`` fixture gets
    ``neon_branch_readwrite`` too (reset after it).
    """
    session = current_session(pytestconfig)
    branch = session.worker_branch
    if branch is None:  # pragma: no cover - _neon_source always creates it
        pytest.fail("pytest-neon: this worker has no branch", pytrace=False)
    return _neon_branch_engines.get(branch)


@pytest.fixture
def _neon_rollback_branch(_neon_source: str, pytestconfig: pytest.Config) -> Iterator[NeonBranch]:
    """The worker branch in the migrated state for a test that rolls everything back.

    Never reset after the test: whatever the test commits outside the rollback session
    (another engine, another connection) leaks into later tests.
    """
    session, branch = checkout(pytestconfig)
    with env_var(session.settings.env_var, branch.connection_string):
        yield branch
    forget_rolled_back_work(session)  # the rolled-back work is in the WAL all the same


@contextmanager
def rollback_session(bind: Engine | Connection, **options: Any) -> Iterator[Session]:
    """A ``Session`` in an outer transaction on ``bind``, rolled back at the end.

    The code under test may call ``commit()`` and ``rollback()``: they act on savepoints
    (``join_transaction_mode="create_savepoint"``). ``options`` go to ``Session``.
    """
    connection = bind.connect() if isinstance(bind, Engine) else bind
    outer = connection.begin() if not connection.in_transaction() else None
    session = Session(bind=connection, join_transaction_mode="create_savepoint", **options)
    try:
        yield session
    finally:
        try:
            session.close()
        finally:
            try:
                if outer is not None and outer.is_active:
                    outer.rollback()
            finally:
                if connection is not bind:
                    connection.close()


@pytest.fixture
def neon_session(
    _neon_rollback_branch: NeonBranch, _neon_branch_engines: _BranchEngines
) -> Iterator[Session]:
    """A ``Session`` whose work (commits included) is rolled back after the test; no reset.

    It runs in one outer transaction on a pooled connection of the engine kept for the
    test's branch; the test's commits
    release savepoints. Work done on other connections is not undone.
    """
    with rollback_session(_neon_branch_engines.get(_neon_rollback_branch)) as session:
        yield session


@asynccontextmanager
async def async_rollback_session(bind: AsyncEngine, **options: Any) -> AsyncIterator[AsyncSession]:
    """The ``AsyncSession`` counterpart of :func:`rollback_session`."""
    async with bind.connect() as connection:
        outer = await connection.begin()
        session = AsyncSession(bind=connection, join_transaction_mode="create_savepoint", **options)
        try:
            yield session
        finally:
            try:
                await session.close()
            finally:
                if outer.is_active:
                    await outer.rollback()


def _require_greenlet() -> None:
    __tracebackhide__ = True
    if importlib.util.find_spec("greenlet") is None:
        pytest.fail(
            "pytest-neon: SQLAlchemy's asyncio support needs greenlet: "
            'pip install "sqlalchemy[asyncio]"',
            pytrace=False,
        )


@pytest.fixture
def _neon_async_engine(
    _neon_rollback_branch: NeonBranch, _neon_branch_engines: _BranchEngines
) -> AsyncEngine:
    """The branch's unpooled async engine (no connection outlives the test's loop)."""
    _require_greenlet()
    return _neon_branch_engines.get_async(_neon_rollback_branch)


@pytest.fixture
async def neon_async_session(_neon_async_engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """An ``AsyncSession`` rolled back after the test, like ``neon_session``; no reset.

    For async tests run by AnyIO (``@pytest.mark.anyio``). The driver is psycopg's async
    connection; the engine is unpooled, so nothing outlives the test's event loop.
    """
    async with async_rollback_session(_neon_async_engine) as session:
        yield session
