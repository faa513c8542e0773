"""--neon-worker-branches: a worker takes turns on several branches, resets run meanwhile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.pytest_runs import WAIT_FOR_BRANCHES, NeonProject, clean_neon_env, run_local

ROTATING = """
import json, os
import psycopg
import pytest

from waiting import wait_for_the_other_branches

LOG = {log!r}

def _tables(dsn):
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'written_%'"
        ).fetchone()[0]

# 0 waits for the second branch to be made (reading only: the WAL its creation writes
# must not count as a write of a readwrite test); then write, write, read, read, write
WRITES = {{1, 2, 5}}

def _log(n, branch):
    with open(LOG, "a") as f:
        record = {{"n": n, "dsn": branch.connection_string, "branch": branch.branch_id}}
        f.write(json.dumps(record) + "\\n")

def test_0_the_other_branches_are_made(neon_branch_readonly, request):
    _log(0, neon_branch_readonly)
    wait_for_the_other_branches(request)

@pytest.mark.parametrize("n", range(1, 6))
def test_turns(neon_branch_readwrite, n, request):
    dsn = neon_branch_readwrite.connection_string
    assert os.environ["DATABASE_URL"] == dsn
    assert _tables(dsn) == 0  # whichever branch it is, it is in the migrated state
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM migrated").fetchone() == (1,)
    if n in WRITES:
        with psycopg.connect(dsn) as conn:
            conn.execute(f"CREATE TABLE written_{{n}} (x int)")
    _log(n, neon_branch_readwrite)
"""


MIGRATION = """
import psycopg, pytest

@pytest.fixture(scope="session")
def neon_apply_migrations(_neon_migration_branch):
    with psycopg.connect(_neon_migration_branch.connection_string) as conn:
        conn.execute("CREATE TABLE migrated (x int); INSERT INTO migrated VALUES (1)")
"""


def _rotate_locally(
    pytester: pytest.Pytester, postgres_url: str, *args: str
) -> tuple[pytest.RunResult, Path]:
    """The rotating suite on the local backend with two branches per worker; all pass."""
    log = pytester.path / "turns.jsonl"
    pytester.makeconftest(MIGRATION)
    pytester.makepyfile(test_turns=ROTATING.format(log=str(log)), waiting=WAIT_FOR_BRANCHES)
    result = run_local(pytester, postgres_url, "--neon-worker-branches=2", *args)
    result.assert_outcomes(passed=6)
    return result, log


def _turns(log: Path) -> list[str]:
    return [json.loads(line)["branch"] for line in log.read_text().splitlines()]


def test_a_writing_test_hands_over_to_another_branch(neon: NeonProject, tmp_path: Path) -> None:
    neon.emulator.configure_faults(operation_delay=0.3)  # resets take a while, as on Neon
    log = tmp_path / "turns.jsonl"
    neon.pytester.makeconftest(MIGRATION)
    neon.pytester.makepyfile(test_turns=ROTATING.format(log=str(log)), waiting=WAIT_FOR_BRANCHES)
    before = neon.branch_names()
    result = neon.run("--neon-worker-branches=2")
    result.assert_outcomes(passed=6)
    branch = _turns(log)
    assert len(set(branch)) == 2
    assert branch[2] != branch[1]  # test 1 wrote: test 2 runs elsewhere while it resets
    # (test 3 takes whichever of the two resets ends first: either branch)
    result.stdout.fnmatch_lines(["*branches created: 3, resets: *"])  # 2 + migrations
    assert neon.branch_names() == before  # both worker branches deleted


def test_a_test_that_wrote_nothing_keeps_its_branch(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the local backend: pg_walinspect tells the branch's own writes apart, so a test
    # that only read is known to have left its branch clean
    clean_neon_env(monkeypatch)
    result, log = _rotate_locally(pytester, postgres_url)
    branch = _turns(log)
    assert branch[1] == branch[0]  # test 0 only read
    assert branch[2] != branch[1]  # the other branch was clean: no wait for the reset
    # test 3 gets whichever of the two resets ends first
    assert branch[4] == branch[3]  # test 3 only read
    assert branch[5] == branch[4]
    # after the writing tests but the last (its branch is deleted, not reset); bringing
    # new branches to the migrated state is no reset
    result.stdout.fnmatch_lines(["*resets: 2 done / 2 skipped*"])


def test_under_xdist_each_worker_has_its_own_branches(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    result, _ = _rotate_locally(pytester, postgres_url, "-n", "2")
    result.stdout.fnmatch_lines(["*branches created: 5*"])  # 2 per worker + migrations


@pytest.mark.parametrize(
    ("limit", "args", "header", "used"),
    [
        # the default branch, and the run's three
        (4, [], "2 branches per worker (auto: the run needs up to 3 of the project's 4 "
         "branches, 1 in use)", 2),
        # one xdist worker: the controller decides for it
        (3, ["-n", "1"], "1 branch per worker (auto: 2 per worker would need 3 branches, "
         "and 1 of the project's 3 are in use; --neon-worker-branches to choose)", 1),
    ],
    ids=["room", "no-room"],
)  # fmt: skip
def test_auto_takes_two_branches_on_neon_when_there_is_room(
    neon: NeonProject, tmp_path: Path, limit: int, args: list[str], header: str, used: int
) -> None:
    log = tmp_path / "turns.jsonl"
    neon.pytester.makeconftest(MIGRATION)
    neon.pytester.makepyfile(test_turns=ROTATING.format(log=str(log)), waiting=WAIT_FOR_BRANCHES)
    neon.emulator.control_plane.max_branches = limit
    result = neon.run(*args)
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines([f"neon: {header}"])
    assert len(set(_turns(log))) == used


def test_auto_is_one_branch_locally(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    log = pytester.path / "turns.jsonl"
    pytester.makeconftest(MIGRATION)
    pytester.makepyfile(test_turns=ROTATING.format(log=str(log)), waiting=WAIT_FOR_BRANCHES)
    result = run_local(pytester, postgres_url, "--neon-worker-branches=auto")
    result.assert_outcomes(passed=6)
    assert len(set(_turns(log))) == 1
    assert "branches per worker" not in result.stdout.str()


def test_a_session_engine_follows_the_test_branch(neon: NeonProject) -> None:
    neon.emulator.configure_faults(operation_delay=0.3)
    neon.pytester.makeconftest('pytest_plugins = ["pytest_neon.contrib.sqlalchemy"]\n')
    neon.pytester.makepyfile(
        waiting=WAIT_FOR_BRANCHES,
        test_engine="""
        import os
        from urllib.parse import urlsplit
        from sqlalchemy import text
        from waiting import wait_for_the_other_branches

        SEEN = set()

        def test_0_waits(neon_branch_readonly, request):
            wait_for_the_other_branches(request)

        def test_uses_it(neon_session_engine):
            for n in range(4):
                pass

        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_writes_through_it(neon_session_engine, n):
            with neon_session_engine.begin() as conn:
                database = conn.execute(text("SELECT current_database()")).scalar_one()
                assert database == urlsplit(os.environ["DATABASE_URL"]).path.lstrip("/")
                assert conn.execute(text("SELECT to_regclass('written')")).scalar() is None
                conn.execute(text("CREATE TABLE written (x int)"))
            SEEN.add(database)

        def test_both_branches_were_used():
            assert len(SEEN) == 2
        """,
    )
    result = neon.run("--neon-worker-branches=2", "-p", "no:randomly")
    result.assert_outcomes(passed=7)


SESSIONS = """
import os
from urllib.parse import urlsplit
import psycopg
from sqlalchemy import text

