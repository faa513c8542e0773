"""Faults of the API and the database: random 503/423 and 429, hung or slow calls, a
persistent outage, operations that end ``failed``, connections cut by a reset."""

from __future__ import annotations

import re
import time

import pytest

from pytest_neon.local.emulator import Emulator
from pytest_neon.local.emulator.cli import build_parser
from tests.support.emulator_http import NeonHttp, load_spec, sql
from tests.support.pytest_runs import NeonProject
from tests.support.reliability import (
    FLIP,
    HangingProxy,
    Switchboard,
    ours,
    run_via,
)

MIGRATION = """
import psycopg, pytest

@pytest.fixture(scope="session")
def neon_apply_migrations(_neon_migration_branch):
    with psycopg.connect(_neon_migration_branch.connection_string) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
"""

ISOLATED = """
import psycopg, pytest

@pytest.mark.parametrize("n", range({count}))
def test_n(neon_branch_readwrite, n):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
        conn.execute("INSERT INTO items VALUES (%s)", (n,))
"""


#: these runs count branches and resets exactly: one branch per worker
ONE_BRANCH = "--neon-worker-branches=1"


def _retried(output: str) -> int:
    found = re.search(r"API calls: \d+ \((\d+) retried\)", output)
    assert found, output
    return int(found.group(1))


def test_sixty_isolated_tests_on_four_workers_under_503_423_and_429(neon: NeonProject) -> None:
    neon.emulator.configure_faults(fail_rate=0.2, rate_limit=5, seed=8)
    neon.pytester.makeconftest(MIGRATION)
    neon.pytester.makepyfile(test_many=ISOLATED.format(count=60))
    result = neon.run("-n", "4", ONE_BRANCH)
    neon.emulator.configure_faults(fail_rate=0.0, rate_limit=None)
    result.assert_outcomes(passed=60)
    assert _retried(result.stdout.str()) > 0
    assert ours(neon) == []


def test_hung_calls_time_out_and_are_retried(
    neon: NeonProject, proxy: HangingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every third request is left unanswered: each kind of call meets a hung API.
    monkeypatch.setenv("NEON_API_TIMEOUT", "1")
    proxy.hang_every = 3
    neon.pytester.makeconftest(MIGRATION)
    neon.pytester.makepyfile(test_few=ISOLATED.format(count=4))
    result = run_via(neon, proxy.api_host, ONE_BRANCH)
    result.assert_outcomes(passed=4)
    # reads, creates, resets and deletes all met a hung API, and were retried
    assert {line.split()[0] for line in proxy.held} == {"GET", "POST", "DELETE"}
    assert _retried(result.stdout.str()) >= 3
    proxy.hang_every = 0
    assert ours(neon) == []


OUTAGE = """
import psycopg
from conftest import flip

def test_00_writes_then_the_api_goes_down(neon_branch_readwrite):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        conn.execute("CREATE TABLE t (x int)")
    flip("outage")

def test_01(neon_branch_readwrite): pass
def test_02(neon_branch_readwrite): pass
def test_03(neon_branch_readwrite): pass
def test_04(): pass
"""


# the same, the later tests checking the branch out through the SQLAlchemy integration
OUTAGE_SQLALCHEMY = OUTAGE.replace("(neon_branch_readwrite): pass", "(neon_session): pass")

OUTAGE_DJANGO = """
import pytest
from conftest import flip
from shelf.models import Shelf

@pytest.mark.django_db(transaction=True)
def test_00_commits_then_the_api_goes_down():
    Shelf.objects.create(name="written")
    flip("outage")

def test_01(transactional_db): pass  # (pytest-django runs these after the plain db tests)
def test_02(transactional_db): pass
def test_03(): pass
"""


@pytest.mark.parametrize("integration", ["sqlalchemy", "django"])
def test_an_outage_stops_the_run_from_an_integration_too(
    neon: NeonProject,
    proxy: HangingProxy,
    switchboard: Switchboard,
    monkeypatch: pytest.MonkeyPatch,
    integration: str,
) -> None:
    monkeypatch.setenv("NEON_API_TIMEOUT", "1")
    switchboard.on("outage", lambda: setattr(proxy, "hang_all", True))
    enable = f'pytest_plugins = ["pytest_neon.contrib.{integration}"]\n'
    if integration == "django":
        from tests.contrib.test_django import _project

        monkeypatch.setenv("MIGRATION_LOG", str(neon.pytester.path / "migrations.log"))
        _project(neon, conftest=enable + FLIP)
        neon.pytester.makepyfile(test_outage=OUTAGE_DJANGO)
    else:
        neon.pytester.makeconftest(enable + FLIP)
        neon.pytester.makepyfile(test_outage=OUTAGE_SQLALCHEMY)
    result = run_via(neon, proxy.api_host, ONE_BRANCH)
    proxy.hang_all = False
    result.assert_outcomes(passed=1, errors=1)  # the run stopped after test_01
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_01*",
            "pytest-neon: could not reset branch: Neon API unreachable at http://127.0.0.1:*",
            "*! pytest-neon: stopping: the Neon API is unavailable !*",
        ]
    )


