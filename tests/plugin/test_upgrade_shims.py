"""What code written for pytest-neon 3.x meets here: the API key in the ini file, and the
migration hook's ``_neon_test_branch``; both work, with a warning naming the fix."""

from __future__ import annotations

import pytest

from tests.support.pytest_runs import API_KEY, NeonProject


def test_an_api_key_in_the_ini_file_works_with_a_warning(
    neon: NeonProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEON_API_KEY")
    neon.pytester.makeini(f"[pytest]\nneon_api_key = {API_KEY}\n")
    neon.pytester.makepyfile(
        test_k="""
        def test_k(neon_branch_readwrite):
            assert neon_branch_readwrite.branch_id
        """
    )
    result = neon.run("--strict-config")  # a known key: no "unknown config option"
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*api_key=*** (from ini neon_api_key)*",
            "*PytestConfigWarning: pytest-neon: the API key is read from the ini key "
            "neon_api_key*set NEON_API_KEY in the environment*",
        ]
    )
    assert API_KEY not in result.stdout.str() + result.stderr.str()


def test_the_3x_migration_hook_gets_the_migration_branch(neon: NeonProject) -> None:
    neon.pytester.makeconftest(
        """
        import psycopg, pytest

        @pytest.fixture(scope="session")
        def neon_apply_migrations(_neon_test_branch):
            with psycopg.connect(_neon_test_branch.connection_string) as conn:
                conn.execute("CREATE TABLE migrated (x int)")
        """
    )
    neon.pytester.makepyfile(
        test_m="""
        import psycopg

        def test_m(neon_branch_readwrite):
            with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
                assert conn.execute("SELECT to_regclass('migrated')").fetchone()[0]
        """
    )
    result = neon.run("-W", "always::DeprecationWarning")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*DeprecationWarning: _neon_test_branch (pytest-neon 3.x) is deprecated: request "
         "neon_migration_branch in neon_apply_migrations*"]
    )  # fmt: skip
