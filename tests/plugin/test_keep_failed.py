"""``--neon-keep-failed``: a failing test's data kept as a branch (Neon mode, on the
emulator) or a database (the local backend), shown in its report and the summary."""

from __future__ import annotations

import re
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pytest_neon.config import KEEP_FAILED_DEFAULT, resolve
from pytest_neon.errors import NeonConfigError
from pytest_neon.local.shared_server import (
    running_port,
    socket_url,
    stamped_cluster,
    stop_shared_server,
)
from tests.support.pytest_runs import NeonProject, clean_neon_env, run_local, run_pytest

FAILS_AFTER_WRITING = """
import os, psycopg, pytest

def _write(value):
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS seen (x text)")
        assert conn.execute("SELECT count(*) FROM seen").fetchone()[0] == 0
        conn.execute("INSERT INTO seen VALUES (%s)", (value,))

@pytest.mark.parametrize("n", range(COUNT))
def test_fails(neon_branch_readwrite, n):
    _write(f"failing-{n}")
    assert False, "the data is wrong"

def test_passes(neon_branch_readwrite):
    _write("passing")
"""


def _failing(neon_or_pytester: NeonProject | pytest.Pytester, count: int = 1) -> None:
    pytester = (
        neon_or_pytester.pytester
        if isinstance(neon_or_pytester, NeonProject)
        else (neon_or_pytester)
    )
    pytester.makepyfile(test_keep=FAILS_AFTER_WRITING.replace("COUNT", str(count)))


def _kept(neon: NeonProject) -> list[dict[str, Any]]:
    return [b for b in neon.branches() if str(b["name"]).startswith("pytest-neon-failed-")]


def _seen(uri: str) -> list[str]:
    with psycopg.connect(uri, autocommit=True) as conn:
        return [row[0] for row in conn.execute("SELECT x FROM seen ORDER BY x")]


def _output(result: pytest.RunResult) -> str:
    return result.stdout.str() + result.stderr.str()


def test_a_failing_test_keeps_its_branch_with_its_data(neon: NeonProject) -> None:
    _failing(neon)
    result = neon.run("--neon-keep-failed", "-p", "no:randomly")
    result.assert_outcomes(failed=1, passed=1)
    kept = _kept(neon)
    assert len(kept) == 1, neon.branch_names()
    branch = kept[0]
    name, branch_id = str(branch["name"]), str(branch["id"])
    assert re.fullmatch(r"pytest-neon-failed-test_keep-test_fails-0-[0-9a-f]{8}", name), name
    expires = datetime.fromisoformat(str(branch["expires_at"]).replace("Z", "+00:00"))
    assert abs(expires - (datetime.now(UTC) + timedelta(days=1))) < timedelta(minutes=5)
    assert _seen(neon.uri(branch_id)) == ["failing-0"]  # the state at the failure
    # only the kept branch outlives the run
    assert not [n for n in neon.branch_names() if n.startswith("pytest-neon-") and n != name]
    out = _output(result)
    command = f"neonctl connection-string {name} --project-id {neon.emulator.project_id}"
    result.stdout.fnmatch_lines(
        [
            "*pytest-neon: the failing test's data*",
            f"*kept this test's data as it failed: branch {name} ({branch_id})*",
            f"*its connection string: {command} --api-host {neon.emulator.api_host}*",
            "*kept the data of 1 failing test(s) (--neon-keep-failed):*",
            f"*test_keep.py::test_fails[[]0[]]: {name} ({branch_id})*",
        ]
    )
    password = psycopg.conninfo.conninfo_to_dict(neon.uri(branch_id))["password"]
    assert password
    assert str(password) not in out


def test_passing_tests_keep_nothing(neon: NeonProject) -> None:
    neon.pytester.makepyfile(
        test_ok="""
        def test_passes(neon_branch_readwrite):
            pass
        """
    )
    result = neon.run("--neon-keep-failed")
    result.assert_outcomes(passed=1)
    assert not _kept(neon)
    assert "kept the data" not in result.stdout.str()


def test_a_test_without_a_writing_fixture_keeps_nothing(neon: NeonProject) -> None:
    neon.pytester.makepyfile(
        test_ro="""
        def test_reads(neon_branch_readonly):
            assert False
        """
    )
    result = neon.run("--neon-keep-failed")
    result.assert_outcomes(failed=1)
    assert not _kept(neon)


@pytest.mark.parametrize(
    ("args", "lines"),
    [
        (
            ("-p", "no:randomly"),
            [
                "*not kept: the run kept 2 failing tests' branches already (--neon-keep-failed=2)*",
                "*kept the data of 2 failing test(s)*",
                "*the cap of 2 kept per run was reached (--neon-keep-failed=2): 1 more*",
            ],
        ),
        (
            ("-n", "2", "--neon-worker-branches=1"),  # counted across the workers
            [
                "*kept the data of 2 failing test(s)*",
                "*the cap of 2 kept per run was reached*1 more*",
            ],
        ),
    ],
    ids=["one process", "xdist"],
)
def test_the_cap_keeps_that_many_and_says_so(
    neon: NeonProject, args: tuple[str, ...], lines: list[str]
) -> None:
    _failing(neon, 3)
    result = neon.run("--neon-keep-failed=2", *args)
    result.assert_outcomes(failed=3, passed=1)
    kept = _kept(neon)
    assert len(kept) == 2
    for branch in kept:
        n = str(branch["name"]).split("test_fails-")[1][0]
        assert _seen(neon.uri(str(branch["id"]))) == [f"failing-{n}"]
    result.stdout.fnmatch_lines(lines)


