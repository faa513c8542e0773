"""Leftovers: a killed run's branches expire (a live run's do not), later runs sweep stale
ones (and only those), and a full project fails the run once with what it needs."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from tests.support.pytest_runs import API_KEY, NeonProject, times_reported
from tests.support.reliability import ours, start_pytest, wait_for_file

KILLED = """
import os, pathlib, time

def test_waits_to_be_killed(neon_branch_readwrite):
    pathlib.Path(os.environ["RELIABILITY_MARKER"]).write_text("here")
    time.sleep(60)
"""


def test_a_killed_runs_branches_expire(neon: NeonProject, monkeypatch: pytest.MonkeyPatch) -> None:
    neon.pytester.makepyfile(test_killed=KILLED)
    marker = neon.pytester.path / "arrived"
    monkeypatch.setenv("RELIABILITY_MARKER", str(marker))
    proc = start_pytest(
        neon.pytester.path, *neon.args, "--neon-branch-expiry=5", "--neon-worker-branches=1"
    )
    try:
        wait_for_file(marker, proc)
        left = ours(neon)
        assert len(left) == 1
        assert left[0]["expires_at"]
    finally:
        proc.kill()  # SIGKILL: no cleanup at all
        proc.communicate()
    deadline = time.monotonic() + 15
    while ours(neon):
        assert time.monotonic() < deadline, "the killed run's branch did not expire"
        time.sleep(0.2)


LONG_RUN = """
import time
import psycopg, pytest

@pytest.fixture(scope="session")
def neon_apply_migrations(_neon_migration_branch):
    with psycopg.connect(_neon_migration_branch.connection_string) as conn:
        conn.execute("CREATE TABLE items (id int)")

def test_1_writes(neon_branch_readwrite):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        conn.execute("INSERT INTO items VALUES (1)")

@pytest.mark.parametrize("n", range(4))
def test_2_reads_slowly(neon_branch_readonly, n):
    time.sleep(2)  # no writes, no resets: only the keep-alive saves the branches

def test_3_writes_again(neon_branch_readwrite):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
        conn.execute("INSERT INTO items VALUES (2)")

def test_4_isolated(neon_branch_readwrite):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
"""


def test_a_run_longer_than_the_expiry_keeps_its_branches(neon: NeonProject) -> None:
    neon.pytester.makepyfile(test_long=LONG_RUN)
    result = neon.run("--neon-branch-expiry=6", "-v")  # the slow tests take 8 s
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["*calls:*update_branch=*"])
    assert ours(neon) == []


def _create(
    neon: NeonProject, name: str, annotation: dict[str, str], expires_in: float = 0
) -> None:
    branch: dict[str, object] = {"name": name}
    if expires_in:
        when = datetime.now(UTC) + timedelta(seconds=expires_in + 1)  # whole seconds
        branch["expires_at"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    answer = requests.post(
        f"{neon.emulator.api_host}/projects/{neon.emulator.project_id}/branches",
        json={"branch": branch, "annotation_value": annotation},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text


OURS = {"created-by": "pytest-neon", "pytest-neon-run": "0badc0de"}


def test_stale_branches_are_swept_and_no_others(
    neon: NeonProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Neon deletes expired branches some time after their expiry: hold the emulator's own
    # expiry so that the plugin's sweep is what deletes them here.
    plane = neon.emulator.control_plane
    monkeypatch.setattr(plane, "sweep", lambda: 0)
    monkeypatch.setattr(plane, "sweep_if_due", lambda: None)
    _create(neon, "pytest-neon-0badc0de-gw1", OURS, expires_in=2)  # expired: swept
    _create(neon, "pytest-neon-0badc0de-main", OURS)  # no expiry, old: swept after 1 s
    never = {
        "pytest-neon-0badc0de-gw0": OURS,  # expires in an hour: not stale yet
        "pytest-neon-cache-0123456789abcdef": {"created-by": "pytest-neon"},  # kept on purpose
        "pytest-neon-lookalike": {},  # not annotated: not ours
        "pytest-neon-other-tool": {"created-by": "someone-else"},
        "feature-x": {"created-by": "pytest-neon"},  # not our name
    }
    for name, annotation in never.items():
        _create(neon, name, annotation, expires_in=3600 if name.endswith("gw0") else 0)
    time.sleep(3.5)  # the expiry (2 s, whole seconds: up to 3) has passed
    neon.pytester.makepyfile(test_one="def test_one(neon_branch_readwrite): pass")

    before = neon.branch_names()
    off = neon.run("--neon-sweep-after=0")
    off.assert_outcomes(passed=1)
    assert neon.branch_names() == before

    default = neon.run()  # expired ones only: the other is younger than a day
    default.assert_outcomes(passed=1)
    default.stdout.fnmatch_lines(["*stale branches swept: 1*"])
    assert neon.branch_names() == before - {"pytest-neon-0badc0de-gw1"}

    monkeypatch.setenv("NEON_SWEEP_AFTER", "1")
    aged = neon.run()
    aged.assert_outcomes(passed=1)
    aged.stdout.fnmatch_lines(["*stale branches swept: 1*"])
    assert neon.branch_names() == {"main", *never}


LIMITED = """
def test_1(neon_branch_readwrite): pass
def test_2(neon_branch_readwrite): pass
def test_3(neon_branch_shared): pass
"""

MIGRATION = """
import pytest

@pytest.fixture(scope="session")
def neon_apply_migrations(_neon_migration_branch):
    pass
"""


def test_branch_limit_is_one_error_saying_what_the_run_needs(neon: NeonProject) -> None:
    neon.emulator.control_plane.max_branches = 2  # the default branch and one more
    neon.pytester.makeconftest(MIGRATION)
    neon.pytester.makepyfile(test_limited=LIMITED)
    result = neon.run()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "pytest-neon: could not create the migration branch: Neon's branch limit is "
            "reached (branches limit exceeded: the project already has 2 branches (limit 2)) "
            "creating pytest-neon-*-migrations: this run needs up to 3 branches at once "
            "(1 for workers, 1 for migrations, 1 for modules using neon_branch_shared); "
            "delete branches you no longer need*run fewer xdist workers, or raise the "
            "project's branch limit*",
        ]
    )
    assert times_reported(result, "branch limit is reached") == 1
    assert ours(neon) == []
