"""Many runs, one Neon project (CI shards, laptops), simulated: several xdist runs at once
against one emulated project whose branch limit does not hold them all, with a rate limit,
slow operations and injected faults, all with the same migration fingerprint."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.pytest_runs import API_KEY, NeonProject
from tests.support.reliability import default_sigint

RUNS = 4  # at once, each with -n 2
WAIT = 120  # --neon-wait-timeout: the bound on waiting for the other runs
# the default branch, the cache, and room for two runs (two workers and a migration
# branch each) at a time: the other two wait
MAX_BRANCHES = 8

CONFTEST = """
import os, time, psycopg, pytest

@pytest.fixture(scope="session")
def neon_migration_fingerprint():
    return "shards-v1"

@pytest.fixture(scope="session")
def neon_apply_migrations(neon_migration_branch):
    with open(os.environ["MIGRATION_LOG"], "a") as log:
        log.write(os.environ["SHARD"] + "\\n")
    time.sleep(1.0)  # the other runs look for the cache meanwhile
    with psycopg.connect(neon_migration_branch.connection_string) as conn:
        conn.execute("CREATE TABLE items (shard text, n int)")
        conn.execute("INSERT INTO items VALUES ('migrated', 0)")
"""

TESTS = """
import os, psycopg, pytest

@pytest.mark.parametrize("n", range(6))
def test_isolated(neon_branch_readwrite, n):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        # the migrated state, untouched by any other test of any run
        assert conn.execute("SELECT shard FROM items").fetchall() == [("migrated",)]
        conn.execute("INSERT INTO items VALUES (%s, %s)", (os.environ["SHARD"], n))
"""


def _start(neon: NeonProject, shard: int, log: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "SHARD": str(shard), "MIGRATION_LOG": str(log), "NEON_API_KEY": API_KEY}
    return subprocess.Popen(
        [
            sys.executable, "-m", "pytest", *neon.args, "-n", "2", "-v",
            f"--neon-wait-timeout={WAIT}",
        ],
        cwd=neon.pytester.path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,
    )  # fmt: skip


def _phase(out: str, name: str) -> float:
    found = re.search(rf"^  {name}: ([0-9.]+)s$", out, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_runs_sharing_a_project_migrate_once_and_stay_isolated(
    neon: NeonProject, tmp_path: Path
) -> None:
    neon.emulator.control_plane.max_branches = MAX_BRANCHES
    neon.emulator.configure_faults(operation_delay=0.2, rate_limit=40, fail_rate=0.03, seed=7)
    neon.pytester.makeconftest(CONFTEST)
    neon.pytester.makepyfile(test_items=TESTS)
    log = tmp_path / "migrations.log"
    log.touch()
    names_seen: list[list[str]] = []
    done = threading.Event()

    def watch() -> None:  # how many branches the project holds, all along
        while not done.is_set():
            names_seen.append(sorted(str(b["name"]) for b in neon.branches()))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    procs = [_start(neon, shard, log) for shard in range(RUNS)]
    try:
        outs = [proc.communicate(timeout=WAIT * 3)[0] for proc in procs]
    finally:
        done.set()
        watcher.join()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    wall = time.monotonic() - started
    for proc, out in zip(procs, outs, strict=True):
        assert proc.returncode == 0, out
        assert "6 passed" in out, out
        for phase in ("wait for branches", "wait for migrations"):
            assert _phase(out, phase) <= WAIT, out
    assert len(log.read_text().split()) == 1  # one migration for all the runs
    hits = sum("migration cache: hit" in out for out in outs)
    assert hits == RUNS - 1
    assert max(len(names) for names in names_seen) <= MAX_BRANCHES
    assert any(
        "waited for other runs" in out for out in outs
    )  # the limit did not hold them all at once
    left = sorted(str(b["name"]) for b in neon.branches())
    assert left[0] == "main"
    assert [n for n in left if n != "main"] == [
        n for n in left if n.startswith("pytest-neon-cache-") and not n.endswith("-building")
    ]
    assert len(left) == 2  # the default branch and the one cache: no ephemeral branch
    assert wall < WAIT * 3
