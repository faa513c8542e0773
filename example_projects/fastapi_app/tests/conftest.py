"""Test set-up: pytest-neon and its SQLAlchemy and Alembic integrations.

pytest-neon itself is active once installed. Before this file is imported it has created
this process's test branch and pointed DATABASE_URL at it, so the app below builds its
engine on the test branch. Alembic migrates the branches once per run (neon_alembic_ini in
pyproject.toml); the app's engine pool is emptied after every branch reset
(neon_sqlalchemy_engines).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pytest_neon import NeonBranch
from pytest_neon.contrib.fastapi import override_db
from sqlalchemy.orm import Session

from taskapp.db import get_db
from taskapp.main import app

pytest_plugins = ["pytest_neon.contrib.sqlalchemy", "pytest_neon.contrib.alembic"]


@pytest.fixture
def client(neon_branch_readwrite: NeonBranch) -> Iterator[TestClient]:
    """The API through the app's own engine; what it commits is reset after the test."""
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def rollback_client(neon_session: Session) -> Iterator[TestClient]:
    """The API inside the rollback session: its commits never reach the branch, no reset."""
    with override_db(app, get_db, neon_session), TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def readonly_client(neon_branch_readonly: NeonBranch) -> Iterator[TestClient]:
    """The API on the branch with read-only database sessions."""
    with override_db(app, get_db, neon_branch_readonly), TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"
