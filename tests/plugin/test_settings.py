"""Every setting from CLI, env and ini, precedence, honoured false/0, and bad values."""

from __future__ import annotations

import pytest

from tests.support.pytest_runs import API_KEY, NeonProject

SHOW_BRANCH = """
import os

def test_show(neon_branch_readwrite):
    print("ENVVAR", os.environ.get("{var}") == neon_branch_readwrite.connection_string)
"""


def test_header_names_backend_project_and_sources(neon: NeonProject) -> None:
    neon.pytester.makepyfile(test_x="def test_x(): pass")
    result = neon.run("--neon-database=neondb")
    result.stdout.fnmatch_lines(
        [
            "neon: backend neon (--neon-backend is neon)",
            f"neon: project {neon.emulator.project_id}, parent branch the project's default*",
            "neon: settings: api_key=*** (from env NEON_API_KEY)*database='neondb' (from "
            "--neon-database)*",
        ]
    )
    assert API_KEY not in result.stdout.str()


def test_cli_beats_env_beats_ini(neon: NeonProject, monkeypatch: pytest.MonkeyPatch) -> None:
    neon.pytester.makeini("[pytest]\nneon_env_var = FROM_INI\n")
    monkeypatch.setenv("NEON_ENV_VAR", "FROM_ENV")
    neon.pytester.makepyfile(test_env=SHOW_BRANCH.format(var="FROM_ENV"))
    neon.run("-s").stdout.fnmatch_lines(["*ENVVAR True"])
    neon.pytester.makepyfile(test_env=SHOW_BRANCH.format(var="FROM_CLI"))
    neon.run("-s", "--neon-env-var=FROM_CLI").stdout.fnmatch_lines(["*ENVVAR True"])


def test_keep_branches_from_ini_keeps_and_says_where(neon: NeonProject) -> None:
    neon.pytester.makeini("[pytest]\nneon_keep_branches = true\n")
    neon.pytester.makepyfile(test_k="def test_k(neon_branch_readwrite): pass")
    before = neon.branch_names()
    result = neon.run("--neon-worker-branches=1")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*kept branches in project*pytest-neon-*-main (br-*"])
    kept = neon.branch_names() - before
    assert len(kept) == 1
    assert "postgresql://" not in result.stdout.str()


@pytest.mark.parametrize("value", ["0", "'300'"])
def test_branch_expiry(neon: NeonProject, value: str) -> None:
    neon.pytester.makeini(f"[pytest]\nneon_branch_expiry = {value}\nneon_keep_branches = true\n")
    neon.pytester.makepyfile(test_k="def test_k(neon_branch_readwrite): pass")
    neon.run("--neon-worker-branches=1").assert_outcomes(passed=1)
    mine = [b for b in neon.branches() if str(b["name"]).startswith("pytest-neon-")]
    assert len(mine) == 1
    if value == "0":
        assert "expires_at" not in mine[0]
    else:
        assert "expires_at" in mine[0]


def test_a_bad_value_is_a_usage_error(neon: NeonProject) -> None:
    # (each setting's checks and messages: tests/plugin/test_config.py)
    neon.pytester.makepyfile(test_x="def test_x(): pass")
    result = neon.run("--neon-branch-expiry=-1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --neon-branch-expiry must be between 0*30 days*"])


def test_bad_ini_value_names_the_ini_key(neon: NeonProject) -> None:
    neon.pytester.makeini("[pytest]\nneon_branch_expiry = soon\n")
    neon.pytester.makepyfile(test_x="def test_x(): pass")
    result = neon.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: ini key neon_branch_expiry must be a whole number*"])


def test_no_credentials_skips_with_a_message(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEON_API_KEY", raising=False)
    monkeypatch.delenv("NEON_PROJECT_ID", raising=False)
    pytester.makepyfile(
        test_x="""
        def test_db(neon_branch_readwrite): pass
        def test_plain(): pass
        """
    )
    result = pytester.runpytest_subprocess("--neon-backend=neon", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*NEON_API_KEY and NEON_PROJECT_ID*--neon-api-key*"])


def test_help_works_without_credentials(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*--neon-api-key*", "*--neon-backend*", "*neon_branch_expiry*"])


def test_refused_key_fails_once_with_a_clear_line(
    neon: NeonProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEON_API_KEY", "not-the-right-key-1234")
    neon.pytester.makepyfile(test_x="def test_x(neon_branch_readwrite): pass")
    result = neon.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: Neon refused the API key from env NEON_API_KEY*"])
    assert "not-the-right-key-1234" not in result.stdout.str() + result.stderr.str()


def test_unknown_project_is_one_clear_line(neon: NeonProject) -> None:
    neon.pytester.makepyfile(test_x="def test_x(neon_branch_readwrite): pass")
    result = neon.pytester.runpytest_subprocess(
        "--neon-backend=neon",
        f"--neon-api-host={neon.emulator.api_host}",
        "--neon-project-id=no-such-project-123",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *404*"])
