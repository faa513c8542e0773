"""pytest_neon.contrib.fastapi: the app's DB dependency on the test's branch or session."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from pytest_neon.contrib.fastapi import override_db
from tests.support.pytest_runs import NeonProject

APP = """
import os

from fastapi import Depends, FastAPI
from pydantic import BaseModel
from sqlalchemy import String, create_engine, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

URL = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
engine = create_engine(URL)
async_engine = create_async_engine(URL)
SessionLocal = sessionmaker(engine)
AsyncSessionLocal = async_sessionmaker(async_engine)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String, unique=True)


class ItemIn(BaseModel):
    name: str


def get_db():
    with SessionLocal() as session:
        yield session


async def get_async_db():
    async with AsyncSessionLocal() as session:
        yield session


app = FastAPI()


@app.post("/items", status_code=201)
def create_item(item: ItemIn, db: Session = Depends(get_db)):
    db.add(Item(name=item.name))
    db.commit()
    return {"name": item.name}


@app.get("/items")
def list_items(db: Session = Depends(get_db)):
    return [{"name": i.name} for i in db.scalars(select(Item).order_by(Item.id))]


@app.post("/async/items", status_code=201)
async def create_item_async(item: ItemIn, db: AsyncSession = Depends(get_async_db)):
    db.add(Item(name=item.name))
    await db.commit()
    return {"name": item.name}


@app.get("/async/items")
async def list_items_async(db: AsyncSession = Depends(get_async_db)):
    return [{"name": i.name} for i in await db.scalars(select(Item).order_by(Item.id))]
"""

CONFTEST = """
import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

import app as application  # imported first: its engines are built on the test branch

pytest_plugins = ["pytest_neon.contrib.sqlalchemy"]


@pytest.fixture(scope="session")
def neon_apply_migrations(_neon_migration_branch):
    url = _neon_migration_branch.connection_string.replace("postgresql://", "postgresql+psycopg://")
    engine = create_engine(url, poolclass=NullPool)
    application.Base.metadata.create_all(engine)
    engine.dispose()
"""

INI = """
[pytest]
neon_sqlalchemy_engines =
    app:engine
    app:async_engine
"""

TESTS = """
import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import DBAPIError

from app import app, get_async_db, get_db
from pytest_neon.contrib.fastapi import override_db


def _async_client():
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.mark.parametrize("n", range(2))
def test_a_override_commits_and_the_next_test_has_a_clean_branch(neon_branch_readwrite, n):
    with override_db(app, get_db, neon_branch_readwrite), TestClient(app) as client:
        assert client.get("/items").json() == []
        assert client.post("/items", json={"name": "same"}).status_code == 201
        assert client.get("/items").json() == [{"name": "same"}]


@pytest.mark.parametrize("n", range(2))
def test_b_the_apps_own_engine_commits_and_is_reset(neon_branch_readwrite, n):
    with TestClient(app) as client:
        assert client.get("/items").json() == []
        assert client.post("/items", json={"name": "same"}).status_code == 201


@pytest.mark.parametrize("n", range(2))
def test_c_rollback_session_behind_the_api(neon_session, n):
    with override_db(app, get_db, neon_session), TestClient(app) as client:
        assert client.get("/items").json() == []
        assert client.post("/items", json={"name": "same"}).status_code == 201
        assert client.get("/items").json() == [{"name": "same"}]


def test_d_readonly_branch_refuses_writes_through_the_api(neon_branch_readonly):
    with override_db(app, get_db, neon_branch_readonly), TestClient(app) as client:
        assert client.get("/items").json() == []
        with pytest.raises(DBAPIError, match="read-only transaction"):
            client.post("/items", json={"name": "nope"})


@pytest.mark.anyio
@pytest.mark.parametrize("n", range(2))
async def test_e_async_client_and_async_dependency(neon_branch_readwrite, n):
    with override_db(app, get_async_db, neon_branch_readwrite):
        async with _async_client() as client:
            assert (await client.get("/async/items")).json() == []
            assert (await client.post("/async/items", json={"name": "same"})).status_code == 201
            assert (await client.get("/async/items")).json() == [{"name": "same"}]


@pytest.mark.anyio
@pytest.mark.parametrize("n", range(2))
async def test_f_async_client_with_the_rollback_async_session(neon_async_session, n):
    with override_db(app, get_async_db, neon_async_session):
        async with _async_client() as client:
            assert (await client.post("/async/items", json={"name": "same"})).status_code == 201
            assert (await client.get("/async/items")).json() == [{"name": "same"}]


@pytest.mark.anyio
async def test_g_async_client_with_the_apps_own_engines(neon_branch_readwrite):
    async with _async_client() as client:
        assert (await client.get("/items")).json() == []
        assert (await client.get("/async/items")).json() == []
        assert (await client.post("/async/items", json={"name": "same"})).status_code == 201


def test_h_overrides_are_put_back():
    assert app.dependency_overrides == {}
"""


def test_api_commits_are_gone_in_the_next_test(neon: NeonProject) -> None:
    neon.pytester.makeini(INI)
    neon.pytester.makeconftest(CONFTEST)
    neon.pytester.makepyfile(app=APP, test_api=TESTS)
    result = neon.run("-v", subprocess=True)
    result.assert_outcomes(passed=13)


def test_override_db_refuses_an_unknown_target_and_leaves_overrides_alone() -> None:
    app = FastAPI()

    def get_db() -> Iterator[None]:
        yield None

    def previous() -> Iterator[None]:
        yield None

    app.dependency_overrides[get_db] = previous
    not_a_target: Any = 42
    with (
        pytest.raises(TypeError, match="must be a NeonBranch"),
        override_db(app, get_db, not_a_target),
    ):
        pass  # pragma: no cover
    assert app.dependency_overrides == {get_db: previous}


def test_override_db_matches_the_dependency_kind_and_cleans_up() -> None:
    dsn = "postgresql://user:secret@127.0.0.1:1/nowhere"  # engines are made, never connected
    app = FastAPI()

    def get_db() -> Iterator[None]:
        yield None

    async def get_async_db() -> AsyncIterator[None]:
        yield None

    with override_db(app, get_db, dsn), override_db(app, get_async_db, dsn):
        assert set(app.dependency_overrides) == {get_db, get_async_db}
        # an async dependency gets an async override (AsyncSession), a sync one a sync one
        assert inspect.isasyncgenfunction(app.dependency_overrides[get_async_db])
        assert inspect.isgeneratorfunction(app.dependency_overrides[get_db])
    assert app.dependency_overrides == {}
