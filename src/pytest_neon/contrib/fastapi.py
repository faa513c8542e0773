"""FastAPI integration: point an app's database dependency at the test's branch or session.

::

    from fastapi.testclient import TestClient
    from pytest_neon.contrib.fastapi import override_db

    from myapp.main import app
    from myapp.db import get_db

    def test_signup(neon_branch_readwrite):
        with override_db(app, get_db, neon_branch_readwrite), TestClient(app) as client:
            assert client.post("/users", json={"email": "a@example.com"}).status_code == 201

A plain helper, no plugin to enable. The same works with ``httpx.AsyncClient`` over
``httpx.ASGITransport(app=app)``.

PYTEST_DONT_REWRITE (a plugin module that ``conftest.py`` may also import from).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from pytest_neon.neon_branch import NeonBranch, sqlalchemy_url

__all__ = ["DbTarget", "override_db"]

DbTarget = NeonBranch | str | Engine | AsyncEngine | Session | AsyncSession
_MISSING = object()


@contextmanager
def override_db(
    app: Any,
    dependency: Callable[..., Any],
    target: DbTarget,
    *,
    asynchronous: bool | None = None,
    **session_options: Any,
) -> Iterator[None]:
    """Make ``dependency`` (e.g. ``get_db``) yield a session on ``target`` in this block.

    ``target`` is one of:

    - a ``NeonBranch`` (``neon_branch_readwrite``, ``neon_branch_readonly``,
      ``neon_branch_shared``) or a DSN: an engine on it for the block, a new session
      per request, closed after the request (commits are the app's, as in production);
    - an ``Engine`` or ``AsyncEngine``: a new session on it per request;
    - a ``Session`` or ``AsyncSession`` (``neon_session``, ``neon_async_session``): that
      session for every request, left open (its owner rolls it back).

    With a branch, a DSN or an engine, the session is an ``AsyncSession`` when
    ``dependency`` is async (``async def``), else a ``Session``; ``asynchronous`` forces
    either. ``session_options`` go to the session (e.g. ``expire_on_commit=False``).
    The previous override, if any, is put back at the end.
    """
    if asynchronous is None:
        asynchronous = inspect.isasyncgenfunction(dependency) or inspect.iscoroutinefunction(
            dependency
        )
    owned: Engine | AsyncEngine | None = None
    if isinstance(target, NeonBranch | str):
        dsn = target.connection_string if isinstance(target, NeonBranch) else target
        url = sqlalchemy_url(dsn)
        # Unpooled when async: a pooled connection would outlive the test's event loop.
        owned = create_async_engine(url, poolclass=NullPool) if asynchronous else create_engine(url)
        target = owned
    override = _override_for(target, session_options)
    overrides: dict[Any, Any] = app.dependency_overrides
    previous = overrides.get(dependency, _MISSING)
    overrides[dependency] = override
    try:
        yield
    finally:
        if previous is _MISSING:
            overrides.pop(dependency, None)
        else:
            overrides[dependency] = previous
        if isinstance(owned, AsyncEngine):
            owned.sync_engine.dispose()  # unpooled: nothing left to close
        elif owned is not None:
            owned.dispose()


def _override_for(target: object, options: dict[str, Any]) -> Callable[..., Any]:
    if isinstance(target, AsyncSession):
        session = target

        async def _given_async() -> AsyncIterator[AsyncSession]:
            yield session

        return _given_async
    if isinstance(target, Session):
        sync_session = target

        def _given() -> Iterator[Session]:
            yield sync_session

        return _given
    if isinstance(target, AsyncEngine):
        async_engine = target

        async def _per_request_async() -> AsyncIterator[AsyncSession]:
            async with AsyncSession(async_engine, **options) as s:
                yield s

        return _per_request_async
    if isinstance(target, Engine):
        engine = target

        def _per_request() -> Iterator[Session]:
            with Session(engine, **options) as s:
                yield s

        return _per_request
    raise TypeError(
        "override_db() target must be a NeonBranch, a DSN, an Engine, an AsyncEngine, "
        f"a Session or an AsyncSession, not {type(target).__name__}"
    )
