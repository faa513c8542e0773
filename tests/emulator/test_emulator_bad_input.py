"""Malformed requests get Neon's 400 with an error body naming what is wrong, never a 500."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from pytest_neon.local.emulator import Emulator
from tests.support.emulator_http import NeonHttp, load_spec


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
