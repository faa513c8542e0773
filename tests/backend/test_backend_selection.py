"""--neon-backend: neon, local and each case of auto; each PostgreSQL source; as root."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from pytest_neon.local.pip_package import find_package
from tests.support.pytest_runs import NeonProject, clean_neon_env

ISOLATION = """
import os
import psycopg

def test_a_write(neon_branch_readwrite):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        conn.execute("CREATE TABLE local_t (x int)")

def test_b_clean(neon_branch_readwrite):
    assert os.environ["DATABASE_URL"] == neon_branch_readwrite.connection_string
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        assert conn.execute("SELECT to_regclass('local_t') IS NULL").fetchone() == (True,)
"""


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://nobody:s3cret-pw@127.0.0.1:{port}/postgres"


def _postgres_processes() -> set[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return {line for line in out.splitlines() if "pytest-neon-pg-" in line}


def test_auto_with_credentials_picks_neon(
    neon: NeonProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEON_PROJECT_ID", neon.emulator.project_id)
    monkeypatch.setenv("NEON_API_HOST", neon.emulator.api_host)
    neon.pytester.makepyfile(test_iso=ISOLATION)
    result = neon.pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["neon: backend neon (auto: NEON_API_KEY and NEON_PROJECT_ID*"])


def test_auto_without_credentials_runs_locally_and_cleans_up(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    # a pull request from a fork: the workflow's secret is empty, the project id is set
    monkeypatch.setenv("NEON_API_KEY", "")
    monkeypatch.setenv("NEON_PROJECT_ID", "some-project-123")
    private = Path(tempfile.mkdtemp(prefix="pytest-neon-test-"))
    monkeypatch.setenv("TMPDIR", str(private))  # where the run's throwaway cluster lives
    try:
        pytester.makepyfile(test_iso=ISOLATION)
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
        result.assert_outcomes(passed=2)
        result.stdout.fnmatch_lines(["*backend local (auto: no Neon credentials; *"])
        assert not [p for p in _postgres_processes() if str(private) in p]  # server stopped
        assert list(private.glob("pytest-neon-pg-*")) == []  # data directory removed
    finally:
        shutil.rmtree(private, ignore_errors=True)


def test_auto_with_no_postgres_skips_with_one_message(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    monkeypatch.setenv("NEON_LOCAL_POSTGRES_URL", _dead_url())
    pytester.makepyfile(
        test_x="""
        def test_db(neon_branch_readwrite): pass
        def test_plain(): pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    text = result.stdout.str()
    assert "NEON_API_KEY and NEON_PROJECT_ID" in text
    assert 'pip install "pytest-neon[local]"' in text
    assert "NEON_LOCAL_POSTGRES_URL" in text
    assert "s3cret-pw" not in text
    result.stdout.fnmatch_lines(["neon: backend none (auto: no Neon credentials and no local*"])


def test_local_backend_with_a_dead_server_is_one_clear_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    pytester.makepyfile(test_x="def test_db(neon_branch_readwrite): pass")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--neon-backend=local", f"--neon-local-postgres-url={_dead_url()}"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: cannot connect to PostgreSQL at 127.0.0.1:*"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    assert "s3cret-pw" not in result.stderr.str()


def test_local_backend_on_a_given_server_leaves_nothing_behind(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, postgres_url: str
) -> None:
    clean_neon_env(monkeypatch)

    def databases() -> set[str]:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}

    before = databases()
    pytester.makepyfile(test_iso=ISOLATION)
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--neon-backend=local",
        f"--neon-local-postgres-url={postgres_url}",
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*backend local (--neon-backend is local*PostgreSQL at *"])
    assert databases() == before

    def our_routines() -> int:  # the probe's and the emulator's temporary procedures
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_proc WHERE proname LIKE 'pytest\\_neon\\_%'"
            ).fetchone()
        return int(row[0]) if row else -1

    deadline = time.monotonic() + 10  # they go when the run's sessions have ended
    while our_routines() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert our_routines() == 0


@pytest.mark.parametrize("source", ["package", "pgserver"])  # pgserver: its earlier name
def test_local_backend_on_the_package(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    package = find_package()
    assert package is not None, 'the local extra is installed: pip install "pytest-neon[local]"'
    clean_neon_env(monkeypatch)
    pytester.makepyfile(test_iso=ISOLATION)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--neon-backend=local", f"--neon-local-postgres-source={source}"
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"*backend local*throwaway cluster ({package.label}*"])


@pytest.mark.skipif(os.geteuid() != 0, reason="shows the root path; run as root to exercise it")
def test_as_root_the_system_cluster_runs_unprivileged(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    pytester.makepyfile(
        test_user="""
        import psycopg

        def test_owner(neon_branch_readwrite):
            with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
                pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                uid = open(f"/proc/{pid}/status").read().split("Uid:")[1].split()[0]
            assert uid != "0"
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--neon-backend=local", "--neon-local-postgres-source=system"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*throwaway cluster (system binaries*"])


def test_two_runs_at_once_do_not_collide(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    pytester.makepyfile(test_iso=ISOLATION)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
    runs = [
        subprocess.Popen(
            [*cmd, f"--basetemp={pytester.path / f'base{i}'}"],
            cwd=pytester.path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output
        assert "2 passed" in output
