"""The command line: ready file, a real call, clean SIGTERM, no secret in the output."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from pytest_neon.local.emulator import Emulator


def test_cli_serves_until_sigterm(postgres_url: str, tmp_path: Path) -> None:
    ready = tmp_path / "ready" / "emulator.json"
    key = f"cli-key-{secrets.token_hex(12)}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest_neon.local.emulator",
            "--postgres-url",
            postgres_url,
            "--port",
            "0",
            "--ready-file",
            str(ready),
            "--api-key",
            key,
            "--operation-delay",
            "0",
            "--log-level",
            "DEBUG",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    project_id = None
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no ready file"
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        assert set(info) == {"api_host", "project_id", "api_key", "default_branch_id"}
        assert info["api_key"] == key
        assert info["api_host"].startswith("http://127.0.0.1:")
        assert info["api_host"].endswith("/api/v2")
        project_id = info["project_id"]

        headers = {"Authorization": f"Bearer {key}"}
        base = f"{info['api_host']}/projects/{project_id}"
        with requests.Session() as s:
            assert s.get(base, timeout=10).status_code == 401
            created = s.post(
                f"{base}/branches",
                json={"branch": {"name": "from-cli"}, "endpoints": [{"type": "read_write"}]},
                headers=headers,
                timeout=30,
            )
            assert created.status_code == 201
            branch_id = created.json()["branch"]["id"]
            password = s.get(
                f"{base}/branches/{branch_id}/roles/neondb_owner/reveal_password",
                headers=headers,
                timeout=10,
            ).json()["password"]
            branches = s.get(f"{base}/branches", headers=headers, timeout=10).json()
            default = next(b for b in branches["branches"] if b["default"])
            assert default["id"] == info["default_branch_id"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "from-cli" in err or "/branches" in err  # it does log requests
    assert key not in out + err
    assert password not in out + err
    assert not ready.exists()

    # Clean up the project the subprocess left on the server.
    Emulator(postgres_url, project_id=project_id).start().stop(drop=True)


def test_console_script_help() -> None:
    script = Path(sys.executable).with_name("pytest-neon-emulator")
    command = (
        [str(script)] if script.exists() else [sys.executable, "-m", "pytest_neon.local.emulator"]
    )
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for option in (
        "--host",
        "--port",
        "--postgres-url",
        "--project-id",
        "--api-key",
        "--ready-file",
        "--request-delay",
        "--operation-delay",
        "--rate-limit",
        "--fail-rate",
        "--seed",
        "--max-branches",
    ):
        assert option in result.stdout
