"""The same flow against real Neon: opt-in, needs NEON_API_KEY and NEON_PROJECT_ID."""

from __future__ import annotations

import os

import pytest

from pytest_neon.api import NeonClient

pytestmark = [
    pytest.mark.neon_live,
    pytest.mark.skipif(
        not (os.environ.get("NEON_API_KEY") and os.environ.get("NEON_PROJECT_ID")),
        reason="real Neon not configured: set NEON_API_KEY and NEON_PROJECT_ID to run",
    ),
]


def _client() -> NeonClient:
    return NeonClient(
        os.environ["NEON_API_KEY"],
        api_host=os.environ.get("NEON_API_HOST", "https://console.neon.tech/api/v2"),
    )


@pytest.mark.parametrize("worker_branches", [1, 2])
def test_live_readwrite_isolation_and_cleanup(
    pytester: pytest.Pytester, worker_branches: int
) -> None:
    project_id = os.environ["NEON_PROJECT_ID"]
    client = _client()
    before = {b.id for b in client.list_branches(project_id)}
    pytester.makepyfile(
        test_live="""
        import psycopg

        def test_a(neon_branch_readwrite):
            with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
                conn.execute("CREATE TABLE pytest_neon_live (x int)")

        def test_b(neon_branch_readwrite):
            with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
                row = conn.execute("SELECT to_regclass('pytest_neon_live') IS NULL").fetchone()
            assert row == (True,)

        def test_c(neon_branch_readonly):
            with psycopg.connect(neon_branch_readonly.connection_string) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        """
    )
    result = pytester.runpytest_subprocess(
        "--neon-backend=neon",
        "-p",
        "no:cacheprovider",
        f"--neon-worker-branches={worker_branches}",
    )
    result.assert_outcomes(passed=3)
    assert {b.id for b in client.list_branches(project_id)} == before
