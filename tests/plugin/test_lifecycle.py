"""Branch lifecycle: names, cleanup after failures and interruptions, xdist at scale."""

from __future__ import annotations

import pytest

from tests.support.pytest_runs import NeonProject


def test_cleanup_after_failures_errors_and_maxfail(neon: NeonProject) -> None:
    neon.pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.fixture
        def broken(neon_branch_readwrite):
            raise RuntimeError("fixture error")

        def test_fails(neon_branch_readwrite):
            assert False

        def test_errors(broken):
            pass

        def test_shared(neon_branch_shared):
            assert False
        """
    )
    before = neon.branch_names()
    result = neon.run()
    result.assert_outcomes(failed=2, errors=1)
    assert neon.branch_names() == before
    result = neon.run("-x")
    result.assert_outcomes(failed=1)
    assert neon.branch_names() == before


def test_cleanup_after_keyboard_interrupt(neon: NeonProject) -> None:
    neon.pytester.makepyfile(
        test_int="""
        def test_a(neon_branch_readwrite):
            raise KeyboardInterrupt

        def test_b(neon_branch_readwrite):
            pass
        """
    )
    before = neon.branch_names()
    result = neon.run(subprocess=True)  # a KeyboardInterrupt in this process would stop the suite
    assert result.ret == 2
    assert neon.branch_names() == before


def test_branch_names_carry_prefix_run_id_and_worker(neon: NeonProject) -> None:
    neon.pytester.makepyfile(
        test_names="""
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_n(neon_branch_readwrite, n):
            print("NAME-CHECK", neon_branch_readwrite.branch_id)
        """
    )
    neon.pytester.makeini("[pytest]\nneon_keep_branches = true\n")
    result = neon.run("-n", "2", "--neon-worker-branches=1")
    result.assert_outcomes(passed=4)
    mine = sorted(n for n in neon.branch_names() if n.startswith("pytest-neon-"))
    assert len(mine) == 2
    run_ids = {n.split("-")[2] for n in mine}
    assert len(run_ids) == 1
    assert [n.rsplit("-", 1)[1] for n in mine] == ["gw0", "gw1"]
    annotated = [b for b in neon.branches() if str(b["name"]).startswith("pytest-neon-")]
    assert len(annotated) == 2


def test_sixty_tests_on_four_workers_are_isolated(neon: NeonProject) -> None:
    neon.pytester.makeconftest(
        """
        import psycopg, pytest

        @pytest.fixture(scope="session")
        def neon_apply_migrations(_neon_migration_branch):
            with psycopg.connect(_neon_migration_branch.connection_string) as conn:
                conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
        """
    )
    neon.pytester.makepyfile(
        test_many="""
        import psycopg, pytest

        @pytest.mark.parametrize("n", range(60))
        def test_n(neon_branch_readwrite, n):
            with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
                assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
                conn.execute("INSERT INTO items VALUES (%s)", (n,))
        """
    )
    before = neon.branch_names()
    result = neon.run("-n", "4")
    result.assert_outcomes(passed=60)
    assert neon.branch_names() == before


def test_a_run_that_stops_before_configure_leaves_no_branch(neon: NeonProject) -> None:
    neon.pytester.makepyfile(test_x="def test_x(neon_branch_readwrite): pass")
    before = neon.branch_names()
    result = neon.run("--no-such-flag")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert neon.branch_names() == before
    neon.pytester.makeconftest("import module_that_does_not_exist")
    result = neon.run()
    assert result.ret != 0
    assert neon.branch_names() == before


def test_the_summary_counts_the_cleanup_calls(neon: NeonProject) -> None:
    neon.pytester.makepyfile(
        test_two="""
        def test_a(neon_branch_readwrite):
            pass

        def test_b(neon_branch_readwrite):
            pass
        """
    )
    result = neon.run("-n", "2", "-v", "--neon-worker-branches=1")
    result.assert_outcomes(passed=2)
    # the controller makes both workers' branches and a migration branch, all or none;
    # each worker deletes its own, the one that ran the (no) migrations the spare one,
    # and the controller lists what the run left
    result.stdout.fnmatch_lines(["*branches created: 3,*", "  calls: *delete_branch=3*"])
    calls = next(line for line in result.stdout.lines if line.startswith("  calls: "))
    listed = int(calls.split("list_branches=")[1].split(",")[0])
    # the controller lists once at the start (parent and sweep; it hands the parent over to
    # the workers, which look up nothing) and once at the end (what the run left)
    assert listed == 2


BRANCH_STATES = """
import os

import requests


def _states(request):
    host = request.config.getoption("neon_api_host")
    project = request.config.getoption("neon_project_id")
    answer = requests.get(
        f"{host}/projects/{project}/branches",
        headers={"Authorization": "Bearer " + os.environ["NEON_API_KEY"]},
        timeout=30,
    )
    return [
        b["current_state"]
        for b in answer.json()["branches"]
        if b["name"].startswith("pytest-neon-")
    ]
"""


def test_a_run_waits_for_the_new_branch_only_when_a_test_needs_it(neon: NeonProject) -> None:
    # Neon answers the create call with the endpoint's host at once; the operations that
    # make the branch run for a while after it
    neon.emulator.configure_faults(operation_delay=2.0)
    neon.pytester.makepyfile(
        branch_states=BRANCH_STATES,
        test_plain="""
        import os

        from branch_states import _states

        def test_no_database(request):
            assert os.environ["DATABASE_URL"].startswith("postgresql://")
            assert _states(request) == ["init"]  # the run did not wait for it
        """,
    )
    before = neon.branch_names()
    result = neon.run("-v")
    result.assert_outcomes(passed=1)
    assert "wait for new branch" not in result.stdout.str()
    assert neon.branch_names() == before  # deleted once it was made

    neon.pytester.makepyfile(
        test_plain="""
        import psycopg

        from branch_states import _states

        def test_reads(neon_branch_readonly, request):
            assert _states(request) == ["ready"]
            with psycopg.connect(neon_branch_readonly.connection_string) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        """
    )
    result = neon.run("-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*wait for new branch: *s"])
    assert neon.branch_names() == before