from waiting import wait_for_the_other_branches

WRITER = []

def test_0_waits_for_the_second_branch(neon_branch_readonly, request):
    wait_for_the_other_branches(request)

def test_1_writes(neon_branch_readwrite):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        conn.execute("CREATE TABLE written (x int)")
    WRITER.append(neon_branch_readwrite.connection_string)

def test_2_session_on_the_test_branch(neon_session):
    database = neon_session.execute(text("SELECT current_database()")).scalar_one()
    assert database == urlsplit(os.environ["DATABASE_URL"]).path.lstrip("/")
    assert neon_session.execute(text("SELECT to_regclass('written')")).scalar_one() is None
    assert os.environ["DATABASE_URL"] != WRITER[0]  # the other, clean branch
"""


def test_neon_session_follows_the_test_branch(neon: NeonProject) -> None:
    neon.emulator.configure_faults(operation_delay=0.3)
    neon.pytester.makeconftest('pytest_plugins = ["pytest_neon.contrib.sqlalchemy"]\n')
    neon.pytester.makepyfile(test_sessions=SESSIONS, waiting=WAIT_FOR_BRANCHES)
    result = neon.run("--neon-worker-branches=2")
    result.assert_outcomes(passed=3)


LOSING_ONE = """
import os
import psycopg, pytest, requests

def _delete(request, branch_id):
    host = request.config.getoption("neon_api_host")
    project = request.config.getoption("neon_project_id")
    response = requests.delete(
        f"{host}/projects/{project}/branches/{branch_id}",
        headers={"Authorization": "Bearer " + os.environ["NEON_API_KEY"]},
        timeout=30,
    )
    assert response.status_code == 200

from waiting import wait_for_the_other_branches

LOST = []

def test_0_waits_for_the_second_branch(neon_branch_readonly, request):
    wait_for_the_other_branches(request)

def test_1_writes_then_its_branch_is_deleted(neon_branch_readwrite, request):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        conn.execute("CREATE TABLE written (x int)")
    _delete(request, neon_branch_readwrite.branch_id)  # its reset will fail
    LOST.append(neon_branch_readwrite.branch_id)

@pytest.mark.parametrize("n", range(4))
def test_2_the_other_branch_carries_on(neon_branch_readwrite, n):
    assert neon_branch_readwrite.branch_id != LOST[0]
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        assert conn.execute("SELECT to_regclass('written')").fetchone() == (None,)
        conn.execute("CREATE TABLE written (x int)")
"""


def test_a_branch_whose_reset_fails_is_set_aside(neon: NeonProject) -> None:
    neon.emulator.configure_faults(operation_delay=0.3)
    neon.pytester.makepyfile(test_losing=LOSING_ONE, waiting=WAIT_FOR_BRANCHES)
    before = neon.branch_names()
    result = neon.run("--neon-worker-branches=2", "-p", "no:randomly")
    result.assert_outcomes(passed=6)  # no test pays for the lost branch
    assert neon.branch_names() == before
