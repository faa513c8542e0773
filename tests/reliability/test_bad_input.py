"""Bad input: one clear line that names the fix, and no branch left behind.

Covered elsewhere and not repeated here: a refused API key, ``expires`` not an integer,
negative or beyond 30 days, an unknown backend and a malformed env var name
(tests/plugin/test_settings.py); ``neon_apply_migrations`` raising
(tests/plugin/test_migrations.py); readwrite with shared in one test and a write on the
readonly fixture (tests/plugin/test_fixtures.py).
"""

from __future__ import annotations

import pytest

from tests.support.pytest_runs import NeonProject
from tests.support.reliability import ours


def _one_error_line(result: pytest.RunResult) -> str:
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1, result.stderr.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    return errors[0]


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_unknown_parent_branch(neon: NeonProject, xdist: list[str]) -> None:
    neon.pytester.makepyfile(test_x="def test_x(neon_branch_readwrite): pass")
    result = neon.run("--neon-parent-branch=br-no-such-branch-1", *xdist)
    line = _one_error_line(result)
    assert line == (
        f"ERROR: parent branch br-no-such-branch-1 not found in project "
        f"{neon.emulator.project_id}: fix --neon-parent-branch"
    )
    assert ours(neon) == []


def test_unknown_project(neon: NeonProject) -> None:
    neon.pytester.makepyfile(test_x="def test_x(neon_branch_readwrite): pass")
    args = [a for a in neon.args if not a.startswith("--neon-project-id=")]
    result = neon.pytester.runpytest_subprocess(*args, "--neon-project-id=no-such-project-1")
    line = _one_error_line(result)
    assert line == (
        "ERROR: Neon project no-such-project-1 not found (404) with the API key from "
        "env NEON_API_KEY: fix --neon-project-id"
    )


@pytest.mark.parametrize(
    ("arg", "what", "fix"),
    [
        ("--neon-database=no_such_db", "database 'no_such_db'", "--neon-database"),
        ("--neon-role=no_such_role", "role 'no_such_role'", "--neon-role"),
    ],
    ids=["database", "role"],
)
def test_database_or_role_missing_on_the_branch(
    neon: NeonProject, arg: str, what: str, fix: str
) -> None:
    neon.pytester.makepyfile(test_x="def test_x(neon_branch_readwrite): pass")
    result = neon.run(arg)
    line = _one_error_line(result)
    assert line.startswith(f"ERROR: {what} does not exist on branch br-")
    assert line.endswith(f"not found): fix {fix}")
    assert ours(neon) == []  # the branch made before the check was deleted


@pytest.mark.parametrize("source", ["cli", "env"])
def test_empty_env_var_name(
    neon: NeonProject, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    neon.pytester.makepyfile(test_x="def test_x(neon_branch_readwrite): pass")
    if source == "env":
        monkeypatch.setenv("NEON_ENV_VAR", "")
    result = neon.run(*(["--neon-env-var="] if source == "cli" else []))
    where = "--neon-env-var" if source == "cli" else "NEON_ENV_VAR"
    line = _one_error_line(result)
    assert line == (
        f"ERROR: {where} must be an environment variable name (letters, digits and _, "
        "not starting with a digit), got ''"
    )


DELETED = """
import os
import psycopg, requests

def test_1_branch_deleted_from_outside(neon_branch_readwrite):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        conn.execute("CREATE TABLE t (x int)")
    answer = requests.delete(
        f"{os.environ['NEON_API_HOST']}/projects/{neon_branch_readwrite.project_id}"
        f"/branches/{neon_branch_readwrite.branch_id}",
        headers={"Authorization": f"Bearer {os.environ['NEON_API_KEY']}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text

def test_2_needs_the_branch(neon_branch_readwrite): pass
def test_3_needs_it_too(neon_branch_readwrite): pass
def test_4_needs_nothing(): pass
"""


def test_branch_deleted_from_outside_stops_the_run_with_one_error(
    neon: NeonProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEON_API_HOST", neon.emulator.api_host)
    neon.pytester.makepyfile(test_deleted=DELETED)
    result = neon.run("--neon-worker-branches=1")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_2_needs_the_branch*",
            "pytest-neon: could not reset branch: branch br-* (pytest-neon-*-main) or the "
            "branch it resets from (br-*) no longer exists (branch not found): it was deleted "
            "outside this run, or it expired (raise --neon-branch-expiry); leave "
            "pytest-neon-* branches alone while a run uses them, and rerun",
            "*! pytest-neon: stopping: a branch this run uses is gone !*",
        ]
    )
    assert "WARNING" not in result.stdout.str()  # nothing left to delete is not a problem
    assert ours(neon) == []
