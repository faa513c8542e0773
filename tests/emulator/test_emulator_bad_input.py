"""Malformed requests get Neon's 400 with an error body naming what is wrong: never a 500,
never a silent misreading, and nothing is created or changed."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from pytest_neon.local.emulator import Emulator
from tests.support.emulator_http import JSON, NeonHttp, load_spec


@pytest.fixture(scope="module")
def shared(postgres_url: str) -> Iterator[NeonHttp]:
    """One emulator for the module: a refused request changes nothing, so tests share it."""
    emu = Emulator(postgres_url, api_key=secrets.token_urlsafe(24))
    emu.start()
    try:
        with NeonHttp(emu, load_spec()) as client:
            yield client
    finally:
        emu.stop(drop=True)


@pytest.fixture(scope="module")
def target(shared: NeonHttp) -> str:
    """A branch of ``shared`` for update requests."""
    return str(shared.create_branch(name="target")["branch"]["id"])


#: what a request could change in a branch (its state moves on by itself)
_SETTINGS = ("id", "name", "protected", "expires_at", "updated_at", "parent_id")


def _state(api: NeonHttp) -> tuple[set[tuple[Any, ...]], set[str]]:
    """The settings of every branch and the ids of every operation of the project."""
    branches = api.get(api.project_path("/branches")).json()["branches"]
    ops = api.get(api.project_path("/operations"), params={"limit": 1000}).json()["operations"]
    return {tuple(b.get(k) for k in _SETTINGS) for b in branches}, {op["id"] for op in ops}


def _refused(response: requests.Response, field: str) -> None:
    """``response`` is a 400 with a Neon error body whose message names ``field``."""
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"code", "message", "request_id"}, body
    assert body["request_id"] == response.headers["X-Neon-Request-Id"]
    assert field in body["message"], body


def _cursor(data: Any) -> str:
    """A cursor forged as a client could: unpadded URL-safe base64 of JSON."""
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _short(value: Any) -> str | None:
    """A test id for a request body: its compact JSON, cut short."""
    return json.dumps(value, separators=(",", ":"))[:48] if isinstance(value, dict) else None


# --- listing cursors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "forged",
    [
        {"by": "name", "order": "asc", "key": 5, "id": "br-x"},  # a number against names
        {"by": "created_at", "order": "desc", "key": "2024-01-01T00:00:00", "id": "br-x"},
        {"by": "updated_at", "order": "desc", "key": "2024-01-01", "id": "br-x"},
        {"by": "created_at", "order": "asc", "key": "0001-01-01T00:00:00+05:00", "id": "br-x"},
        {"by": "created_at", "order": "asc", "key": 1700000000, "id": "br-x"},
        {"by": "name", "order": "sideways", "key": "a", "id": "br-x"},
        {"by": "name", "order": "asc", "key": "a", "id": 7},
        {"by": "name", "order": "asc", "id": "br-x"},
        ["name", "asc", "a", "br-x"],
        b"[" * 5000,  # nesting too deep for the JSON parser
        b"not json",
    ],
    ids=[
        "name-key-number",
        "naive-time",
        "date-only",
        "time-out-of-range",
        "time-key-number",
        "bad-order",
        "id-number",
        "no-key",
        "not-an-object",
        "deep-nesting",
        "not-json",
    ],
)
def test_a_forged_branch_cursor_is_invalid(shared: NeonHttp, forged: Any) -> None:
    response = shared.get(shared.project_path("/branches"), params={"cursor": _cursor(forged)})
    _refused(response, "invalid cursor")


def test_a_forged_but_well_formed_cursor_is_honoured(shared: NeonHttp) -> None:
    """An aware time in another zone is a valid start: every branch is later than it."""
    cursor = {"by": "created_at", "order": "asc", "key": "2000-01-01T00:00:00+05:00", "id": ""}
    response = shared.get(shared.project_path("/branches"), params={"cursor": _cursor(cursor)})
    assert response.status_code == 200, response.text
    assert "main" in {b["name"] for b in response.json()["branches"]}


@pytest.mark.parametrize(
    "forged",
    [b'{"at": "x", "seq": Infinity, "id": "y"}', b'{"at": "x", "seq": 1e400, "id": "y"}'],
    ids=["infinity", "overflowing-number"],
)
def test_a_forged_operations_cursor_is_invalid(shared: NeonHttp, forged: bytes) -> None:
    response = shared.get(shared.project_path("/operations"), params={"cursor": _cursor(forged)})
    _refused(response, "invalid cursor")


# --- create branch -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"endpoints": 5}, "endpoints"),
        ({"endpoints": True}, "endpoints"),
        ({"endpoints": False}, "endpoints"),
        ({"endpoints": {"type": "read_write"}}, "endpoints"),
        ({"endpoints": "read_write"}, "endpoints"),
        ({"endpoints": [5]}, "endpoints[0]"),
        ({"endpoints": [{"type": 1}]}, "endpoints[0].type"),
        ({"endpoints": [{"type": "read_write", "autoscaling_limit_max_cu": "2"}]}, "max_cu"),
        ({"endpoints": [{"type": "read_write", "suspend_timeout_seconds": True}]}, "suspend"),
        ({"endpoints": [{"type": "read_write", "settings": []}]}, "endpoints[0].settings"),
        ({"branch": 5}, "branch"),
        ({"branch": {"parent_id": 0}}, "branch.parent_id"),
        ({"branch": {"parent_id": {}}}, "branch.parent_id"),
        ({"branch": {"parent_id": False}}, "branch.parent_id"),
        ({"branch": {"parent_id": ["br-x"]}}, "branch.parent_id"),
        ({"branch": {"name": 5}}, "branch.name"),
        ({"branch": {"name": ["a"]}}, "branch.name"),
        ({"branch": {"name": ""}}, "branch.name"),
        ({"branch": {"protected": "yes"}}, "branch.protected"),
        ({"branch": {"archived": 0}}, "branch.archived"),
        ({"branch": {"expires_at": 0}}, "branch.expires_at"),
        ({"branch": {"expires_at": False}}, "branch.expires_at"),
        ({"branch": {"expires_at": ""}}, "branch.expires_at"),
        ({"branch": {"expires_at": {}}}, "branch.expires_at"),
        ({"branch": {"expires_at": "0001-01-01T00:00:00+05:00"}}, "branch.expires_at"),
        ({"branch": {"parent_lsn": 5}}, "branch.parent_lsn"),
        ({"branch": {"parent_timestamp": False}}, "branch.parent_timestamp"),
        ({"branch": {"init_source": 1}}, "branch.init_source"),
        ({"annotation_value": ["a"]}, "annotation_value"),
        ({"annotation_value": "a=b"}, "annotation_value"),
        ({"annotation_value": {"k": 1}}, 'annotation_value["k"]'),
        ({"annotation_value": {"k": None}}, 'annotation_value["k"]'),
        ({"annotation_value": {f"k{i}": "v" for i in range(51)}}, "annotation_value"),
    ],
    ids=_short,
)
def test_create_branch_refuses_wrong_types(shared: NeonHttp, body: JSON, field: str) -> None:
    before = _state(shared)
    _refused(shared.post(shared.project_path("/branches"), json=body), field)
    assert _state(shared) == before


def test_create_branch_still_takes_what_it_took(api: NeonHttp) -> None:
    """Nulls, empty lists, an empty ``parent_id`` (the default branch) and endpoint options."""
    default = api.emulator.default_branch_id
    bodies: list[JSON] = [
        {"branch": {"name": "empty-parent", "parent_id": ""}},
        {"branch": {"name": "nulls", "parent_id": None, "expires_at": None, "archived": None}},
        {"branch": {"name": "no-endpoints", "archived": False}, "endpoints": []},
        {"branch": {"name": "null-endpoints"}, "endpoints": None, "annotation_value": None},
        {
            "branch": {"name": "options"},
            "endpoints": [
                {
                    "type": "read_write",
                    "autoscaling_limit_min_cu": 0.25,
                    "autoscaling_limit_max_cu": 2,
                    "suspend_timeout_seconds": 300,
                    "provisioner": "k8s-neonvm",
                    "settings": {},
                }
            ],
            "annotation_value": {"k": "v"},
        },
    ]
    for body in bodies:
        response = api.post(api.project_path("/branches"), json=body)
        assert response.status_code == 201, response.text
        created = response.json()
        assert created["branch"]["parent_id"] == default
        assert len(created["endpoints"]) == (1 if body["branch"]["name"] == "options" else 0)


# --- update branch -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "branch"),
        ({"branch": 5}, "branch"),
        ({"branch": {"name": 5}}, "branch.name"),
        ({"branch": {"name": None}}, "branch.name"),
        ({"branch": {"name": "x" * 257}}, "branch.name"),
        ({"branch": {"protected": "true"}}, "branch.protected"),
        ({"branch": {"protected": 1}}, "branch.protected"),
        ({"branch": {"expires_at": 0}}, "branch.expires_at"),
        ({"branch": {"expires_at": True}}, "branch.expires_at"),
        ({"branch": {"expires_at": ["2031-01-01T00:00:00Z"]}}, "branch.expires_at"),
        ({"branch": {"expires_at": "0001-01-01T00:00:00+05:00"}}, "branch.expires_at"),
    ],
    ids=_short,
)
def test_update_branch_refuses_wrong_types(
    shared: NeonHttp, target: str, body: JSON, field: str
) -> None:
    before = _state(shared)
    _refused(shared.patch(shared.project_path(f"/branches/{target}"), json=body), field)
    assert _state(shared) == before


@pytest.mark.parametrize(
    "body", [b"[" * 3000, b'{"a": ' + b"1" * 5000 + b"}"], ids=["too-deep", "too-long"]
)
def test_json_the_parser_gives_up_on_is_a_400(api: NeonHttp, body: bytes) -> None:
    before = api.branch_names()
    response = api.post(
        api.project_path("/branches"), data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["message"].startswith("invalid JSON body")
    assert api.branch_names() == before
