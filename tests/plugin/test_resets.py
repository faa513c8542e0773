"""Reset only what was written, in the background; force it by marker or setting."""

from __future__ import annotations

import pytest

from tests.support.pytest_runs import clean_neon_env, run_local

MIXED = """
import psycopg
import pytest

def _count(dsn):
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'written_%'"
        ).fetchone()[0]

@pytest.mark.parametrize("n", range(6))
def test_mixed(neon_branch_readwrite, n):
    assert _count(neon_branch_readwrite.connection_string) == 0
    if n % 2 == 0:
        with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
            conn.execute(f"CREATE TABLE written_{n} (x int)")
            conn.execute(f"INSERT INTO written_{n} VALUES (1)")
"""


def test_only_writing_tests_are_reset(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    pytester.makepyfile(test_mixed=MIXED)
    result = run_local(
        pytester,
        postgres_url,
        "-v",
    )
    result.assert_outcomes(passed=6)
    # tests 0, 2, 4 wrote; 1, 3, 5 only read
    result.stdout.fnmatch_lines(["*resets: 3 done / 3 skipped*", "*restore_branch=3*"])


def test_marker_forces_a_reset(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    pytester.makepyfile(
        test_forced="""
        import pytest

        @pytest.mark.neon_reset
        def test_a_forced(neon_branch_readwrite):
            pass

        def test_b_reads(neon_branch_readwrite):
            pass
        """
    )
    result = run_local(pytester, postgres_url, "--strict-markers")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*resets: 1 done / 1 skipped*"])


def test_always_reset_setting(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    pytester.makeini("[pytest]\nneon_always_reset = true\n")
    pytester.makepyfile(
        test_plain="""
        def test_a(neon_branch_readwrite):
            pass

        def test_b(neon_branch_readwrite):
            pass
        """
    )
    result = run_local(pytester, postgres_url)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*resets: 2 done / 0 skipped*"])


def test_the_reset_runs_while_tests_that_need_no_branch_run(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    pytester.makepyfile(
        test_order="""
        import time
        import psycopg
        from pytest_neon.plugin import STATE

        def test_a_writes(neon_branch_readwrite):
            with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
                conn.execute("CREATE TABLE written (x int)")

        def test_b_needs_no_branch(request):
            counters = request.config.stash[STATE].session.counters
            deadline = time.monotonic() + 10
            while counters.resets_done < 1:  # test_a's
                assert time.monotonic() < deadline, "the reset waited for a branch test"
                time.sleep(0.01)

        def test_c_sees_it_undone(neon_branch_readwrite):
            with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
                assert conn.execute("SELECT to_regclass('written')").fetchone() == (None,)
        """
    )
    result = run_local(pytester, postgres_url)
    result.assert_outcomes(passed=3)
