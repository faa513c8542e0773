"""Every route of Neon's API: served, or a 501 that names it; the account's own routes
(the current user, organizations, the project list) as clients ask for them first."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import psycopg
import pytest

from pytest_neon.local.emulator import Emulator
from pytest_neon.local.emulator.routes import ROUTES
from pytest_neon.local.emulator.spec_routes import SPEC_ROUTES
from tests.support.emulator_http import NeonHttp, OpenApiSpec, database_exists

IMPLEMENTED = {(r.method, r.template) for r in ROUTES}


def test_the_route_table_is_neons(openapi_spec: OpenApiSpec) -> None:
    listed = {
        (method.upper(), path)
        for path, item in openapi_spec.doc["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert set(SPEC_ROUTES) == listed, (
        "src/pytest_neon/local/emulator/spec_routes.py differs from openapi.yaml: regenerate it"
    )
    assert IMPLEMENTED - listed <= {("POST", r.template) for r in ROUTES if "reveal" in r.template}


def _concrete(template: str, project_id: str) -> str:
    path = template.replace("{project_id}", project_id)
    return re.sub(r"\{\w+\}", "x-1", path)


@pytest.mark.parametrize(
    ("method", "template"),
    sorted(set(SPEC_ROUTES) - IMPLEMENTED),
    ids=lambda v: str(v),
)
def test_a_route_not_implemented_is_a_501_naming_it(
    api: NeonHttp, emulator: Emulator, method: str, template: str
) -> None:
    path = _concrete(template, emulator.project_id)
    body: dict[str, object] | None = {} if method in ("POST", "PUT", "PATCH") else None
    response = api.request(method, path, json=body)
    assert response.status_code == 501, response.text
    error = response.json()
    assert error["code"] == "NOT_IMPLEMENTED"
    assert f"{method} {template} is not implemented" in error["message"]


def test_unknown_paths_and_methods(api: NeonHttp) -> None:
    missing = api.get("/no/such/route")
    assert missing.status_code == 404
    assert "no route /no/such/route" in missing.json()["message"]
    wrong = api.request("PUT", api.project_path("/branches"))
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "GET, POST"


def test_the_current_user_and_their_organizations(api: NeonHttp, emulator: Emulator) -> None:
    me = api.get("/users/me")
    assert me.status_code == 200
    assert me.json()["branches_limit"] == emulator.control_plane.max_branches
    organizations = api.get("/users/me/organizations")
    assert organizations.json() == {"organizations": []}  # a personal account


def test_listing_projects_finds_the_one_served(api: NeonHttp, emulator: Emulator) -> None:
    project = emulator.project_id
    first = api.get("/projects")
    assert first.status_code == 200
    assert [p["id"] for p in first.json()["projects"]] == [project]
    cursor = first.json()["pagination"]["cursor"]
    after = api.get("/projects", params={"cursor": cursor, "limit": 1})
    assert after.json()["projects"] == []
    assert api.get("/projects", params={"search": project[:5]}).json()["projects"]
    assert api.get("/projects", params={"search": "zz-no"}).json()["projects"] == []
    assert api.get("/projects", params={"org_id": "org-other"}).json()["projects"] == []
    assert api.get("/projects/shared").json()["projects"] == []  # (neonctl projects list)
    for bad in ("0", "401", "many"):
        refused = api.get("/projects", params={"limit": bad})
        assert refused.status_code == 400
        assert "limit must be a whole number from 1 to 400" in refused.json()["message"]


def test_an_endpoint_suspends_starts_and_restarts(api: NeonHttp, emulator: Emulator) -> None:
    endpoint = api.get(api.project_path("/endpoints")).json()["endpoints"][0]["id"]
    uri = api.uri(emulator.default_branch_id)
    held = psycopg.connect(uri, autocommit=True)
    try:
        suspended = api.post(api.project_path(f"/endpoints/{endpoint}/suspend"))
        assert suspended.status_code == 200
        assert suspended.json()["endpoint"]["current_state"] == "idle"
        assert [op["action"] for op in suspended.json()["operations"]] == ["suspend_compute"]
        with pytest.raises(psycopg.OperationalError):  # a suspend ends the sessions
            held.execute("SELECT 1")
    finally:
        held.close()
    shown = api.get(api.project_path(f"/endpoints/{endpoint}")).json()["endpoint"]
    assert shown["current_state"] == "idle"
    with psycopg.connect(uri) as conn:  # as on Neon, a connection starts it again
        assert conn.execute("SELECT 1").fetchone() == (1,)
    started = api.post(api.project_path(f"/endpoints/{endpoint}/start"))
    assert started.json()["endpoint"]["current_state"] == "active"
    restarted = api.post(api.project_path(f"/endpoints/{endpoint}/restart"))
    assert [op["action"] for op in restarted.json()["operations"]] == [
        "suspend_compute",
        "start_compute",
    ]
    assert api.post(api.project_path("/endpoints/ep-no-such-1/start")).status_code == 404


def test_a_database_is_made_copied_with_its_branch_and_dropped(
    api: NeonHttp, emulator: Emulator, postgres_url: str
) -> None:
    main = emulator.default_branch_id
    path = api.project_path(f"/branches/{main}/databases")
    made = api.post(path, json={"database": {"name": "reports", "owner_name": "neondb_owner"}})
    assert made.status_code == 201
    assert made.json()["database"]["name"] == "reports"
    assert [op["action"] for op in made.json()["operations"]] == ["apply_config"]
    uri = api.uri(main, database="reports")
    with psycopg.connect(uri) as conn:
        conn.execute("CREATE TABLE figures (n int); INSERT INTO figures VALUES (42)")
    child = api.create_branch(name="with-reports", parent_id=main)["branch"]["id"]
    copied = api.uri(child, database="reports")
    with psycopg.connect(copied) as conn:
        assert conn.execute("SELECT n FROM figures").fetchone() == (42,)

    same = api.post(path, json={"database": {"name": "reports", "owner_name": "neondb_owner"}})
    assert same.status_code == 409
    nobody = api.post(path, json={"database": {"name": "other", "owner_name": "no_such"}})
    assert nobody.status_code == 404
    nameless = api.post(path, json={"database": {"owner_name": "neondb_owner"}})
    assert nameless.status_code == 400

    real = urlsplit(uri).path.lstrip("/")
    gone = api.delete(api.project_path(f"/branches/{main}/databases/reports"))
    assert gone.status_code == 200
    assert not database_exists(postgres_url, real)
    assert api.get(api.project_path(f"/branches/{main}/databases/reports")).status_code == 404
    assert api.get(api.project_path(f"/branches/{child}/databases/reports")).status_code == 200


def test_a_restore_keeps_the_state_before_under_a_name(api: NeonHttp, emulator: Emulator) -> None:
    main = emulator.default_branch_id
    work = api.create_branch(name="work", parent_id=main)["branch"]["id"]
    with psycopg.connect(api.uri(work)) as conn:
        conn.execute("CREATE TABLE draft (x int); INSERT INTO draft VALUES (7)")
    child = api.create_branch(name="work-child", parent_id=work)["branch"]["id"]
    plain = api.post(api.project_path(f"/branches/{work}/restore"), json={"source_branch_id": main})
    assert plain.status_code == 400  # it has a child: a name to keep it under is needed
    assert "preserve_under_name" in plain.json()["message"]

    restored = api.post(
        api.project_path(f"/branches/{work}/restore"),
        json={"source_branch_id": main, "preserve_under_name": "work-before"},
    )
    assert restored.status_code == 200, restored.text
    with psycopg.connect(api.uri(work)) as conn:
        assert conn.execute("SELECT to_regclass('draft')").fetchone() == (None,)
    branches = {b["name"]: b for b in api.get(api.project_path("/branches")).json()["branches"]}
    backup = branches["work-before"]  # no compute: a branch of it shows what it holds
    look = api.create_branch(name="look", parent_id=backup["id"])["branch"]["id"]
    with psycopg.connect(api.uri(look)) as conn:
        assert conn.execute("SELECT x FROM draft").fetchone() == (7,)
    assert backup["parent_id"] == main
    assert branches["work"]["parent_id"] == backup["id"]
    assert branches["work-child"]["parent_id"] == backup["id"]  # (as Neon moves children)
    assert child == branches["work-child"]["id"]
    again = api.post(
        api.project_path(f"/branches/{work}/restore"),
        json={"source_branch_id": main, "preserve_under_name": "work-before"},
    )
    assert again.status_code == 409  # the name is taken


def test_a_new_role_logs_in_with_its_password(api: NeonHttp, emulator: Emulator) -> None:
    main = emulator.default_branch_id
    path = api.project_path(f"/branches/{main}/roles")
    made = api.post(path, json={"role": {"name": "app_reader"}})
    assert made.status_code == 201, made.text
    assert made.json()["role"]["password"]
    assert [op["action"] for op in made.json()["operations"]] == ["apply_config"]
    with psycopg.connect(api.uri(main, role="app_reader")) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("app_reader",)
    listed = api.get(path).json()["roles"]
    assert {r["name"] for r in listed} == {"neondb_owner", "app_reader"}
    assert api.post(path, json={"role": {"name": "app_reader"}}).status_code == 409
    assert api.post(path, json={"role": {"name": ""}}).status_code == 400
    assert api.post(path, json={"role": {"name": "x" * 64}}).status_code == 400
    nologin = api.post(path, json={"role": {"name": "app_group", "no_login": True}})
    assert nologin.status_code == 201
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        psycopg.connect(api.uri(main, role="app_group"), connect_timeout=10).close()


def test_a_read_only_endpoint_refuses_writes(api: NeonHttp, emulator: Emulator) -> None:
    main = emulator.default_branch_id
    made = api.post(
        api.project_path("/endpoints"), json={"endpoint": {"branch_id": main, "type": "read_only"}}
    )
    assert made.status_code == 201, made.text
    endpoint = made.json()["endpoint"]
    assert (endpoint["type"], endpoint["branch_id"]) == ("read_only", main)
    uri = api.get(
        api.project_path("/connection_uri"),
        params={
            "endpoint_id": endpoint["id"],
            "database_name": "neondb",
            "role_name": "neondb_owner",
        },
    ).json()["uri"]
    with psycopg.connect(uri) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE refused (x int)")
    with psycopg.connect(api.uri(main)) as conn:  # the read-write endpoint still writes
        conn.execute("CREATE TABLE allowed (x int)")
    second = api.post(
        api.project_path("/endpoints"), json={"endpoint": {"branch_id": main, "type": "read_write"}}
    )
    assert second.status_code == 409  # one read-write endpoint per branch
    updated = api.patch(
        api.project_path(f"/endpoints/{endpoint['id']}"),
        json={"endpoint": {"suspend_timeout_seconds": 300}},
    )
    assert updated.status_code == 200
    listed = api.get(api.project_path(f"/branches/{main}/endpoints")).json()["endpoints"]
    assert sorted(e["type"] for e in listed) == ["read_only", "read_write"]
    gone = api.delete(api.project_path(f"/endpoints/{endpoint['id']}"))
    assert gone.status_code == 200
    assert api.get(api.project_path(f"/endpoints/{endpoint['id']}")).status_code == 404


def test_a_role_is_deleted_unless_it_owns_a_database(
    api: NeonHttp, emulator: Emulator, postgres_url: str
) -> None:
    main = emulator.default_branch_id
    roles = api.project_path(f"/branches/{main}/roles")
    assert api.post(roles, json={"role": {"name": "tmp_owner"}}).status_code == 201
    databases = api.project_path(f"/branches/{main}/databases")
    api.post(databases, json={"database": {"name": "owned", "owner_name": "tmp_owner"}})
    refused = api.delete(api.project_path(f"/branches/{main}/roles/tmp_owner"))
    assert refused.status_code == 422
    assert "owns database owned" in refused.json()["message"]
    api.delete(api.project_path(f"/branches/{main}/databases/owned"))
    gone = api.delete(api.project_path(f"/branches/{main}/roles/tmp_owner"))
    assert gone.status_code == 200, gone.text
    assert api.get(api.project_path(f"/branches/{main}/roles/tmp_owner")).status_code == 404
    with psycopg.connect(postgres_url) as conn:  # the server's role went with it
        row = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'tmp_owner'").fetchone()
    assert row is None


def test_an_endpoint_moves_to_another_branch(api: NeonHttp, emulator: Emulator) -> None:
    main = emulator.default_branch_id
    feature = api.create_branch(name="feature")["branch"]["id"]
    with psycopg.connect(api.uri(feature)) as conn:
        conn.execute("CREATE TABLE on_feature (x int)")
    made = api.post(
        api.project_path("/endpoints"), json={"endpoint": {"branch_id": main, "type": "read_only"}}
    )
    endpoint = made.json()["endpoint"]["id"]
    path = api.project_path(f"/endpoints/{endpoint}")

    def uri() -> str:
        params = {"endpoint_id": endpoint, "database_name": "neondb", "role_name": "neondb_owner"}
        return str(api.get(api.project_path("/connection_uri"), params=params).json()["uri"])

    with psycopg.connect(uri()) as conn:  # on main: no such table
        assert conn.execute("SELECT to_regclass('on_feature')").fetchone() == (None,)
    moved = api.patch(path, json={"endpoint": {"branch_id": feature}})
    assert moved.status_code == 200, moved.text
    assert moved.json()["endpoint"]["branch_id"] == feature
    assert [op["action"] for op in moved.json()["operations"]] == [
        "suspend_compute",
        "start_compute",
    ]
    assert api.get(path).json()["endpoint"]["branch_id"] == feature
    on_feature = api.get(api.project_path(f"/branches/{feature}/endpoints")).json()["endpoints"]
    assert endpoint in {e["id"] for e in on_feature}
    with psycopg.connect(uri()) as conn:  # the same endpoint leads to the feature branch now
        assert conn.execute("SELECT to_regclass('on_feature')").fetchone() == ("on_feature",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):  # and is still read-only
            conn.execute("CREATE TABLE refused (x int)")

    # a branch has one read-write endpoint at most; an unknown branch, a bad id
    main_rw = next(
        e["id"]
        for e in api.get(api.project_path(f"/branches/{main}/endpoints")).json()["endpoints"]
        if e["type"] == "read_write"
    )
    taken = api.patch(
        api.project_path(f"/endpoints/{main_rw}"), json={"endpoint": {"branch_id": feature}}
    )
    assert taken.status_code == 409
    assert api.patch(path, json={"endpoint": {"branch_id": "br-none-1"}}).status_code == 404
    assert api.patch(path, json={"endpoint": {"branch_id": 5}}).status_code == 400
