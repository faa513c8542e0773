"""Readonly tests: the migrated schema, no rows, and the database refuses writes."""

from __future__ import annotations

import psycopg
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from pytest_neon import NeonBranch
from sqlalchemy.exc import DBAPIError


def test_branch_is_migrated_to_alembic_head_with_no_rows(
    neon_branch_readonly: NeonBranch, pytestconfig: pytest.Config
) -> None:
    scripts = ScriptDirectory.from_config(Config(pytestconfig.rootpath / "alembic.ini"))
    head = scripts.get_current_head()
    with psycopg.connect(neon_branch_readonly.connection_string) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_readonly_api_reads_but_the_database_refuses_writes(readonly_client: TestClient) -> None:
    assert readonly_client.get("/users").json() == []
    with pytest.raises(DBAPIError, match="read-only transaction"):
        readonly_client.post("/users", json={"email": "ro@example.com", "name": "Read Only"})
