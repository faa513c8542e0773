"""Neon's Node clients drive the emulator as their users would: the CLI (``neonctl`` 5) and
the TypeScript client (``@neondatabase/api-client`` 2.7), both pinned and installed under
``tests/clients/node`` by ``make test`` (``npm ci``). Without Node on the machine these
tests are skipped; with Node but without the install they fail, saying how to install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pytest_neon.local.emulator import Emulator

CLIENTS = Path(__file__).parents[1] / "clients" / "node"
NEONCTL = CLIENTS / "node_modules" / ".bin" / "neonctl"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="Node is not installed")


@pytest.fixture(scope="module")
def installed() -> Path:
    if not NEONCTL.exists():
        pytest.fail(f"Neon's Node clients are not installed: cd {CLIENTS} && npm ci", pytrace=False)
    return CLIENTS


def _run_neonctl(emulator: Emulator, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HOME": str(home),  # its credentials file and settings, not the user's
        "NEON_API_KEY": emulator.api_key or "",
    }
    return subprocess.run(
        [str(NEONCTL), "--api-host", emulator.api_host, "--no-analytics", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _neonctl(emulator: Emulator, home: Path, *args: str) -> Any:
    """Its JSON answer (the command must succeed)."""
    proc = _run_neonctl(emulator, home, "--output", "json", *args)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout) if proc.stdout.strip().startswith(("{", "[")) else proc.stdout


def test_neonctl(installed: Path, emulator: Emulator, tmp_path: Path) -> None:
    project = emulator.project_id
    assert _neonctl(emulator, tmp_path, "me")["id"] == "local"
    assert [p["id"] for p in _neonctl(emulator, tmp_path, "projects", "list")["projects"]] == [
        project
    ]
    made = _neonctl(emulator, tmp_path, "branches", "create", "--name", "cli-branch")
    branch = made["branch"]["id"]
    uri = made["connection_uris"][0]["connection_uri"]
    with psycopg.connect(uri, connect_timeout=10) as conn:
        conn.execute("CREATE TABLE from_cli (x int)")  # the string it printed works
    names = {b["name"] for b in _neonctl(emulator, tmp_path, "branches", "list")}
    assert names == {"main", "cli-branch"}  # one project: no --project-id needed
    _neonctl(emulator, tmp_path, "branches", "rename", "cli-branch", "cli-renamed")
    default = _neonctl(emulator, tmp_path, "branches", "set-default", "cli-renamed")
    assert (default["id"], default["default"]) == (branch, True)
    operations = _neonctl(emulator, tmp_path, "operations", "list")
    assert {"create_branch", "start_compute"} <= {op["action"] for op in operations}


def test_neonctl_roles_and_what_is_missing(
    installed: Path, emulator: Emulator, tmp_path: Path
) -> None:
    orgs = _run_neonctl(emulator, tmp_path, "orgs", "list")
    assert orgs.returncode == 0, orgs.stderr  # organizations: none, not an error
    role = _run_neonctl(emulator, tmp_path, "roles", "create", "--name", "reader")
    assert role.returncode == 0, role.stderr
    missing = _run_neonctl(emulator, tmp_path, "projects", "create", "--name", "another")
    assert missing.returncode != 0
    assert "POST /projects is not implemented by the pytest-neon emulator" in (
        missing.stderr + missing.stdout
    )


def test_the_typescript_client(installed: Path, emulator: Emulator) -> None:
    proc = subprocess.run(
        ["node", "drive.mjs", emulator.api_host, emulator.api_key or "", emulator.project_id],
        cwd=installed,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["me"] == "local"
    assert seen["projects"] == [emulator.project_id]
    assert seen["created"] == "ts-branch"
    assert seen["listed"] == ["ts-branch"]
    assert seen["paged"] == [1, True]
    assert seen["renamed"] == "ts-renamed"
    assert seen["uriByEndpoint"] == seen["uri"]
    assert seen["setDefault"] is True
    status, code, message = seen["missing"]
    assert (status, code) == (501, "NOT_IMPLEMENTED")
    assert "GET /api_keys is not implemented" in message
    # the role's new password is the one that works now
    assert seen["newPassword"] not in seen["uri"]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(seen["uri"], connect_timeout=10).close()


def test_neonctl_connection_strings_lead_to_their_branch(
    installed: Path, emulator: Emulator, tmp_path: Path
) -> None:
    project = emulator.project_id
    for name in ("cs-one", "cs-two"):
        _neonctl(emulator, tmp_path, "branches", "create", "--project-id", project, "--name", name)

    def connection_string(branch: str, *extra: str) -> str:
        proc = _run_neonctl(
            emulator, tmp_path, "connection-string", branch, "--project-id", project, *extra
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    one, two = connection_string("cs-one"), connection_string("cs-two")
    assert one != two
    assert one.endswith("/neondb?sslmode=require&channel_binding=require")
    with psycopg.connect(one, connect_timeout=10) as conn:  # exactly the printed string
        conn.execute("CREATE TABLE from_cs_one (x int)")
        conn.execute("INSERT INTO from_cs_one VALUES (1)")
    with psycopg.connect(two, connect_timeout=10) as conn:
        row = conn.execute("SELECT to_regclass('from_cs_one') IS NULL").fetchone()
        assert row == (True,)  # the second branch's string reaches the second branch
    # no pooler here: --pooled names the same listener
    pooled = connection_string("cs-one", "--pooled")
    with psycopg.connect(pooled, connect_timeout=10) as conn:
        assert conn.execute("SELECT x FROM from_cs_one").fetchall() == [(1,)]
