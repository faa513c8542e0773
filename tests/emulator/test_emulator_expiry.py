"""``expires_at``: validated like Neon, honoured by a background sweeper."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from pytest_neon.local.emulator import Emulator
from tests.support.emulator_http import NeonHttp, database_exists


def _at(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("expires_at", "fragment"),
    [
        (timedelta(hours=-1), "in the future"),
        (timedelta(days=31), "30 days"),
        ("tomorrow", "RFC 3339"),
        ("2031-01-01", "RFC 3339"),
        ("2031-01-01T00:00:00", "RFC 3339"),  # no time zone
        (12345, "RFC 3339"),
    ],
    ids=["past", "beyond-30-days", "word", "date-only", "no-zone", "number"],
)
def test_invalid_expiry_is_refused(
    emulator: Emulator, api: NeonHttp, expires_at: object, fragment: str
) -> None:
    value = _at(expires_at) if isinstance(expires_at, timedelta) else expires_at
    response = api.post(
        api.project_path("/branches"), json={"branch": {"name": "x", "expires_at": value}}
    )
    assert response.status_code == 400
    assert fragment in response.json()["message"]
    assert "x" not in api.branch_names()


def test_expired_branch_is_deleted(emulator: Emulator, api: NeonHttp, postgres_url: str) -> None:
    keeper = api.create_branch(name="keeper", expires_at=_at(timedelta(minutes=10)))["branch"]
    created = api.create_branch(name="short-lived", expires_at=_at(timedelta(seconds=3)))
    branch = created["branch"]
    assert branch["expires_at"]
    assert branch["ttl_interval_seconds"] in (2, 3)
    real = created["connection_uris"][0]["connection_parameters"]["database"]
    assert database_exists(postgres_url, real)

    deadline = time.monotonic() + 8
    while api.get(api.project_path(f"/branches/{branch['id']}")).status_code != 404:
        assert time.monotonic() < deadline, "the expired branch was not deleted"
        time.sleep(0.2)
    assert not database_exists(postgres_url, real)
    assert api.get(api.project_path(f"/branches/{keeper['id']}")).status_code == 200

    # A reset restarts the expiry clock: expires_at = last_reset_at + ttl.
    restored = api.restore(keeper["id"], emulator.default_branch_id)["branch"]
    ttl = timedelta(seconds=restored["ttl_interval_seconds"])
    created_at = datetime.fromisoformat(keeper["created_at"])
    reset_at = datetime.fromisoformat(restored["last_reset_at"])
    assert reset_at - created_at >= timedelta(seconds=1)
    assert abs(datetime.fromisoformat(keeper["expires_at"]) - (created_at + ttl)) <= timedelta(
        seconds=1
    )
    assert datetime.fromisoformat(restored["expires_at"]) == reset_at + ttl


def test_expiry_and_children_do_not_mix(emulator: Emulator, api: NeonHttp) -> None:
    p = api.project_path
    expiring = api.create_branch(name="expiring", expires_at=_at(timedelta(hours=1)))
    refused = api.post(
        p("/branches"), json={"branch": {"name": "kid", "parent_id": expiring["branch"]["id"]}}
    )
    assert refused.status_code == 422
    assert "expiration" in refused.json()["message"]

    parent = api.create_branch(name="parent")["branch"]["id"]
    api.create_branch(name="child", parent_id=parent)
    no_expiry = api.patch(
        p(f"/branches/{parent}"), json={"branch": {"expires_at": _at(timedelta(hours=1))}}
    )
    assert no_expiry.status_code == 422
    assert "children" in no_expiry.json()["message"]

    default = api.patch(
        p(f"/branches/{emulator.default_branch_id}"),
        json={"branch": {"expires_at": _at(timedelta(hours=1))}},
    )
    assert default.status_code == 400


def test_patch_sets_and_clears_expiry(emulator: Emulator, api: NeonHttp) -> None:
    p = api.project_path
    branch = api.create_branch(name="patched")["branch"]["id"]
    set_ = api.patch(
        p(f"/branches/{branch}"), json={"branch": {"expires_at": _at(timedelta(hours=2))}}
    )
    assert set_.status_code == 200
    assert set_.json()["branch"]["ttl_interval_seconds"] in (7199, 7200)  # whole seconds
    cleared = api.patch(p(f"/branches/{branch}"), json={"branch": {"expires_at": None}})
    assert cleared.status_code == 200
    assert "expires_at" not in cleared.json()["branch"]