SESSION_TEARDOWN_FAILS = """
import pytest

@pytest.fixture(scope="session", autouse=True)
def session_resource():
    yield
    raise RuntimeError("session teardown failed")
"""


def test_a_stopped_run_tears_down_session_fixtures_as_usual(
    neon: NeonProject,
    proxy: HangingProxy,
    switchboard: Switchboard,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEON_API_TIMEOUT", "1")
    switchboard.on("outage", lambda: setattr(proxy, "hang_all", True))
    neon.pytester.makeconftest(FLIP + SESSION_TEARDOWN_FAILS)
    neon.pytester.makepyfile(test_outage=OUTAGE)
    result = run_via(neon, proxy.api_host, ONE_BRANCH)
    proxy.hang_all = False
    # test_01's setup, then the session fixture's teardown, reported with test_01
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_01*",
            "*RuntimeError: session teardown failed",
            "*! pytest-neon: stopping: the Neon API is unavailable !*",
        ]
    )
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize("kind", ["hung", "slow"])
def test_persistent_outage_fails_the_run_once_and_quickly(
    neon: NeonProject,
    proxy: HangingProxy,
    switchboard: Switchboard,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    monkeypatch.setenv("NEON_API_TIMEOUT", "1")
    if kind == "hung":
        switchboard.on("outage", lambda: setattr(proxy, "hang_all", True))
    else:
        switchboard.on("outage", lambda: neon.emulator.configure_faults(request_delay=4))
    neon.pytester.makeconftest(FLIP)
    neon.pytester.makepyfile(test_outage=OUTAGE)
    started = time.monotonic()
    result = run_via(neon, proxy.api_host, ONE_BRANCH)
    elapsed = time.monotonic() - started
    proxy.hang_all = False
    neon.emulator.configure_faults(request_delay=0.0)
    result.assert_outcomes(passed=1, errors=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "pytest-neon: WARNING: could not delete branch br-*: Neon API unreachable*",
            "pytest-neon: branches left behind expire 600 s after*",
            "*ERROR at setup of test_01*",
            "pytest-neon: could not reset branch: Neon API unreachable at http://127.0.0.1:*"
            "/restore failed with ReadTimeout * times in *s; check the network*NEON_API_TIMEOUT)",
            "*! pytest-neon: stopping: the Neon API is unavailable !*",
        ]
    )
    assert elapsed < 20
    if kind == "hung":  # the slow API answers the delete after all
        left = ours(neon)
        assert len(left) == 1
        assert left[0]["expires_at"]


OPERATIONS = {
    "test_a": """
        import psycopg
        from conftest import flip

        def test_1_writes_then_operations_fail(neon_branch_readwrite):
            with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
                conn.execute("CREATE TABLE dirty (x int)")
            flip("fail")

        def test_2_needs_the_reset(neon_branch_readwrite):
            pass

        def test_3_needs_no_branch():
            pass
        """,
    "test_b": """
        from conftest import flip

        def test_1_needs_a_module_branch(neon_branch_shared):
            pass

        def test_2_needs_no_branch():
            flip("succeed")
        """,
    "test_c": """
        import psycopg

        def test_reset_again_and_clean(neon_branch_readwrite):
            with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
                assert conn.execute("SELECT to_regclass('dirty') IS NULL").fetchone() == (True,)
        """,
}


