"""Branch behaviour: isolation, restore, delete, naming, pagination and the rules Neon enforces."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from pytest_neon.local.emulator import Emulator
from tests.support.emulator_http import NeonHttp, database_exists, load_spec, real_name, sql


def test_branches_are_isolated_copies_of_their_parent(emulator: Emulator, api: NeonHttp) -> None:
    main = emulator.default_branch_id
    main_uri = api.uri(main)
    sql(main_uri, "CREATE TABLE items (name text); INSERT INTO items VALUES ('from-main')")

    a = api.create_branch(name="iso-a")["branch"]["id"]
    b = api.create_branch(name="iso-b")["branch"]["id"]
    a_uri, b_uri = api.uri(a), api.uri(b)
    assert len({main_uri, a_uri, b_uri}) == 3
    sql(a_uri, "INSERT INTO items VALUES ('only-on-a')")

    assert sql(a_uri, "SELECT name FROM items ORDER BY name") == [("from-main",), ("only-on-a",)]
    assert sql(b_uri, "SELECT name FROM items") == [("from-main",)]
    assert sql(main_uri, "SELECT name FROM items") == [("from-main",)]

    grandchild = api.create_branch(name="iso-a-child", parent_id=a)["branch"]
    assert grandchild["parent_id"] == a
    rows = sql(api.uri(grandchild["id"]), "SELECT count(*) FROM items")
    assert rows == [(2,)]


def test_the_role_is_real_and_owns_the_branch_database(emulator: Emulator, api: NeonHttp) -> None:
    branch = api.create_branch(name="role-check")["branch"]["id"]
    uri = api.uri(branch)
    password = api.get(
        api.project_path(f"/branches/{branch}/roles/neondb_owner/reveal_password")
    ).json()["password"]
    assert password.startswith("npg_")
    assert f":{password}@" in uri
    assert sql(uri, "SELECT current_user, current_database()") == [("neondb_owner", real_name(uri))]
    owner = sql(
        uri, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
    )
    assert owner == [("neondb_owner",)]


def test_restore_brings_back_the_parents_current_state(
    emulator: Emulator, api: NeonHttp, postgres_url: str
) -> None:
    main = emulator.default_branch_id
    main_uri = api.uri(main)
    sql(main_uri, "CREATE TABLE t (v text); INSERT INTO t VALUES ('v1')")
    branch = api.create_branch(name="resettable")["branch"]["id"]
    uri = api.uri(branch)
    sql(uri, "INSERT INTO t VALUES ('written-by-test'); CREATE TABLE junk (x int)")
    sql(main_uri, "INSERT INTO t VALUES ('v2-on-parent-later')")

    with psycopg.connect(uri, autocommit=True) as held:
        held.execute("SELECT 1")
        body = api.restore(branch, main)
        assert body["branch"]["last_reset_at"]
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")  # the restore terminated this session

    assert api.uri(branch) == uri  # same connection string, same real database name
    assert database_exists(postgres_url, real_name(uri))
    assert sql(uri, "SELECT v FROM t ORDER BY v") == [("v1",), ("v2-on-parent-later",)]
    assert sql(uri, "SELECT to_regclass('junk') IS NULL") == [(True,)]
    assert sql(main_uri, "SELECT count(*) FROM t") == [(2,)]


def test_delete_drops_the_real_databases(
    emulator: Emulator, api: NeonHttp, postgres_url: str
) -> None:
    branch = api.create_branch(name="doomed")["branch"]["id"]
    real = real_name(api.uri(branch))
    assert database_exists(postgres_url, real)

    body = api.delete_branch(branch).json()
    assert body["branch"]["id"] == branch
    assert {op["action"] for op in body["operations"]} == {"suspend_compute", "delete_timeline"}
    assert not database_exists(postgres_url, real)
    assert api.get(api.project_path(f"/branches/{branch}")).status_code == 404
    api.delete_branch(branch, expect=204)  # already gone
    op = api.get(api.project_path(f"/operations/{body['operations'][0]['id']}"))
    assert op.status_code == 200
    assert "doomed" not in api.branch_names()


def test_rules_neon_enforces(emulator: Emulator, api: NeonHttp) -> None:
    main = emulator.default_branch_id
    p = api.project_path

    refused = api.delete(p(f"/branches/{main}"))
    assert refused.status_code == 422
    assert refused.json()["message"] == "cannot delete default branch"

    parent = api.create_branch(name="parent")["branch"]["id"]
    api.create_branch(name="kid", parent_id=parent)
    has_child = api.delete(p(f"/branches/{parent}"))
    assert has_child.status_code == 422
    assert "child" in has_child.json()["message"]
    restore_parent = api.post(p(f"/branches/{parent}/restore"), json={"source_branch_id": main})
    assert restore_parent.status_code == 400
    assert "children" in restore_parent.json()["message"]

    dup = api.post(p("/branches"), json={"branch": {"name": "parent"}})
    assert dup.status_code == 409
    assert dup.json()["message"] == "branch already exists"

    protected = api.create_branch(name="guarded", protected=True)["branch"]["id"]
    assert (
        api.delete(p(f"/branches/{protected}")).json()["message"]
        == "cannot delete protected branch"
    )
    reset = api.post(p(f"/branches/{protected}/restore"), json={"source_branch_id": main})
    assert (reset.status_code, reset.json()["message"]) == (422, "cannot reset protected branch")

    leaf = api.create_branch(name="leaf")["branch"]["id"]
    for body in (
        {"source_branch_id": main, "preserve_under_name": 5},  # no name
        {"source_branch_id": leaf},  # its own history: needs an LSN or a timestamp
        {"source_branch_id": main, "source_timestamp": "2024-01-01T00:00:00Z"},
        {"source_branch_id": main, "source_lsn": 0},  # not taken for "none"
        {"source_branch_id": main, "source_timestamp": False},
    ):
        answer = api.post(p(f"/branches/{leaf}/restore"), json=body)
        assert answer.status_code == 400, answer.text

    unknown_parent = api.post(
        p("/branches"), json={"branch": {"parent_id": "br-nope-nope-00000000"}}
    )
    assert unknown_parent.status_code == 404
    no_source = api.post(
        p(f"/branches/{parent}/restore"), json={"source_branch_id": "br-nope-nope-00000000"}
    )
    assert no_source.status_code == 404


def test_not_found_answers(emulator: Emulator, api: NeonHttp) -> None:
    p = api.project_path
    main = emulator.default_branch_id
    cases = {
        "/projects/other-project-12345678": "project not found",
        "/projects/other-project-12345678/branches": "project not found",
        p("/branches/br-missing-branch-00000000"): "branch not found",
        p("/branches/br-missing-branch-00000000/endpoints"): "branch not found",
        p("/operations/8a1e6d2c-6f0e-4f5e-9d5e-2d1f6b7c8a90"): "operation not found",
        p(f"/branches/{main}/roles/ghost/reveal_password"): "role not found",
        p(f"/branches/{main}/databases/ghost"): "database not found",
        p("/endpoints/ep-missing-endpoint-00000000"): "endpoint not found",
    }
    for path, message in cases.items():
        response = api.get(path)
        assert response.status_code == 404, path
        assert response.json() == {
            "code": "",
            "message": message,
            "request_id": response.headers["X-Neon-Request-Id"],
        }
    unknown_db = api.get(
        p("/connection_uri"),
        params={"branch_id": main, "database_name": "ghost", "role_name": "neondb_owner"},
    )
    assert unknown_db.status_code == 404
    bare = api.post(p("/branches"), json={"branch": {"name": "no-endpoint"}}).json()["branch"]["id"]
    no_endpoint = api.get(
        p("/connection_uri"),
        params={"branch_id": bare, "database_name": "neondb", "role_name": "neondb_owner"},
    )
    assert no_endpoint.status_code == 404
    assert api.get("/unknown").status_code == 404
    assert api.request("PUT", p()).status_code == 405


def test_cursor_pagination_walks_every_branch_once(emulator: Emulator, api: NeonHttp) -> None:
    names = [f"page-{i:02d}" for i in range(7)]
    for name in names:
        api.create_branch(name=name)
    everything = {*names, "main"}

    for sort_by, sort_order in (("name", "asc"), ("created_at", "desc"), ("updated_at", "desc")):
        seen: list[str] = []
        params: dict[str, str | int] = {"limit": 3, "sort_by": sort_by, "sort_order": sort_order}
        pages = 0
        while True:
            response = api.get(api.project_path("/branches"), params=params)
            assert response.status_code == 200
            body = response.json()
            assert len(body["branches"]) <= 3
            assert set(body["annotations"]) == {b["id"] for b in body["branches"]}
            seen += [b["name"] for b in body["branches"]]
            pages += 1
            cursor = body["pagination"].get("next")
            if not cursor:
                break
            params = {"cursor": cursor, "limit": 3}
        assert pages == 3
        assert sorted(seen) == sorted(everything)
        if sort_by == "name":
            assert seen == sorted(everything)

    found = api.get(api.project_path("/branches"), params={"search": "PAGE-0"}).json()
    assert len(found["branches"]) == 7
    limit_error = api.get(api.project_path("/branches"), params={"limit": 0})
    assert limit_error.status_code == 400


def test_branch_limit_answers_branches_limit_exceeded(
    make_emulator: Callable[..., Emulator],
) -> None:
    emu = make_emulator(max_branches=2)
    with NeonHttp(emu, load_spec()) as api:
        api.create_branch(name="one")
        refused = api.post(api.project_path("/branches"), json={"branch": {"name": "two"}})
        assert refused.status_code == 422
        assert refused.json()["code"] == "BRANCHES_LIMIT_EXCEEDED"
        assert "two" not in api.branch_names()
        assert api.get(api.project_path()).json()["project"]["owner"]["branches_limit"] == 2


def test_clone_of_a_busy_parent_fails_cleanly(emulator: Emulator, api: NeonHttp) -> None:
    """PostgreSQL cannot copy a database others are connected to: retried, then a 423."""
    emulator.control_plane.clone_wait = 0.3
    emulator.control_plane.evict_after = None
    main_uri = api.uri(emulator.default_branch_id)
    with psycopg.connect(main_uri, autocommit=True):
        refused = api.post(api.project_path("/branches"), json={"branch": {"name": "blocked"}})
    assert refused.status_code == 423
    assert "being accessed by other users" in refused.json()["message"]
    assert "blocked" not in api.branch_names()
    emulator.control_plane.clone_wait = 3  # the closed session may take a moment to leave
    api.create_branch(name="blocked")  # works once the parent is free


def test_sessions_left_on_a_parent_are_cut_so_it_can_be_copied(
    emulator: Emulator, api: NeonHttp
) -> None:
    emulator.control_plane.evict_after = 0.1
    main_uri = api.uri(emulator.default_branch_id)
    with psycopg.connect(main_uri, autocommit=True) as held:
        api.create_branch(name="copied-anyway")
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
    assert "copied-anyway" in api.branch_names()


def test_patch_renames_and_protects(emulator: Emulator, api: NeonHttp) -> None:
    branch = api.create_branch(name="before")["branch"]["id"]
    renamed = api.patch(api.project_path(f"/branches/{branch}"), json={"branch": {"name": "after"}})
    assert renamed.status_code == 200
    assert renamed.json()["operations"] == []
    assert "after" in api.branch_names()
    clash = api.patch(api.project_path(f"/branches/{branch}"), json={"branch": {"name": "main"}})
    assert clash.status_code == 409
    missing = api.patch(api.project_path(f"/branches/{branch}"), json={})
    assert missing.status_code == 400
