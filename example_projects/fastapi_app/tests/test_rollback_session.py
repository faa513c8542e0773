"""Rollback tests: everything runs in one transaction that is rolled back; no branch reset.

The cheapest isolation: use it for tests that work through one session (the ORM, or the
API with its database dependency pointed at ``neon_session``).
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from taskapp.models import Task, User


def test_orm_commit_inside_the_rollback_session_is_visible_to_the_test(
    neon_session: Session,
) -> None:
    grace = User(email="grace@example.com", name="Grace")
    grace.tasks.append(Task(title="find the bug"))
    neon_session.add(grace)
    neon_session.commit()  # releases a savepoint; the outer transaction stays open
    assert neon_session.scalar(select(func.count()).select_from(Task)) == 1


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_rollback_session_starts_empty_every_time(neon_session: Session, attempt: int) -> None:
    assert neon_session.scalar(select(func.count()).select_from(User)) == 0
    neon_session.add(User(email="grace@example.com", name="Grace"))
    neon_session.commit()


def test_api_commits_inside_the_rollback_session_never_reach_the_branch(
    rollback_client: TestClient,
) -> None:
    user = rollback_client.post("/users", json={"email": "ken@example.com", "name": "Ken"}).json()
    rollback_client.post(f"/users/{user['id']}/tasks", json={"title": "write unix"})
    assert rollback_client.get("/stats").json() == {"users": 1, "tasks": 1, "done": 0}