def test_a_kept_branch_outlives_other_runs_sweeps_until_it_expires(neon: NeonProject) -> None:
    _failing(neon)
    neon.run("--neon-keep-failed", "--neon-keep-failed-expiry=4").assert_outcomes(
        failed=1, passed=1
    )
    (kept,) = _kept(neon)
    expires = datetime.fromisoformat(str(kept["expires_at"]).replace("Z", "+00:00"))
    assert expires - datetime.now(UTC) < timedelta(seconds=5)
    neon.pytester.makepyfile(test_keep="def test_nothing(): pass")
    neon.run("--neon-sweep-after=1").assert_outcomes(passed=1)  # sweeps what is old
    assert [b["id"] for b in _kept(neon)] == [kept["id"]]
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.5)
    neon.run("--neon-sweep-after=1").assert_outcomes(passed=1)
    assert not _kept(neon)


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "raw", "count"),
    [
        ("cli", "true", KEEP_FAILED_DEFAULT),  # the flag alone
        ("cli", "3", 3),
        ("cli", "1", 1),  # a number, not true
        ("cli", "0", 0),
        ("cli", "false", 0),
        ("env", "yes", KEEP_FAILED_DEFAULT),
        ("env", "2", 2),
        ("env", "off", 0),
        ("ini", True, KEEP_FAILED_DEFAULT),  # native TOML values
        ("ini", 4, 4),
        ("ini", "no", 0),
    ],
)
def test_the_cap_from_each_source(source: str, raw: object, count: int) -> None:
    cli = {"keep_failed": raw} if source == "cli" else {}
    env = {"NEON_KEEP_FAILED": str(raw)} if source == "env" else {}
    ini = {"keep_failed": raw} if source == "ini" else {}
    settings = resolve(cli, env, ini)
    assert settings.keep_failed == count
    assert resolve({}, {}, {}).keep_failed == 0  # off by default
    assert resolve({}, {}, {}).keep_failed_expiry == 86400


@pytest.mark.parametrize(
    ("cli", "env", "ini", "message"),
    [
        ({"keep_failed": "lots"}, {}, {}, "--neon-keep-failed must be a whole number of "
         "branches (0 = off), true or false, got 'lots' (give the number with =, e.g. "
         "--neon-keep-failed=3)"),
        ({}, {"NEON_KEEP_FAILED": "-1"}, {}, "NEON_KEEP_FAILED must be a whole number of "
         "branches (0 = off), true or false, got -1"),
        ({}, {}, {"keep_failed": "many"}, "ini key neon_keep_failed must be a whole number"),
        ({"keep_failed_expiry": "0"}, {}, {}, "--neon-keep-failed-expiry must be a number of "
         "seconds from 1 to 2592000 (30 days, Neon's limit), got 0"),
        ({}, {"NEON_KEEP_FAILED_EXPIRY": "tomorrow"}, {}, "NEON_KEEP_FAILED_EXPIRY must be a "
         "whole number of seconds (1 to 2592000 = 30 days), got 'tomorrow'"),
        ({}, {}, {"keep_failed_expiry": "9999999"}, "ini key neon_keep_failed_expiry must be"),
    ],
)  # fmt: skip
def test_bad_values_name_the_flag_env_or_ini_key(
    cli: dict[str, str], env: dict[str, str], ini: dict[str, str], message: str
) -> None:
    with pytest.raises(NeonConfigError) as caught:
        resolve(cli, env, ini)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_flag_values_on_the_command_line(neon: NeonProject) -> None:
    neon.pytester.makepyfile(test_x="def test_x(): pass")
    neon.run("--neon-keep-failed").stdout.fnmatch_lines(
        [f"*keep_failed={KEEP_FAILED_DEFAULT} (from --neon-keep-failed)*"]
    )
    neon.pytester.makeini("[pytest]\nneon_keep_failed = 4\nneon_keep_failed_expiry = 60\n")
    result = neon.run("--neon-keep-failed=2")
    result.stdout.fnmatch_lines(
        ["*keep_failed=2 (from --neon-keep-failed), keep_failed_expiry=60 (from ini*"]
    )
    result = neon.run("--neon-keep-failed=some")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --neon-keep-failed must be a whole number*got 'some'*"])


# -- the local backend ----------------------------------------------------------------------


def _kept_databases(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, 'pytest_neon_failed_')"
        ).fetchall()
    return sorted(row[0] for row in rows)


def _on(url: str, database: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(url)
    params["dbname"] = database
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})


def _no_password(out: str, url: str) -> None:
    password = str(psycopg.conninfo.conninfo_to_dict(url).get("password") or "")
    if password:
        assert f":{password}@" not in out
        assert len(password) < 6 or password not in out


