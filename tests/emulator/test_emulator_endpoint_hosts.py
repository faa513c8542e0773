"""Every endpoint's ``host`` is a listener that leads to its branch: TLS, SCRAM-SHA-256 with
channel binding ended there (as on Neon), the logical database mapped to the real one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import requests
from psycopg import errors

from pytest_neon.local.emulator import Emulator
from tests.support.emulator_http import NeonHttp, sql

TLS_BOUND = "sslmode=require&channel_binding=require"


def _endpoint(api: NeonHttp, branch_id: str) -> dict[str, Any]:
    response = api.get(api.project_path(f"/branches/{branch_id}/endpoints"))
    assert response.status_code == 200, response.text
    endpoint: dict[str, Any] = response.json()["endpoints"][0]
    return endpoint


def _password(api: NeonHttp, branch_id: str, role: str = "neondb_owner") -> str:
    path = api.project_path(f"/branches/{branch_id}/roles/{role}/reveal_password")
    return str(api.get(path).json()["password"])


def _host_uri(
    api: NeonHttp,
    branch_id: str,
    *,
    query: str = TLS_BOUND,
    database: str = "neondb",
    password: str | None = None,
) -> str:
    """What ``neonctl connection-string`` builds: the endpoint's host, the role's password,
    the logical database name."""
    host = _endpoint(api, branch_id)["host"]
    secret = quote(password if password is not None else _password(api, branch_id), safe="")
    return f"postgresql://neondb_owner:{secret}@{host}/{database}?{query}"


def test_the_host_is_a_tls_listener_with_channel_binding(emulator: Emulator, api: NeonHttp) -> None:
    main = emulator.default_branch_id
    host = _endpoint(api, main)["host"]
    assert host.startswith("127.0.0.1:")
    assert emulator.endpoint_tls is True
    with psycopg.connect(_host_uri(api, main), connect_timeout=10) as conn:
        assert conn.info.pgconn.ssl_in_use
        database, user = conn.execute("SELECT current_database(), current_user").fetchone() or ()
        conn.execute("CREATE TABLE through_the_host (x int)")
    assert database == api.uri(main).rsplit("/", 1)[1].split("?")[0]  # the real one
    assert user == "neondb_owner"
    assert sql(api.uri(main), "SELECT count(*) FROM through_the_host") == [(0,)]


def test_tls_without_channel_binding_and_no_tls(emulator: Emulator, api: NeonHttp) -> None:
    main = emulator.default_branch_id
    plain_scram = _host_uri(api, main, query="sslmode=require&channel_binding=disable")
    assert sql(plain_scram, "SELECT 1") == [(1,)]
    # libpq's default (sslmode=prefer) asks for TLS first: it connects
    assert sql(_host_uri(api, main, query="connect_timeout=10"), "SELECT 1") == [(1,)]
    # as on Neon, a connection without TLS is refused, saying what to do
    with pytest.raises(psycopg.OperationalError, match=r"insecure \(try using `sslmode=require`"):
        psycopg.connect(_host_uri(api, main, query="sslmode=disable"), connect_timeout=10)


def test_a_wrong_password_is_refused(emulator: Emulator, api: NeonHttp) -> None:
    main = emulator.default_branch_id
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(_host_uri(api, main, password="not-the-password"), connect_timeout=10)
    stranger = _host_uri(api, main).replace("neondb_owner:", "nobody:", 1)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(stranger, connect_timeout=10)


def test_after_a_password_reset_only_the_new_one_works(emulator: Emulator, api: NeonHttp) -> None:
    main = emulator.default_branch_id
    old = _host_uri(api, main)
    assert sql(old, "SELECT 1") == [(1,)]
    reset = api.post(api.project_path(f"/branches/{main}/roles/neondb_owner/reset_password"))
    assert reset.status_code == 200, reset.text
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(old, connect_timeout=10)
    assert sql(_host_uri(api, main), "SELECT 1") == [(1,)]


def test_each_branch_host_leads_to_its_branch(emulator: Emulator, api: NeonHttp) -> None:
    a = api.create_branch(name="host-a")["branch"]["id"]
    b = api.create_branch(name="host-b")["branch"]["id"]
    a_uri, b_uri = _host_uri(api, a), _host_uri(api, b)
    assert _endpoint(api, a)["host"] != _endpoint(api, b)["host"]
    sql(a_uri, "CREATE TABLE only_on_a (x int)")
    assert sql(a_uri, "SELECT to_regclass('only_on_a') IS NOT NULL") == [(True,)]
    assert sql(b_uri, "SELECT to_regclass('only_on_a') IS NOT NULL") == [(False,)]


def test_a_database_made_through_the_api_is_reached_by_name(
    emulator: Emulator, api: NeonHttp
) -> None:
    main = emulator.default_branch_id
    made = api.post(
        api.project_path(f"/branches/{main}/databases"),
        json={"database": {"name": "reports", "owner_name": "neondb_owner"}},
    )
    assert made.status_code == 201, made.text
    uri = _host_uri(api, main, database="reports")
    sql(uri, "CREATE TABLE in_reports (x int)")
    assert sql(api.uri(main, database="reports"), "SELECT count(*) FROM in_reports") == [(0,)]
    with pytest.raises(psycopg.OperationalError, match='database "nowhere" does not exist'):
        psycopg.connect(_host_uri(api, main, database="nowhere"), connect_timeout=10)


def test_a_read_only_endpoint_refuses_writes(emulator: Emulator, api: NeonHttp) -> None:
    main = emulator.default_branch_id
    made = api.post(
        api.project_path("/endpoints"), json={"endpoint": {"branch_id": main, "type": "read_only"}}
    )
    assert made.status_code == 201, made.text
    host = made.json()["endpoint"]["host"]
    uri = f"postgresql://neondb_owner:{quote(_password(api, main))}@{host}/neondb?{TLS_BOUND}"
    assert sql(uri, "SHOW default_transaction_read_only") == [("on",)]
    with pytest.raises(errors.ReadOnlySqlTransaction):
        sql(uri, "CREATE TABLE not_here (x int)")


_CANCEL_IN_A_CLIENT = """
import sys, threading, psycopg
with psycopg.connect(sys.argv[1], connect_timeout=10) as conn:
    threading.Timer(0.3, conn.cancel).start()
    try:
        conn.execute("SELECT pg_sleep(20)")
    except psycopg.errors.QueryCanceled:
        print("cancelled")