def test_failed_operations_fail_the_test_that_needed_them(
    neon: NeonProject, switchboard: Switchboard
) -> None:
    switchboard.on("fail", lambda: neon.emulator.configure_faults(fail_operations=1.0))
    switchboard.on("succeed", lambda: neon.emulator.configure_faults(fail_operations=0.0))
    neon.pytester.makeconftest(FLIP)
    neon.pytester.makepyfile(**OPERATIONS)
    result = neon.run(ONE_BRANCH)
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_2_needs_the_reset*",
            "pytest-neon: could not reset branch: Neon operation create_timeline * on branch "
            "br-* ended failed: operation failed (fault injected by the emulator): nothing "
            "was done",
            "*ERROR at setup of test_1_needs_a_module_branch*",
            "pytest-neon: could not create the module branch: Neon operation create_branch * "
            "on branch br-* ended failed: operation failed*",
        ]
    )
    assert ours(neon) == []


DROPPED = """
import os
import psycopg, psycopg2, pytest, requests, sqlalchemy

def _restore_from_outside(branch):
    # What Neon does on restore: the branch's open connections are cut.
    answer = requests.post(
        f"{os.environ['NEON_API_HOST']}/projects/{branch.project_id}/branches/"
        f"{branch.branch_id}/restore",
        json={"source_branch_id": branch.parent_id},
        headers={"Authorization": f"Bearer {os.environ['NEON_API_KEY']}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text

def test_a_connection_cut_mid_test(neon_connection_psycopg, neon_branch_readwrite):
    conn = neon_connection_psycopg
    conn.execute("CREATE TABLE t (x int)")
    conn.commit()
    _restore_from_outside(neon_branch_readwrite)
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")

def test_b_fixtures_reconnect(neon_connection_psycopg, neon_connection, neon_engine):
    query = "SELECT to_regclass('t') IS NULL"
    assert neon_connection_psycopg.execute(query).fetchone() == (True,)
    cur = neon_connection.cursor()
    cur.execute(query)
    assert cur.fetchone() == (True,)
    with neon_engine.connect() as conn:
        assert conn.execute(sqlalchemy.text(query)).scalar() is True

def test_c_and_again(neon_connection_psycopg):
    neon_connection_psycopg.execute("CREATE TABLE t (x int)")
"""


def test_connections_cut_by_a_reset_are_reopened_by_the_next_fixtures(
    neon: NeonProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEON_API_HOST", neon.emulator.api_host)
    neon.pytester.makepyfile(test_dropped=DROPPED)
    result = neon.run(ONE_BRANCH)
    result.assert_outcomes(passed=3)


def test_emulator_fail_operations_over_http(postgres_url: str) -> None:
    """``fail_operations``: the call answers as usual, its operation ends ``failed`` with an
    error after the operation delay, and nothing was done (responses checked against Neon's
    OpenAPI description when it is there)."""
    assert build_parser().parse_args(["--fail-operations", "0.5"]).fail_operations == 0.5
    with (
        Emulator(postgres_url, api_key="faults-key-1234", operation_delay=0.2) as emulator,
        NeonHttp(emulator, load_spec()) as api,
    ):
        main = emulator.default_branch_id
        kept = api.create_branch(name="kept")["branch"]["id"]
        sql(api.uri(kept), "CREATE TABLE t (x int)")
        time.sleep(0.25)  # its own operations finish
        emulator.configure_faults(fail_operations=1.0)

        created = api.create_branch(name="never")
        restored = api.restore(kept, main)
        for body, action in ((created, "create_branch"), (restored, "create_timeline")):
            last = body["operations"][-1]
            assert last["action"] == action
            assert last["status"] in ("running", "scheduling")
            time.sleep(0.25)
            answer = api.get(api.project_path(f"/operations/{last['id']}")).json()["operation"]
            assert answer["status"] == "failed"
            assert "nothing was done" in answer["error"]
        assert api.get(api.project_path(f"/branches/{created['branch']['id']}")).status_code == 404
        assert "never" not in api.branch_names()
        assert sql(api.uri(kept), "SELECT to_regclass('t') IS NOT NULL") == [(True,)]
        emulator.stop(drop=True)
