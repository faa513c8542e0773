"""What the emulator's endpoint proxy costs: queries and connections through an endpoint's
host (TLS, SCRAM-SHA-256-PLUS, one relay) against the branch's direct ``connection_uri``.

Rows: ``SELECT 1`` one after another on one connection (µs per query), and a new
connection (ms each), each the median of several rounds; the ratio is against direct.
Also what starting an emulator costs with the proxy and without (the plugin's own
emulator goes without: it connects by ``connection_uri``).

``python benchmarks/proxy.py [--postgres-url URL] [--queries 1000]`` (default URL:
``PYTEST_NEON_TEST_POSTGRES_URL``, else a throwaway cluster).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import psycopg
import requests

from pytest_neon.local.emulator import Emulator
from pytest_neon.local.launcher import start_postgres


def _queries(uri: str, count: int, rounds: int) -> float:
    """Median µs per ``SELECT 1`` over ``rounds`` rounds of ``count``."""
    times = []
    with psycopg.connect(uri, autocommit=True) as conn:
        for _ in range(100):
            conn.execute("SELECT 1")
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(count):
                conn.execute("SELECT 1")
            times.append((time.perf_counter() - start) / count * 1e6)
    return statistics.median(times)


def _connects(uri: str, count: int) -> float:
    """Median ms per new connection (and its first query)."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("SELECT 1")
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _start_ms(url: str, proxy: bool, count: int = 5) -> float:
    """Median ms to start an emulator on an existing project (stop not counted)."""
    with Emulator(url, endpoint_proxy=False) as first:
        project = first.project_id
    times = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            emu = Emulator(url, project_id=project, endpoint_proxy=proxy).start()
            if proxy:  # the listener of the default branch's endpoint opens on first use
                emu.control_plane.endpoints.project_endpoints()
            times.append((time.perf_counter() - start) * 1e3)
            emu.stop()
    finally:
        Emulator(url, project_id=project).start().stop(drop=True)
    return statistics.median(times)


def _table(rows: list[tuple[str, float, float, str]]) -> None:
    print(f"{'':<44}{'direct':>10}{'endpoint host':>15}{'ratio':>8}")
    for name, direct, proxied, unit in rows:
        print(f"{name:<44}{direct:>10.1f}{proxied:>15.1f}{proxied / direct:>7.2f}x  {unit}")


def _serve(url: str, ready: Path) -> subprocess.Popen[bytes]:
    """The standalone emulator (``pytest-neon-emulator``) in a process of its own, as a
    client of the emulator has it: the proxy does not share the client's GIL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest_neon.local.emulator",
            "--postgres-url",
            url,
            "--ready-file",
            str(ready),
            "--log-level",
            "WARNING",
        ],
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the emulator did not start")
        time.sleep(0.05)
    return proc


def _strings(api_host: str, project: str, branch: str) -> tuple[str, str, str]:
    """The branch's direct ``connection_uri``, its endpoint's host, the role's password."""
    base = f"{api_host}/projects/{project}"
    with requests.Session() as http:
        direct = http.get(
            f"{base}/connection_uri",
            params={"branch_id": branch, "database_name": "neondb", "role_name": "neondb_owner"},
            timeout=30,
        ).json()["uri"]
        host = http.get(f"{base}/branches/{branch}/endpoints", timeout=30).json()["endpoints"][0][
            "host"
        ]
        password = http.get(
            f"{base}/branches/{branch}/roles/neondb_owner/reveal_password", timeout=30
        ).json()["password"]
    return direct, host, password


def run(url: str, queries: int, rounds: int) -> None:
    """Measure and print the table."""
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready.json"
        proc = _serve(url, ready)
        try:
            info = json.loads(ready.read_text())
            direct, host, password = _strings(
                info["api_host"], info["project_id"], info["default_branch_id"]
            )
            proxied = f"postgresql://neondb_owner:{quote(password, safe='')}@{host}/neondb"
            bound = proxied + "?sslmode=require&channel_binding=require"
            measure: list[tuple[str, Callable[[str], float], str]] = [
                (
                    f"SELECT 1 x {queries} (median of {rounds})",
                    lambda u: _queries(u, queries, rounds),
                    "µs/query",
                ),
                ("connect + SELECT 1 (median of 30)", lambda u: _connects(u, 30), "ms/connection"),
            ]
            rows = [(name, fn(direct), fn(bound), unit) for name, fn, unit in measure]
            with psycopg.connect(bound) as conn:
                tls = conn.info.pgconn.ssl_in_use
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            with Emulator(url, project_id=info["project_id"], endpoint_proxy=False) as emu:
                emu.stop(drop=True)
    print(
        f"endpoint host: TLS {'on' if tls else 'off'}, channel_binding=require;"
        " direct: connection_uri (the server itself, no TLS); the emulator in its own process"
    )
    _table(rows)
    print(
        f"emulator start: {_start_ms(url, False):.1f} ms without the proxy,"
        f" {_start_ms(url, True):.1f} ms with it (the plugin's emulator goes without)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres-url", default=os.environ.get("PYTEST_NEON_TEST_POSTGRES_URL"))
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    if opts.postgres_url:
        run(opts.postgres_url, opts.queries, opts.rounds)
        return
    server = start_postgres()
    try:
        run(server.url, opts.queries, opts.rounds)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
