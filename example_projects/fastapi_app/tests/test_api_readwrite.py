"""Readwrite tests: the API commits for real, and every test starts from the migrated state.

Each test signs up the same user. If anything committed by an earlier test survived,
the sign-up would answer 409 and the new user's id would not be 1.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

ADA = {"email": "ada@example.com", "name": "Ada"}


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_signup_commits_yet_every_test_starts_with_no_users(
    client: TestClient, attempt: int
) -> None:
    assert client.get("/users").json() == []
    created = client.post("/users", json=ADA)
    assert created.status_code == 201
    assert created.json()["id"] == 1  # sequences are reset too
    assert client.get("/users").json() == [{"id": 1, **ADA}]


def test_second_signup_with_the_same_email_is_a_409(client: TestClient) -> None:
    assert client.post("/users", json=ADA).status_code == 201
    again = client.post("/users", json=ADA)
    assert again.status_code == 409
    assert "already signed up" in again.json()["detail"]


def test_tasks_are_added_completed_and_counted(client: TestClient) -> None:
    user = client.post("/users", json=ADA).json()
    first = client.post(f"/users/{user['id']}/tasks", json={"title": "write tests"}).json()
    client.post(f"/users/{user['id']}/tasks", json={"title": "ship"})
    assert client.post(f"/tasks/{first['id']}/done").json()["done"] is True
    titles = [(t["title"], t["done"]) for t in client.get(f"/users/{user['id']}/tasks").json()]
    assert titles == [("write tests", True), ("ship", False)]
    assert client.get("/stats").json() == {"users": 1, "tasks": 2, "done": 1}


def test_stats_start_at_zero_after_the_tests_that_wrote(client: TestClient) -> None:
    assert client.get("/stats").json() == {"users": 0, "tasks": 0, "done": 0}


def test_unknown_user_is_a_404(client: TestClient) -> None:
    assert client.get("/users/42").status_code == 404
