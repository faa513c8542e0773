"""Where pytest_neon.engines sends a connection: Neon-shaped branches (an endpoint host and
its pooler), every dialect's names for the database, and stamps after resets.

The branches here are made by hand with Neon's host names; nothing connects to them: the
router only rewrites the keyword arguments a dialect would connect with.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_neon.api import NeonClient
from pytest_neon.branch_ops import BranchOps
from pytest_neon.config import resolve
from pytest_neon.counters import RunCounters
from pytest_neon.engines import Router
from pytest_neon.neon_branch import NeonBranch
from pytest_neon.worker_pool import Slot, WorkerPool

HOST = "{}.us-east-2.aws.neon.tech"


def _branch(n: int) -> NeonBranch:
    endpoint = f"ep-cool-{n}"
    host = HOST.format(endpoint)
    return NeonBranch(
        branch_id=f"br-{n}",
        project_id="proj",
        connection_string=f"postgresql://neondb_owner:pw{n}@{host}/neondb?sslmode=require",
        host=host,
        parent_id="br-parent",
        endpoint_id=endpoint,
    )


@pytest.fixture
def pool() -> WorkerPool:
    settings = resolve({"project_id": "proj", "api_key": "unused-key-0123"}, {}, {})
    client = NeonClient("unused-key-0123", api_host="http://127.0.0.1:9/api/v2")
    ops = BranchOps(client, settings, run_id="r1", counters=RunCounters())
    pool = WorkerPool(ops, worker="main", size=2)
    pool.start(existing=_branch(1))
    pool.slots.append(Slot(_branch(2)))
    return pool


def _params(n: int, *, pooled: bool = False, key: str = "dbname") -> dict[str, Any]:
    host = HOST.format(f"ep-cool-{n}" + ("-pooler" if pooled else ""))
    return {"host": host, key: "neondb", "user": "neondb_owner", "password": f"pw{n}"}


def _take(pool: WorkerPool, n: int) -> None:
    pool._current = pool.slots[n - 1]  # what a checkout does


@pytest.mark.parametrize("key", ["dbname", "database"])  # psycopg/psycopg2; asyncpg/pg8000
def test_a_connection_to_another_worker_branch_goes_to_the_current_one(
    pool: WorkerPool, key: str
) -> None:
    router = Router(pool)
    _take(pool, 2)
    params = _params(1, key=key)
    stamp = router.route(params)
    assert params == {**_params(2, key=key), "port": 5432}
    assert stamp[1:] == ("br-2", 0)
    assert not router.stale(stamp)
    _take(pool, 1)
    assert router.stale(stamp)  # the test has the other branch now


def test_the_pooler_stays_the_pooler(pool: WorkerPool) -> None:
    router = Router(pool)
    _take(pool, 2)
    params = _params(1, pooled=True)
    router.route(params)
    assert params["host"] == "ep-cool-2-pooler.us-east-2.aws.neon.tech"


def test_another_role_keeps_its_password(pool: WorkerPool) -> None:
    router = Router(pool)
    _take(pool, 2)
    params = {**_params(1), "user": "app_reader", "password": "its-own"}
    router.route(params)
    assert (params["host"], params["password"]) == (HOST.format("ep-cool-2"), "its-own")


def test_a_reset_makes_earlier_connections_stale(pool: WorkerPool) -> None:
    router = Router(pool)
    stamp = router.route(_params(1))
    assert not router.stale(stamp)
    router.after_reset(_branch(1))
    assert router.stale(stamp)
    assert not router.stale(router.route(_params(1)))


@pytest.mark.parametrize(
    "params",
    [
        {"host": "db.example.com", "dbname": "neondb"},  # another server
        {"host": HOST.format("ep-cool-1"), "dbname": "other"},  # another database
        {"host": HOST.format("ep-cool-1"), "port": "6543", "dbname": "neondb"},
        {"dsn": "postgresql://x"},  # no host to match
    ],
)
def test_other_addresses_are_left_alone(pool: WorkerPool, params: dict[str, Any]) -> None:
    router = Router(pool)
    _take(pool, 2)
    before = dict(params)
    stamp = router.route(params)
    assert params == before
    assert stamp[1] is None
    assert not router.stale(stamp)
