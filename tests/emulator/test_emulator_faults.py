"""Auth, running operations (423), rate limit (429), injected failures and delays."""

from __future__ import annotations

import time
from collections.abc import Callable

import requests

from pytest_neon.local.emulator import Emulator
from pytest_neon.local.emulator.api_errors import CONFLICTING_OPERATIONS
from tests.support.emulator_http import NeonHttp, load_spec


def test_api_key_is_required(emulator: Emulator) -> None:
    url = f"{emulator.api_host}/projects/{emulator.project_id}"
    assert emulator.api_key
    with requests.Session() as s:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {emulator.api_key}"},
            {"Authorization": emulator.api_key},
        ):
            answer = s.get(url, headers=headers, timeout=10)
            assert answer.status_code == 401, headers
            assert answer.json()["message"]
            assert emulator.api_key not in answer.text
        ok = s.get(url, headers={"Authorization": f"Bearer {emulator.api_key}"}, timeout=10)
        assert ok.status_code == 200


def test_no_api_key_means_no_auth(make_emulator: Callable[..., Emulator]) -> None:
    emu = make_emulator()
    assert emu.api_key is None
    with requests.Session() as s:
        assert s.get(f"{emu.api_host}/projects/{emu.project_id}", timeout=10).status_code == 200


def test_running_operations_lock_the_branch(emulator: Emulator, api: NeonHttp) -> None:
    emulator.configure_faults(operation_delay=0.6)
    p = api.project_path
    created = api.create_branch(name="slow")
    branch = created["branch"]["id"]
    assert created["branch"]["current_state"] == "init"
    assert created["endpoints"][0]["current_state"] == "init"
    statuses = [op["status"] for op in created["operations"]]
    assert statuses == ["running", "scheduling"]

    for response in (
        api.post(
            p(f"/branches/{branch}/restore"), json={"source_branch_id": emulator.default_branch_id}
        ),
        api.delete(p(f"/branches/{branch}")),
        api.post(p("/branches"), json={"branch": {"parent_id": branch}}),
    ):
        assert response.status_code == 423
        assert response.json()["message"] == CONFLICTING_OPERATIONS

    op_id = created["operations"][1]["id"]
    deadline = time.monotonic() + 5
    while api.get(p(f"/operations/{op_id}")).json()["operation"]["status"] != "finished":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert api.get(p(f"/branches/{branch}")).json()["branch"]["current_state"] == "ready"
    endpoint = api.get(p(f"/branches/{branch}/endpoints")).json()["endpoints"][0]
    assert endpoint["current_state"] == "active"

    restored = api.restore(branch, emulator.default_branch_id)
    assert restored["branch"]["current_state"] == "resetting"
    assert {op["action"] for op in restored["operations"]} >= {"start_compute"}


def test_rate_limit_answers_429_with_retry_after(emulator: Emulator, api: NeonHttp) -> None:
    emulator.configure_faults(rate_limit=5)
    statuses = []
    retry_after = []
    for _ in range(15):
        response = api.get(api.project_path())
        statuses.append(response.status_code)
        if response.status_code == 429:
            retry_after.append(response.headers["Retry-After"])
    assert statuses.count(429) >= 5
    assert statuses[:5] == [200] * 5
    assert all(value.isdigit() and int(value) >= 1 for value in retry_after)
    emulator.configure_faults(rate_limit=None)
    assert api.get(api.project_path()).status_code == 200


def test_fail_rate_injects_503_and_423_without_side_effects(
    emulator: Emulator, api: NeonHttp
) -> None:
    victim = api.create_branch(name="victim")["branch"]["id"]
    emulator.configure_faults(fail_rate=1.0, seed=3)
    p = api.project_path
    statuses = set()
    for i in range(12):
        created = api.post(p("/branches"), json={"branch": {"name": f"never-{i}"}})
        statuses.add(created.status_code)
    statuses.add(api.delete(p(f"/branches/{victim}")).status_code)
    statuses.add(
        api.post(
            p(f"/branches/{victim}/restore"), json={"source_branch_id": emulator.default_branch_id}
        ).status_code
    )
    assert statuses == {503, 423}
    assert api.get(p("/branches")).status_code == 200  # reads never fail
    assert api.branch_names() == {"main", "victim"}

    emulator.configure_faults(fail_rate=0.5, seed=11)
    outcomes = [
        api.post(p("/branches"), json={"branch": {"name": f"maybe-{i}"}}).status_code
        for i in range(10)
    ]
    assert {201} < set(outcomes) <= {201, 503, 423}
    assert len(api.branch_names()) == 2 + outcomes.count(201)


def test_same_seed_same_faults(make_emulator: Callable[..., Emulator]) -> None:
    runs = []
    for _ in range(2):
        emu = make_emulator(fail_rate=0.5, seed=42)
        with NeonHttp(emu, load_spec()) as api:
            runs.append(
                [api.post(api.project_path("/branches"), json={}).status_code for _ in range(6)]
            )
    assert runs[0] == runs[1]


def test_request_delay(emulator: Emulator, api: NeonHttp) -> None:
    emulator.configure_faults(request_delay=0.3)
    started = time.monotonic()
    assert api.get(api.project_path()).status_code == 200
    assert time.monotonic() - started >= 0.3
