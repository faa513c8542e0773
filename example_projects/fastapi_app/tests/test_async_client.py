"""The API through ``httpx.AsyncClient`` in an async test: same branch, same isolation."""

from __future__ import annotations

import httpx
import pytest
from pytest_neon import NeonBranch

from taskapp.main import app


@pytest.mark.anyio
@pytest.mark.parametrize("attempt", [1, 2])
async def test_async_client_signup_commits_and_the_next_test_starts_empty(
    neon_branch_readwrite: NeonBranch, attempt: int
) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://taskapp") as client:
        assert (await client.get("/users")).json() == []
        created = await client.post("/users", json={"email": "bob@example.com", "name": "Bob"})
        assert created.status_code == 201
        assert created.json()["id"] == 1
