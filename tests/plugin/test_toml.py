"""ini keys in pyproject.toml take native TOML values: bools, numbers, lists."""

from __future__ import annotations

import pytest

from tests.support.pytest_runs import NeonProject

NATIVE = """
neon_keep_branches = false
neon_always_reset = true
neon_branch_expiry = 300
neon_worker_branches = 2
neon_database = "neondb"
"""

QUOTED = """
neon_keep_branches = "false"
neon_branch_expiry = "300"
"""

TABLES = ["tool.pytest.ini_options"]
if pytest.version_tuple >= (9,):  # pytest 9 reads [tool.pytest] with native types
    TABLES.append("tool.pytest")


def _pyproject(pytester: pytest.Pytester, table: str, body: str) -> None:
    pytester.makefile(".toml", pyproject=f"[{table}]\n{body}")


@pytest.mark.parametrize("table", TABLES)
def test_native_values_are_read(neon: NeonProject, table: str) -> None:
    _pyproject(neon.pytester, table, NATIVE)
    neon.pytester.makepyfile(test_x="def test_x(neon_branch_readwrite): pass")
    result = neon.run()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "neon: settings: *keep_branches=False (from ini neon_keep_branches)*"
            "branch_expiry=300 (from ini neon_branch_expiry)*"
            "always_reset=True (from ini neon_always_reset)*"
            "worker_branches=2 (from ini neon_worker_branches)*"
        ]
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize("table", TABLES)
def test_quoted_values_are_read_too(neon: NeonProject, table: str) -> None:
    _pyproject(neon.pytester, table, QUOTED)
    neon.pytester.makepyfile(test_x="def test_x(neon_branch_readwrite): pass")
    result = neon.run()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*branch_expiry=300 (from ini neon_branch_expiry)*"])


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize(
    ("line", "key"),
    [("neon_branch_expiry = true", "neon_branch_expiry"), ("neon_keep_branches = 3", "")],
)
def test_a_wrong_type_is_a_one_line_error(
    neon: NeonProject, table: str, line: str, key: str
) -> None:
    _pyproject(neon.pytester, table, line + "\n")
    neon.pytester.makepyfile(test_x="def test_x(): pass")
    result = neon.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert len(errors) == 1, output
    assert (key or "neon_keep_branches") in errors[0]


@pytest.mark.parametrize("table", TABLES)
def test_lists_of_the_integrations(neon: NeonProject, table: str) -> None:
    body = 'neon_sqlalchemy_engines = ["appdb:engine", "appdb:missing"]\n'
    _pyproject(neon.pytester, table, body)
    neon.pytester.makeconftest('pytest_plugins = ["pytest_neon.contrib.sqlalchemy"]\n')
    neon.pytester.makepyfile(
        appdb="""
        import os
        from sqlalchemy import create_engine

        url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
        engine = create_engine(url)
        """,
        test_x="def test_x(neon_branch_readwrite): pass",
    )
    result = neon.run()
    result.assert_outcomes(errors=1)
    # both entries were read: the first is an engine, the second is named in the error
    result.stdout.fnmatch_lines(["*neon_sqlalchemy_engines = appdb:missing: AttributeError*"])