def test_a_given_server_keeps_a_database_until_it_expires(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    _failing(pytester)
    before = set(_kept_databases(postgres_url))
    result = run_local(pytester, postgres_url, "--neon-keep-failed", "--neon-keep-failed-expiry=3")
    result.assert_outcomes(failed=1, passed=1)
    (name,) = set(_kept_databases(postgres_url)) - before
    try:
        assert re.fullmatch(r"pytest_neon_failed_test_keep_test_fails_0_[0-9a-f]{8}", name)
        assert _seen(_on(postgres_url, name)) == ["failing-0"]
        user = psycopg.conninfo.conninfo_to_dict(postgres_url)["user"]
        result.stdout.fnmatch_lines(
            [
                "*pytest-neon: the failing test's data*",
                f"*keeps this test's data: database {name} (copied after the test's teardown), "
                "until * (3 s, *",
                f"*connect: postgresql://{user}@*/{name} (the password is the one in "
                "--neon-local-postgres-url)*",
                "*kept the data of 1 failing test(s)*",
                f"*test_keep.py::test_fails[[]0[]]: {name}",
            ]
        )
        _no_password(_output(result), postgres_url)
        time.sleep(3.5)
        pytester.makepyfile(test_keep="def test_nothing(): pass")
        run_local(pytester, postgres_url).assert_outcomes(passed=1)  # drops what expired
        assert name not in _kept_databases(postgres_url)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_throwaway_cluster_keeps_it_for_the_run_only(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)  # (a throwaway cluster per run, as in CI)
    pytester.makepyfile(
        test_keep="""
        import os, psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        import pytest

        @pytest.fixture
        def held():
            conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
            yield conn
            conn.execute("SELECT 1")  # used as it tears down: the copy waits for it
            conn.close()

        def test_fails(neon_branch_readwrite, held):
            held.execute("CREATE TABLE seen (x text)")
            held.execute("INSERT INTO seen VALUES ('failing')")
            assert False

        def test_later_reads_it_with_the_tests_login(neon_branch_readwrite):
            params = conninfo_to_dict(os.environ["DATABASE_URL"])
            with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
                (name,) = conn.execute(
                    "SELECT datname FROM pg_database"
                    " WHERE starts_with(datname, 'pytest_neon_failed_')"
                ).fetchone()
            params["dbname"] = name
            with psycopg.connect(make_conninfo(**params)) as conn:
                assert conn.execute("SELECT x FROM seen").fetchall() == [("failing",)]
        """
    )
    result = run_pytest(
        pytester, "-p", "no:cacheprovider", "-p", "no:randomly", "--neon-backend=local",
        "--neon-keep-failed",
    )  # fmt: skip
    result.assert_outcomes(failed=1, passed=1)  # (no error: its fixture tore down first)
    result.stdout.fnmatch_lines(
        [
            "*keeps this test's data: database pytest_neon_failed_test_keep_test_fails_* "
            "(copied after the test's teardown), for the rest of this run only: the throwaway "
            "cluster (CI, or --neon-local-reuse=false) is removed when the run ends*",
            "*connect while the run lasts: postgresql://neondb_owner@127.0.0.1:*/pytest_neon_"
            "failed_* (password: the test's own, as in DATABASE_URL while it ran)*",
        ]
    )


def test_the_kept_server_keeps_a_database_past_the_run_until_it_expires(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    root = Path(tempfile.mkdtemp(prefix="pn-keep-")) / "pg"
    monkeypatch.setenv("NEON_LOCAL_REUSE", "true")
    monkeypatch.setenv("NEON_LOCAL_DIR", str(root))
    monkeypatch.delenv("CI", raising=False)
    try:
        _failing(pytester)
        args = ("-p", "no:cacheprovider", "--neon-backend=local", "--neon-keep-failed")
        result = run_pytest(pytester, *args, "--neon-keep-failed-expiry=4")
        result.assert_outcomes(failed=1, passed=1)
        cluster = stamped_cluster(root)
        assert cluster is not None
        port = running_port(cluster)
        assert port is not None
        url = socket_url(root, port)
        (name,) = _kept_databases(url)
        assert _seen(_on(url, name)) == ["failing-0"]  # after the run's own databases went
        result.stdout.fnmatch_lines(
            [
                f"*database {name} on the kept local PostgreSQL (copied after the test's "
                "teardown), until * (4 s, *; then its watchdog or the next run drops it",
                f'*connect: psql "postgresql://postgres@/{name}?host={root}&port={port}" (no '
                "password: the kept server's Unix socket*",
                f"*test_keep.py::test_fails[[]0[]]: {name}",
            ]
        )
        time.sleep(4.5)
        pytester.makepyfile(test_keep="def test_uses_it(neon_branch_readwrite): pass")
        run_pytest(pytester, *args).assert_outcomes(passed=1)
        deadline = time.monotonic() + 30  # (dropped beside the next run's start)
        while _kept_databases(url) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _kept_databases(url)
    finally:
        stop_shared_server(root)
