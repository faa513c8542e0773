"""Application engines follow the test's branch: one or two branches per worker, sync and
async, with or without the SQLAlchemy integration, no engine named anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.pytest_runs import WAIT_FOR_BRANCHES, NeonProject

MIGRATIONS = """
import psycopg
import pytest

@pytest.fixture(scope="session")
def neon_apply_migrations(_neon_migration_branch):
    with psycopg.connect(_neon_migration_branch.connection_string) as conn:
        conn.execute("CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)")
"""

# The application: engines built once, at import, from DATABASE_URL (the first worker
# branch then), and one query made at import (its connection stays pooled).
APP = """
import os
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

URL = os.environ["DATABASE_URL"]
engine = create_engine(URL)  # postgresql:// is psycopg2
engine3 = create_engine(URL.replace("postgresql://", "postgresql+psycopg://", 1))
async_engine = create_async_engine(URL.replace("postgresql://", "postgresql+psycopg://", 1))

with engine.connect() as conn:
    conn.execute(text("SELECT 1"))
"""

TESTS = """
import json, os
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

import app

LOG = {log!r}

def _on_the_tests_branch(conn):
    database = conn.execute(text("SELECT current_database()")).scalar_one()
    assert database == urlsplit(os.environ["DATABASE_URL"]).path.lstrip("/")
    return conn.execute(text("SELECT count(*) FROM items")).scalar_one()

def test_0_waits_for_the_other_branches(neon_branch_readonly, request):
    from waiting import wait_for_the_other_branches
    wait_for_the_other_branches(request)

@pytest.mark.parametrize("n", range(6))
def test_sync_engines(neon_branch_readwrite, n):
    for engine in (app.engine, app.engine3):
        with engine.begin() as conn:
            assert _on_the_tests_branch(conn) == 0  # nothing an earlier test wrote
    if n % 3 != 2:
        with app.engine.begin() as conn:
            conn.execute(text("INSERT INTO items (name) VALUES ('written')"))
    with open(LOG, "a") as f:
        f.write(json.dumps(neon_branch_readwrite.branch_id) + "\\n")

@pytest.mark.anyio
@pytest.mark.parametrize("n", range(3))
async def test_async_engine(neon_branch_readwrite, n):
    async with app.async_engine.begin() as conn:
        rows = await conn.run_sync(lambda sync: _on_the_tests_branch(sync))
        assert rows == 0
        await conn.execute(text("INSERT INTO items (name) VALUES ('written')"))
    with open(LOG, "a") as f:
        f.write(json.dumps(neon_branch_readwrite.branch_id) + "\\n")
"""


def _suite(neon: NeonProject, tmp_path: Path, conftest: str) -> Path:
    log = tmp_path / "branches.jsonl"
    neon.pytester.makeconftest(conftest + MIGRATIONS)
    tests = TESTS.format(log=str(log))
    neon.pytester.makepyfile(app=APP, waiting=WAIT_FOR_BRANCHES, test_app=tests)
    neon.emulator.configure_faults(operation_delay=0.3)  # resets take a while, as on Neon
    return log


@pytest.mark.parametrize("integration", [True, False], ids=["integration", "plugin-alone"])
def test_engines_built_at_import_follow_two_branches(
    neon: NeonProject, tmp_path: Path, integration: bool
) -> None:
    conftest = 'import app\npytest_plugins = ["pytest_neon.contrib.sqlalchemy"]\n'
    log = _suite(neon, tmp_path, conftest if integration else "import app\n")
    result = neon.run("-p", "no:randomly")  # the default: auto, two on this project
    result.assert_outcomes(passed=10)
    result.stdout.fnmatch_lines(["*neon: 2 branches per worker (auto: *"])
    used = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(set(used)) == 2  # the engines went where each test was


def test_engines_built_at_import_work_with_one_branch(neon: NeonProject, tmp_path: Path) -> None:
    log = _suite(neon, tmp_path, "import app\n")
    result = neon.run("-p", "no:randomly", "--neon-worker-branches=1")
    result.assert_outcomes(passed=10)
    used = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(set(used)) == 1


def test_an_engine_on_another_database_is_left_alone(neon: NeonProject) -> None:
    # an engine on the migration branch's address (not a worker branch) stays there
    neon.pytester.makeconftest(
        MIGRATIONS.replace(
            'conn.execute("CREATE TABLE',
            'os.environ["MIGRATION_URL"] = _neon_migration_branch.connection_string\n'
            '        conn.execute("CREATE TABLE',
        ).replace("import psycopg", "import os, psycopg")
    )
    neon.pytester.makepyfile(
        test_other="""
        import os
        from urllib.parse import urlsplit
        from sqlalchemy import create_engine, text

        def test_it_stays(neon_branch_readwrite):
            url = os.environ["MIGRATION_URL"]
            engine = create_engine(url)
            with engine.connect() as conn:
                database = conn.execute(text("SELECT current_database()")).scalar_one()
            assert database == urlsplit(url).path.lstrip("/")
            assert database != urlsplit(os.environ["DATABASE_URL"]).path.lstrip("/")
        """
    )
    neon.run("--neon-worker-branches=2").assert_outcomes(passed=1)
