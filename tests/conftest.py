"""Shared fixtures of the pytest-neon test suite: one real PostgreSQL per test worker."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# A server given by URL (for quick local iteration) is used as is; otherwise the suite
# starts a throwaway cluster of its own and removes it at the end.
_GIVEN_URL = os.environ.get("PYTEST_NEON_TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A superuser DSN of a real PostgreSQL server for this test session."""
    if _GIVEN_URL:
        yield _GIVEN_URL
        return
    from pytest_neon.local.postgres import start_postgres

    server = start_postgres()
    try:
        yield server.url
    finally:
        server.stop()
