"""Many runs, one Neon project: CI shards started together on the Neon latency model.

Each run is ``pytest -n 2`` over the same suite (12 readwrite tests, a migration of a
second, the same fingerprint), against one emulated project with Neon's latencies
(request 50 ms, operation 500 ms). Rows: one run alone with a cold cache (the baseline),
one alone with the cache warm, then N runs started together, on a project whose branch
limit holds them all, and on one that holds only two runs at a time (Neon's free plan
holds 10 branches). Per run: wall seconds, seconds waited for other runs, API calls.

``python benchmarks/shards.py`` (``make bench`` runs it after ``loop.py``).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pytest_neon.local.emulator import Emulator
from pytest_neon.local.launcher import start_postgres

API_KEY = "bench-shards-0123456789"

CONFTEST = """
import os, time, psycopg, pytest

@pytest.fixture(scope="session")
def neon_migration_fingerprint():
    return os.environ["FINGERPRINT"]

@pytest.fixture(scope="session")
def neon_apply_migrations(neon_migration_branch):
    time.sleep(1.0)  # a second of migrations
    with psycopg.connect(neon_migration_branch.connection_string) as conn:
        conn.execute("CREATE TABLE items (n int)")
"""

TESTS = """
import psycopg, pytest

@pytest.mark.parametrize("n", range(12))
def test_item(neon_branch_readwrite, n):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        conn.execute("INSERT INTO items VALUES (%s)", (n,))
"""


def _run_at_once(
    emulator: Emulator, folder: Path, count: int, fingerprint: str
) -> list[dict[str, float]]:
    """Start ``count`` runs together; each one's wall s, waited s and API calls."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NEON_", "PYTEST_"))},
        "NEON_API_KEY": API_KEY,
        "FINGERPRINT": fingerprint,
        "CI": "1",
    }
    args = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
        "-n", "2", "--neon-backend=neon", f"--neon-api-host={emulator.api_host}",
        f"--neon-project-id={emulator.project_id}",
    ]  # fmt: skip
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            args, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(count)
    ]
    ended: dict[int, tuple[float, str]] = {}

    def wait(n: int, proc: subprocess.Popen[str]) -> None:
        out, _ = proc.communicate(timeout=900)
        ended[n] = (time.monotonic() - started, out)

    threads = [threading.Thread(target=wait, args=(n, p)) for n, p in enumerate(procs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = []
    for n, proc in enumerate(procs):
        wall, out = ended[n]
        if proc.returncode != 0:
            raise SystemExit(f"a run failed:\n{out}")
        line = next(x for x in out.splitlines() if x.startswith("branches created:"))
        calls = int(line.split("API calls: ")[1].split()[0])
        waited = re.search(r"waited for other runs: ([0-9.]+)s", line)
        rows.append(
            {"wall": wall, "waited": float(waited.group(1)) if waited else 0.0, "calls": calls}
        )
    return rows


def _row(what: str, rows: list[dict[str, float]], base: float) -> str:
    wall = [r["wall"] for r in rows]
    waited = [r["waited"] for r in rows]
    calls = [r["calls"] for r in rows]
    return (
        f"| {what} | {len(rows)} | {statistics.median(wall):.1f} | {max(wall):.1f} "
        f"| {max(wall) / base:.2f}x | {statistics.median(waited):.1f} / {max(waited):.1f} "
        f"| {statistics.median(calls):.0f} / {max(calls):.0f} |"
    )


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=4, help="runs started together")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pn-shards-") as tmp, start_postgres() as pg:
        folder = Path(tmp)
        (folder / "conftest.py").write_text(CONFTEST)
        (folder / "test_items.py").write_text(TESTS)
        lines = []
        with Emulator(pg.url, api_key=API_KEY, request_delay=0.05, operation_delay=0.5) as emulator:
            cold = _run_at_once(emulator, folder, 1, "alone")
            base = cold[0]["wall"]
            lines.append(_row("one run, cold cache (baseline)", cold, base))
            lines.append(
                _row("one run, warm cache", _run_at_once(emulator, folder, 1, "alone"), base)
            )
            together = _run_at_once(emulator, folder, opts.runs, "together")
            lines.append(_row("runs together, room for all", together, base))
            # the default branch, the cache, two runs of 2 workers + a migration branch
            emulator.control_plane.max_branches = 2 + 2 * 3
            tight = _run_at_once(emulator, folder, opts.runs, "tight")
            lines.append(_row("runs together, room for two at a time", tight, base))
        print(
            f"\n### {opts.runs} CI shards on one Neon project (Neon latency model: request "
            "50 ms, operation 500 ms; each run -n 2, 12 tests, 1 s of migrations)\n"
        )
        print(
            "| runs | count | wall s (median) | wall s (last) | last / baseline "
            "| waited for others s (median / max) | API calls (median / max) |"
        )
        print("|---|---|---|---|---|---|---|")
        for line in lines:
            print(line)


if __name__ == "__main__":
    main()