"""


def test_a_query_is_cancelled_through_the_host(emulator: Emulator, api: NeonHttp) -> None:
    uri = _host_uri(api, emulator.default_branch_id)
    # libpq's new cancel API (over TLS, as the connection is)
    with psycopg.connect(uri, connect_timeout=10) as conn:
        timer = threading.Timer(0.3, conn.cancel_safe)
        timer.start()
        started = time.monotonic()
        with pytest.raises(errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(20)")
        timer.join()
        assert time.monotonic() - started < 10
    # PQcancel: a plain CancelRequest (from another process: it holds the GIL while it waits)
    proc = subprocess.run(
        [sys.executable, "-c", _CANCEL_IN_A_CLIENT, uri],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.stdout.strip() == "cancelled", proc.stderr


def test_a_suspended_endpoint_wakes_on_connection_and_a_deleted_one_is_closed(
    emulator: Emulator, api: NeonHttp
) -> None:
    branch = api.create_branch(name="host-suspend")["branch"]["id"]
    endpoint = _endpoint(api, branch)
    path = api.project_path(f"/endpoints/{endpoint['id']}")
    uri = _host_uri(api, branch)
    with psycopg.connect(uri, connect_timeout=10) as conn:
        suspended = api.post(f"{path}/suspend")
        assert suspended.status_code == 200, suspended.text
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")  # its sessions ended
    assert api.get(path).json()["endpoint"]["current_state"] == "idle"
    assert sql(uri, "SELECT 1") == [(1,)]  # as on Neon, a connection starts it again
    assert api.get(path).json()["endpoint"]["current_state"] == "active"
    api.delete_branch(branch)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(uri, connect_timeout=5)


def test_the_plugins_emulator_has_no_listeners(postgres_url: str) -> None:
    with Emulator(postgres_url, endpoint_proxy=False) as emu:
        try:
            body = emu.control_plane.endpoints.project_endpoints()
            assert ":" not in body["endpoints"][0]["host"]  # the server's host
            assert emu.endpoint_tls is None
        finally:
            emu.stop(drop=True)


_CLI_WITHOUT_CRYPTOGRAPHY = """
import sys
sys.modules["cryptography"] = None  # as if pytest-neon[emulator] were not installed
from pytest_neon.local.emulator.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("openssl", [True, False], ids=["openssl", "no-tls-at-all"])
def test_the_cli_without_cryptography(postgres_url: str, tmp_path: Path, openssl: bool) -> None:
    ready = tmp_path / "ready.json"
    env = {**os.environ, "PATH": os.environ["PATH"] if openssl else str(tmp_path)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CLI_WITHOUT_CRYPTOGRAPHY,
            "--postgres-url",
            postgres_url,
            "--ready-file",
            str(ready),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    info: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, "the emulator stopped"
            assert time.monotonic() < deadline, "the emulator did not start"
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        base = (
            f"{info['api_host']}/projects/{info['project_id']}/branches/{info['default_branch_id']}"
        )
        with requests.Session() as http:
            host = http.get(f"{base}/endpoints", timeout=10).json()["endpoints"][0]["host"]
            password = http.get(f"{base}/roles/neondb_owner/reveal_password", timeout=10).json()[
                "password"
            ]
        uri = f"postgresql://neondb_owner:{quote(password)}@{host}/neondb"
        if openssl:  # the certificate comes from the openssl binary
            assert sql(f"{uri}?{TLS_BOUND}", "SELECT 1") == [(1,)]
        else:  # plain connections, SCRAM without channel binding
            assert sql(f"{uri}?sslmode=disable", "SELECT 1") == [(1,)]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        if info:
            with Emulator(postgres_url, project_id=info["project_id"], endpoint_proxy=False) as emu:
                emu.stop(drop=True)
    assert proc.returncode == 0, err
    hints = [line for line in err.splitlines() if "pytest-neon[emulator]" in line]
    assert len(hints) == (0 if openssl else 1), err


def test_a_moved_endpoints_host_leads_to_its_new_branch(emulator: Emulator, api: NeonHttp) -> None:
    main = emulator.default_branch_id
    feature = api.create_branch(name="host-move")["branch"]["id"]
    assert sql(api.uri(feature), "CREATE TABLE moved_here (x int)") == []
    made = api.post(
        api.project_path("/endpoints"), json={"endpoint": {"branch_id": main, "type": "read_only"}}
    )
    endpoint = made.json()["endpoint"]
    secret = quote(_password(api, main), safe="")
    uri = f"postgresql://neondb_owner:{secret}@{endpoint['host']}/neondb?{TLS_BOUND}"
    assert sql(uri, "SELECT to_regclass('moved_here')::text") == [(None,)]
    moved = api.patch(
        api.project_path(f"/endpoints/{endpoint['id']}"), json={"endpoint": {"branch_id": feature}}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["endpoint"]["host"] == endpoint["host"]  # the same listener
    assert sql(uri, "SELECT to_regclass('moved_here')::text") == [("moved_here",)]
