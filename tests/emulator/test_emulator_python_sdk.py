"""Neon's Python SDK (``neon-api``) drives the emulator as it would drive Neon: the account,
branches with an endpoint, connecting with the strings it gets, restore, rename, a new
default branch, a new password, operations, delete; and the 501 of what is missing."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from neon_api import NeonAPI
from neon_api.exceptions import NeonAPIError

from pytest_neon.local.emulator import Emulator


@pytest.fixture
def sdk(emulator: Emulator) -> NeonAPI:
    # the SDK joins paths onto its base URL as they are: it needs the trailing slash
    return NeonAPI(emulator.api_key or "", base_url=emulator.api_host + "/")


def _wait(sdk: NeonAPI, project: str, operations: list[Any]) -> None:
    """Poll every operation until it is finished, as a client does."""
    deadline = time.monotonic() + 30
    for op in operations:
        while _status(sdk.operation(project, op.id).operation) != "finished":
            assert time.monotonic() < deadline, f"operation {op.id} did not finish"
            time.sleep(0.05)


def _status(operation: Any) -> str:
    status = operation.status  # an enum in the SDK's models
    return str(getattr(status, "value", status))


def _uri(sdk: NeonAPI, project: str, branch: str) -> str:
    """The branch's connection string: the SDK's own ``connection_uri`` knows no branch
    and its ``branch_create`` drops the strings of the answer, so as its users do: the
    call with ``branch_id``."""
    found = sdk._request(
        "GET",
        f"projects/{project}/connection_uri",
        params={"branch_id": branch, "database_name": "neondb", "role_name": "neondb_owner"},
    )
    return str(found["uri"])


def _rows(uri: str, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(uri, connect_timeout=10) as conn:
        return conn.execute(statement).fetchall()


def test_the_sdk_finds_the_account_and_the_project(sdk: NeonAPI, emulator: Emulator) -> None:
    assert sdk.me().branches_limit == emulator.control_plane.max_branches
    listed = sdk.projects()
    assert [p.id for p in listed.projects] == [emulator.project_id]
    assert sdk.project(emulator.project_id).project.id == emulator.project_id


def test_a_branch_through_its_whole_life(sdk: NeonAPI, emulator: Emulator) -> None:
    project = emulator.project_id
    made = sdk.branch_create(
        project, branch={"name": "sdk-feature"}, endpoints=[{"type": "read_write"}]
    )
    branch = made.branch.id
    _wait(sdk, project, made.operations)
    uri = _uri(sdk, project, branch)
    with psycopg.connect(uri) as conn:
        conn.execute("CREATE TABLE notes (body text); INSERT INTO notes VALUES ('hello')")
    assert _rows(uri, "SELECT body FROM notes") == [("hello",)]

    names = {b.name for b in sdk.branches(project).branches}
    assert names == {"main", "sdk-feature"}
    first = sdk.branches(project, limit=1)  # paging: one branch, and where the next starts
    assert len(first.branches) == 1
    endpoint = sdk.endpoints(project).endpoints
    assert branch in {e.branch_id for e in endpoint}
    assert [d.name for d in sdk.databases(project, branch).databases] == ["neondb"]
    assert [r.name for r in sdk.roles(project, branch).roles] == ["neondb_owner"]

    renamed = sdk.branch_update(project, branch, branch={"name": "sdk-renamed"})
    assert renamed.branch.name == "sdk-renamed"

    # a new password: the old connection string stops working, the new one works
    old_password = sdk.role_password_reveal(project, branch, "neondb_owner").password
    reset = sdk.role_password_reset(project, branch, "neondb_owner")
    _wait(sdk, project, reset.operations)
    new_password = sdk.role_password_reveal(project, branch, "neondb_owner").password
    assert new_password != old_password
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(uri, connect_timeout=10).close()
    fresh = sdk.connection_uri(project, "neondb", "neondb_owner").uri  # the default branch
    assert new_password in fresh or "%" in fresh
    assert _rows(fresh, "SELECT 1") == [(1,)]

    # the new branch becomes the default one
    # (the SDK's branch_set_as_primary calls the route's old name, which Neon dropped)
    response = sdk._request("POST", f"projects/{project}/branches/{branch}/set_as_default")
    assert response["branch"]["default"] is True
    defaults = [b.id for b in sdk.branches(project).branches if b.default]
    assert defaults == [branch]
    assert sdk.project(project).project.id == project

    ops = sdk.operations(project).operations
    assert {"create_branch", "apply_config"} <= {str(op.action.value) for op in ops}


def test_restore_and_delete(sdk: NeonAPI, emulator: Emulator) -> None:
    project = emulator.project_id
    made = sdk.branch_create(
        project, branch={"name": "sdk-reset"}, endpoints=[{"type": "read_write"}]
    )
    _wait(sdk, project, made.operations)
    uri = _uri(sdk, project, made.branch.id)
    with psycopg.connect(uri) as conn:
        conn.execute("CREATE TABLE scratch (x int)")
    restored = sdk._request(
        "POST",
        f"projects/{project}/branches/{made.branch.id}/restore",
        json={"source_branch_id": emulator.default_branch_id},
    )
    _wait(sdk, project, [type("Op", (), {"id": op["id"]}) for op in restored["operations"]])
    assert _rows(uri, "SELECT to_regclass('scratch')") == [(None,)]
    deleted = sdk.branch_delete(project, made.branch.id)
    assert deleted.branch.id == made.branch.id
    with pytest.raises(NeonAPIError, match="not found"):
        sdk.branch(project, made.branch.id)


def test_what_is_missing_says_so(sdk: NeonAPI, emulator: Emulator) -> None:
    with pytest.raises(NeonAPIError, match="NOT_IMPLEMENTED") as missing:
        sdk.api_keys()
    assert "GET /api_keys is not implemented by the pytest-neon emulator" in str(missing.value)
