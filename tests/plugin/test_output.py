"""The run's own output is its header and summary; its logs go to pytest's log handlers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.pytest_runs import clean_neon_env, run_local

# An application that logs everything at INFO through a handler of its own on the root
# logger, as a Django LOGGING setting or a basicConfig call in conftest.py does.
CONFTEST = """
import logging
import os

import psycopg
import pytest

handler = logging.FileHandler(os.environ["APP_LOG"])
handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)
logging.getLogger("myapp").info("the application logs")

@pytest.fixture(scope="session")
def neon_apply_migrations(_neon_migration_branch):
    with psycopg.connect(_neon_migration_branch.connection_string) as conn:
        conn.execute("CREATE TABLE t (x int)")
"""

TESTS = """
import logging
import psycopg

def test_writes(neon_branch_readwrite):
    logging.getLogger("myapp").info("a test logs")
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        conn.execute("INSERT INTO t VALUES (1)")

def test_reads(neon_branch_readwrite):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
"""


@pytest.fixture
def app_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "app.log"
    monkeypatch.setenv("APP_LOG", str(path))
    return path


def test_the_applications_log_handlers_get_no_plugin_records(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch, app_log: Path
) -> None:
    clean_neon_env(monkeypatch)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_logs=TESTS)
    result = run_local(pytester, postgres_url, "-s")
    result.assert_outcomes(passed=2)
    logged = app_log.read_text()
    assert "myapp a test logs" in logged  # the application's own records still go there
    assert "pytest_neon" not in logged
    assert "pytest_neon" not in result.stdout.str() + result.stderr.str()


def test_pytests_log_options_show_the_plugin_records(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch, app_log: Path
) -> None:
    clean_neon_env(monkeypatch)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_logs=TESTS)
    result = run_local(pytester, postgres_url, "--log-cli-level=INFO")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*pytest_neon.emulator*deleted branch br-*"])
    assert "pytest_neon" not in app_log.read_text()


def test_the_header_says_when_the_env_var_was_set_and_it_is_put_back(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    production = "postgresql://app@db.invalid/production"
    monkeypatch.setenv("DATABASE_URL", production)
    pytester.makepyfile(
        test_env=f"""
        import os

        def test_on_the_branch(neon_branch_readwrite):
            assert os.environ["DATABASE_URL"] == neon_branch_readwrite.connection_string
            assert os.environ["DATABASE_URL"] != {production!r}
        """
    )
    result = run_local(pytester, postgres_url)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["neon: DATABASE_URL was set: it points at the test branch*"])
    assert os.environ["DATABASE_URL"] == production  # put back (this run was in-process)
