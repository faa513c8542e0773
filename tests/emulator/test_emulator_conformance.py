"""Every call of the emulator, success and error, validated against Neon's openapi.yaml."""

from __future__ import annotations

import uuid

from pytest_neon.local.emulator import Emulator
from tests.support.emulator_http import NeonHttp, OpenApiSpec


def test_every_call_conforms_to_openapi(emulator: Emulator, openapi_spec: OpenApiSpec) -> None:
    with NeonHttp(emulator, openapi_spec) as api:
        main = emulator.default_branch_id
        p = api.project_path

        assert api.get(p()).status_code == 200
        created = api.create_branch(name="conf-a", expires_at=None)
        a = created["branch"]["id"]
        assert created["connection_uris"][0]["connection_uri"].startswith("postgresql://")
        assert {op["action"] for op in created["operations"]} == {"create_branch", "start_compute"}
        child = api.post(
            p("/branches"),
            json={
                "branch": {"parent_id": a, "name": "conf-b"},
                "endpoints": [{"type": "read_write"}],
                "annotation_value": {"purpose": "conformance"},
            },
        )
        assert child.status_code == 201
        b = child.json()["branch"]["id"]
        bare = api.post(p("/branches"), json={})  # no endpoint, generated name
        assert bare.status_code == 201
        assert bare.json()["endpoints"] == []
        assert "connection_uris" not in bare.json()

        listing = api.get(p("/branches"), params={"limit": 2, "sort_by": "name"})
        assert listing.status_code == 200
        assert "next" in listing.json()["pagination"]
        assert api.get(p(f"/branches/{b}")).json()["annotation"]["value"] == {
            "purpose": "conformance"
        }
        assert api.get(p("/branches/count")).json() == {"count": 4}
        assert api.get(p(f"/branches/{a}/endpoints")).status_code == 200
        endpoints = api.get(p("/endpoints")).json()["endpoints"]
        assert len(endpoints) == 3
        assert api.get(p(f"/endpoints/{endpoints[0]['id']}")).status_code == 200
        assert api.get(p(f"/branches/{a}/roles")).status_code == 200
        assert api.get(p(f"/branches/{a}/roles/neondb_owner")).status_code == 200
        password = api.get(p(f"/branches/{a}/roles/neondb_owner/reveal_password"))
        assert password.status_code == 200
        assert api.get(p(f"/branches/{a}/databases")).json()["databases"][0]["name"] == "neondb"
        assert api.get(p(f"/branches/{a}/databases/neondb")).status_code == 200
        uri = api.uri(a)
        assert password.json()["password"] in uri or "%" in uri
        pooled = api.get(
            p("/connection_uri"),
            params={
                "branch_id": a,
                "database_name": "neondb",
                "role_name": "neondb_owner",
                "pooled": "true",
            },
        )
        assert pooled.json()["uri"] == uri
        op_id = created["operations"][0]["id"]
        assert api.get(p(f"/operations/{op_id}")).json()["operation"]["status"] == "finished"
        ops = api.get(p("/operations"), params={"limit": 3})
        assert len(ops.json()["operations"]) == 3
        nxt = api.get(p("/operations"), params={"cursor": ops.json()["pagination"]["cursor"]})
        assert nxt.status_code == 200
        renamed = api.patch(p(f"/branches/{b}"), json={"branch": {"name": "conf-b2"}})
        assert renamed.status_code == 200
        assert renamed.json()["branch"]["name"] == "conf-b2"
        restored = api.restore(b, a)
        assert restored["branch"]["id"] == b
        api.delete_branch(b)
        api.delete_branch(b, expect=204)

        # Error answers: every one is a GeneralError.
        errors = [
            api.get("/projects/no-such-project-1/branches"),
            api.get(p("/branches/br-no-such-branch-00000000")),
            api.get(p(f"/operations/{uuid.uuid4()}")),
            api.get(p(f"/branches/{a}/roles/nobody/reveal_password")),
            api.get(p("/connection_uri"), params={"branch_id": a, "role_name": "neondb_owner"}),
            api.get(p("/branches"), params={"sort_by": "size"}),
            api.get(p("/branches"), params={"cursor": "not-a-cursor!"}),
            api.post(
                p("/branches"), data=b"{not json", headers={"Content-Type": "application/json"}
            ),
            api.post(p("/branches"), json={"branch": {"name": "conf-a"}}),
            api.delete(p(f"/branches/{main}")),
            api.post(p(f"/branches/{a}/restore"), json={}),
        ]
        assert [r.status_code for r in errors] == [
            404,
            404,
            404,
            404,
            400,
            400,
            400,
            400,
            409,
            422,
            400,
        ]
        assert errors[1].json()["message"] == "branch not found"
        assert errors[8].json()["message"] == "branch already exists"
        unauthorized = NeonHttp(emulator, openapi_spec, api_key="wrong")
        with unauthorized:
            assert unauthorized.get(p()).status_code == 401

        checked = {(m, t) for m, t, _ in api.checked}
        assert len(checked) >= 18
