"""State lives in the server: restarts resume a project; projects sharing a server stay apart."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import psycopg
import pytest

from pytest_neon.local.emulator import Emulator
from tests.support.emulator_http import NeonHttp, database_exists, load_spec, real_name, sql


def test_restart_resumes_the_project(postgres_url: str) -> None:
    key = secrets.token_hex(8)
    first = Emulator(postgres_url, api_key=key).start()
    project_id = first.project_id
    try:
        with NeonHttp(first, load_spec()) as api:
            branch = api.create_branch(name="survivor", expires_at=None)["branch"]
            uri = api.uri(branch["id"])
            sql(uri, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
            password = api.get(
                api.project_path(f"/branches/{branch['id']}/roles/neondb_owner/reveal_password")
            ).json()["password"]
            op_id = api.create_branch(name="second")["operations"][0]["id"]
        default_id = first.default_branch_id
    finally:
        first.stop()

    second = Emulator(postgres_url, project_id=project_id, api_key=key).start()
    try:
        assert second.default_branch_id == default_id
        with NeonHttp(second, load_spec()) as api:
            assert api.branch_names() == {"main", "survivor", "second"}
            assert api.get(api.project_path(f"/branches/{branch['id']}")).status_code == 200
            assert api.uri(branch["id"]) == uri
            assert sql(uri, "SELECT v FROM kept") == [(42,)]
            revealed = api.get(
                api.project_path(f"/branches/{branch['id']}/roles/neondb_owner/reveal_password")
            )
            assert revealed.json()["password"] == password
            assert api.get(api.project_path(f"/operations/{op_id}")).status_code == 200
            api.restore(branch["id"], default_id)
            assert sql(uri, "SELECT to_regclass('kept') IS NULL") == [(True,)]
    finally:
        second.stop(drop=True)
    assert not database_exists(postgres_url, real_name(uri))

    fresh = Emulator(postgres_url, project_id=project_id).start()
    try:
        assert fresh.default_branch_id != default_id  # dropped: a new project was created
    finally:
        fresh.stop(drop=True)


def test_projects_sharing_a_server_do_not_see_each_other(
    make_emulator: Callable[..., Emulator],
) -> None:
    one, two = make_emulator(), make_emulator()
    assert one.project_id != two.project_id
    with NeonHttp(one, load_spec()) as api_one, NeonHttp(two, load_spec()) as api_two:
        api_one.create_branch(name="same-name")
        api_two.create_branch(name="same-name")
        api_one.create_branch(name="only-in-one")
        assert api_one.branch_names() == {"main", "same-name", "only-in-one"}
        assert api_two.branch_names() == {"main", "same-name"}
        foreign = api_one.get(f"/projects/{two.project_id}/branches")
        assert foreign.status_code == 404
        uri_one = api_one.uri(one.default_branch_id)
        uri_two = api_two.uri(two.default_branch_id)
        assert real_name(uri_one) != real_name(uri_two)
        sql(uri_one, "CREATE TABLE mine (x int)")
        assert sql(uri_two, "SELECT to_regclass('mine') IS NULL") == [(True,)]


def test_one_project_one_emulator(
    make_emulator: Callable[..., Emulator], postgres_url: str
) -> None:
    running = make_emulator()
    with pytest.raises(RuntimeError, match="already served"):
        Emulator(postgres_url, project_id=running.project_id).start()


def test_stop_with_drop_removes_everything(postgres_url: str) -> None:
    emu = Emulator(postgres_url).start()
    with NeonHttp(emu, None) as api:
        reals = [real_name(api.uri(emu.default_branch_id))]
        reals.append(real_name(api.uri(api.create_branch(name="gone")["branch"]["id"])))
    emu.stop(drop=True)
    emu.stop(drop=True)  # idempotent
    assert not any(database_exists(postgres_url, r) for r in reals)
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM neon_emulator.branches WHERE project_id = %s",
            (emu.project_id,),
        ).fetchone()
    assert rows == (0,)
