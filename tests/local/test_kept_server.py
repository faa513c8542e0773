"""The kept local PostgreSQL: one server per user, reused between runs, its migration cache,
what killed runs leave, and how it stops."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pytest_neon.local.processes import detached_alive, pid_alive, read_postmaster_pid
from pytest_neon.local.shared_server import (
    STAMP,
    WATCHDOG_PID,
    attach_shared_server,
    ensure_shared_server,
    running_port,
    socket_url,
    stamped_cluster,
    stop_shared_server,
)
from tests.support.pytest_runs import clean_neon_env, run_pytest

pytestmark = pytest.mark.usefixtures("kept_dir")

WRITE_TEST = """
import os, psycopg

def test_writes(neon_branch_readwrite):
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS seen (x int)")
        assert conn.execute("SELECT count(*) FROM seen").fetchone()[0] == 0
        conn.execute("INSERT INTO seen VALUES (1)")
"""

MIGRATIONS = """
import os, pathlib, psycopg, pytest

LOG = pathlib.Path(os.environ["MIGRATION_LOG"])

@pytest.fixture(scope="session")
def neon_migration_fingerprint():
    return os.environ["SCHEMA_VERSION"]

@pytest.fixture(scope="session")
def neon_apply_migrations(neon_migration_branch):
    with LOG.open("a") as f:
        f.write(os.environ["SCHEMA_VERSION"] + "\\n")
    with psycopg.connect(neon_migration_branch.connection_string) as conn:
        conn.execute("CREATE TABLE items (id serial, name text)")
        conn.execute("INSERT INTO items (name) VALUES (%s)", (os.environ["SCHEMA_VERSION"],))

def pytest_unconfigure(config):
    import sys

    if os.environ.get("LOADED"):  # the plugin's modules this run loaded, and their loaders
        pathlib.Path(os.environ["LOADED"]).write_text("\\n".join(
            f"{name} {type(getattr(module, '__loader__', None)).__name__}"
            for name, module in list(sys.modules.items())
            if name.startswith("pytest_neon")
        ))
"""

READ_ITEMS = """
import os, psycopg

def test_migrated(neon_branch_readwrite):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        rows = conn.execute("SELECT name FROM items").fetchall()
    assert rows == [(os.environ["SCHEMA_VERSION"],)]
"""


@pytest.fixture
def kept_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A kept server's directory of its own (short: it holds a Unix socket)."""
    clean_neon_env(monkeypatch)
    root = Path(tempfile.mkdtemp(prefix="pn-kept-")) / "pg"
    monkeypatch.setenv("NEON_LOCAL_REUSE", "true")
    monkeypatch.setenv("NEON_LOCAL_DIR", str(root))
    monkeypatch.delenv("CI", raising=False)
    yield root
    stop_shared_server(root)
    assert not root.exists()
    root.parent.rmdir()


def _url(root: Path) -> str:
    cluster = stamped_cluster(root)
    assert cluster is not None
    port = running_port(cluster)
    assert port is not None, "the kept server is not running"
    return socket_url(root, port)


def _postmaster(root: Path) -> int | None:
    return read_postmaster_pid(root / "data")


def _databases(root: Path) -> set[str]:
    with psycopg.connect(_url(root), autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname <> 'postgres'")
        return {row[0] for row in rows} - {"template0", "template1"}


def _left(root: Path) -> set[str]:
    """The runs' databases and login roles still on the server, once the watchdog that
    each run hands its cleanup to is done (it drops them as the run exits); a project
    parked for the next run is not left over."""
    deadline = time.monotonic() + 15
    while True:
        parked = _parked(root)
        left = _databases(root) - _cached(root) - _databases_of(root, parked)
        left |= _logins(root) - {f"pytest_neon_login_{p}" for p in parked}
        left |= {"(a project)"} if _projects(root) > len(parked) else set()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _parked(root: Path) -> set[str]:
    """The projects parked for the next run."""
    folder = root / "parked"
    found = folder.glob("place-*.json") if folder.is_dir() else []
    return {json.loads(path.read_text())["project_id"] for path in found}


def _databases_of(root: Path, projects: set[str]) -> set[str]:
    with psycopg.connect(_url(root), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database"
        ).fetchall()
    comments = {f"pytest-neon-emulator project={p}" for p in projects}
    return {name for name, comment in rows if comment in comments}


def _cached(root: Path) -> set[str]:
    return {d for d in _databases(root) if d.startswith("pytest_neon_cache_")}


def _logins(root: Path) -> set[str]:
    with psycopg.connect(_url(root), autocommit=True) as conn:
        rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'pytest_neon_%'")
        return {row[0] for row in rows}


def _projects(root: Path) -> int:
    with psycopg.connect(_url(root), autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass('neon_emulator.projects')").fetchone()
        if row is None or row[0] is None:
            return 0
        count = conn.execute("SELECT count(*) FROM neon_emulator.projects").fetchone()
        return int(count[0]) if count else 0


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return run_pytest(pytester, "-p", "no:cacheprovider", "--neon-backend=local", *args)


def test_the_second_run_reuses_the_server_and_each_drops_its_databases(
    pytester: pytest.Pytester, kept_dir: Path
) -> None:
    pytester.makepyfile(test_w=WRITE_TEST)
    first = _run(pytester)
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines([f"*kept local PostgreSQL in {kept_dir} (started;*"])
    server = _postmaster(kept_dir)
    assert server is not None
    assert pid_alive(server)
    assert _left(kept_dir) == set()

    second = _run(pytester)
    second.assert_outcomes(passed=1)
    second.stdout.fnmatch_lines([f"*kept local PostgreSQL in {kept_dir} (running)*"])
    assert _postmaster(kept_dir) == server
    assert _left(kept_dir) == set()
    with_xdist = _run(pytester, "-n", "2")  # workers start the branch at once, as before
    with_xdist.assert_outcomes(passed=1)
    with_xdist.stdout.fnmatch_lines([f"*kept local PostgreSQL in {kept_dir} (reused;*"])
    assert _left(kept_dir) == set()
    # its files are on disk (the branches are in RAM where there is one)
    assert (kept_dir / "data" / "PG_VERSION").is_file()


def test_reuse_off_ci_and_a_given_server_start_no_kept_server(
    pytester: pytest.Pytester, kept_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_w=WRITE_TEST)
    _run(pytester, "--neon-local-reuse=false").stdout.fnmatch_lines(["*throwaway cluster*"])
    monkeypatch.delenv("NEON_LOCAL_REUSE")
    monkeypatch.setenv("CI", "true")
    _run(pytester).stdout.fnmatch_lines(["*throwaway cluster*"])
    assert not kept_dir.exists()
    monkeypatch.delenv("CI")
    too_long = kept_dir.parent / ("d" * 90)  # no room for a Unix socket in it
    monkeypatch.setenv("NEON_LOCAL_DIR", str(too_long))
    fallback = _run(pytester)
    fallback.assert_outcomes(passed=1)
    fallback.stdout.fnmatch_lines(["*throwaway cluster*not kept: *too long for a Unix socket*"])
    assert not too_long.exists()
    result = _run(pytester, "--neon-local-reuse=maybe")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--neon-local-reuse must be auto, true or false*"])


def test_unchanged_migrations_run_once_and_older_caches_are_pruned(
    pytester: pytest.Pytester, kept_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = pytester.path / "migrations.log"
    monkeypatch.setenv("MIGRATION_LOG", str(log))
    pytester.makeconftest(MIGRATIONS)
    pytester.makepyfile(test_items=READ_ITEMS)

    def run(version: str, *args: str) -> pytest.RunResult:
        monkeypatch.setenv("SCHEMA_VERSION", version)
        result = _run(pytester, *args)
        result.assert_outcomes(passed=1)
        return result

    run("v1").stdout.fnmatch_lines(["*migration cache: miss, migrations: *s"])
    run("v1").stdout.fnmatch_lines(["*migration cache: hit, migrations: cached"])
    assert log.read_text().split() == ["v1"]
    run("v2")
    run("v3")
    run("v2").stdout.fnmatch_lines(["*migrations: cached"])
    assert log.read_text().split() == ["v1", "v2", "v3"]
    assert len(_cached(kept_dir)) == 2  # v2 and v3; v1 was pruned
    run("v1")
    assert log.read_text().split() == ["v1", "v2", "v3", "v1"]
    # off: migrations run, nothing is looked up
    run("v1", "--neon-migration-cache=false").stdout.no_fnmatch_line("*migration cache*")
    assert log.read_text().split() == ["v1", "v2", "v3", "v1", "v1"]


def test_a_killed_run_leaves_nothing_after_the_next_run(
    pytester: pytest.Pytester, kept_dir: Path
) -> None:
    pytester.makepyfile(
        test_slow="""
        import time
        def test_hangs(neon_branch_readwrite):
            print("STARTED", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider", "--neon-backend=local"],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the run, its watchdog and all
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if b"STARTED" in line:
            break
    assert _databases(kept_dir)  # the run's branches
    os.killpg(proc.pid, signal.SIGKILL)  # the run's cleanup watchdog too
    proc.wait(timeout=10)
    proc.stdout.close()
    assert _databases(kept_dir)

    pytester.makepyfile(test_w=WRITE_TEST)
    (pytester.path / "test_slow.py").unlink()
    _run(pytester).assert_outcomes(passed=1)
    assert _left(kept_dir) == set()


def test_a_server_of_another_version_or_broken_is_made_again(
    pytester: pytest.Pytester, kept_dir: Path
) -> None:
    pytester.makepyfile(test_w=WRITE_TEST)
    _run(pytester).assert_outcomes(passed=1)
    first = _postmaster(kept_dir)
    stamp = json.loads((kept_dir / STAMP).read_text())
    (kept_dir / STAMP).write_text(json.dumps({**stamp, "plugin": "0.0.1"}))
    result = _run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*kept local PostgreSQL in * (started;*"])
    second = _postmaster(kept_dir)
    assert second != first
    assert first is not None
    assert not pid_alive(first)

    # broken: stopped, and its control file gone
    cluster = stamped_cluster(kept_dir)
    assert cluster is not None
    cluster.stop_server()
    (kept_dir / "data" / "global" / "pg_control").unlink()
    result = _run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*kept local PostgreSQL in * (started;*"])


def test_runs_at_once_share_the_server(pytester: pytest.Pytester, kept_dir: Path) -> None:
    for i in range(3):
        pytester.makepyfile(**{f"test_w{i}": WRITE_TEST})
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--neon-backend=local"]
    runs = [
        subprocess.Popen(
            [*command, *extra],
            cwd=pytester.path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for extra in ([], [], ["-n", "2"])
    ]
    outputs = [run.communicate(timeout=180)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output
        assert "3 passed" in output
    assert _left(kept_dir) == set()


def test_an_idle_server_stops_and_neon_local_stop_removes_it(
    pytester: pytest.Pytester, kept_dir: Path
) -> None:
    pytester.makepyfile(test_w=WRITE_TEST)
    _run(pytester, "--neon-local-idle-timeout=10").assert_outcomes(passed=1)
    server = _postmaster(kept_dir)
    assert server is not None
    deadline = time.monotonic() + 40
    while pid_alive(server) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not pid_alive(server), "the idle server did not stop"
    # the next run starts it again from the same data
    _run(pytester).stdout.fnmatch_lines(["*kept local PostgreSQL in * (started;*"])
    # settings that need the env var as they are imported (django-environ's env.db())
    pytester.makeconftest("import os\n\nDATABASES = {'default': os.environ['DATABASE_URL']}\n")
    result = run_pytest(pytester, "--neon-local-stop")
    assert result.ret == 0
    result.stdout.fnmatch_lines([f"pytest-neon: kept local PostgreSQL in {kept_dir}: stopped*"])
    assert not kept_dir.exists()


def _watchdog_sessions(root: Path) -> list[tuple[int, object]]:
    """The watchdog's connections to the kept server: (backend pid, start)."""
    with psycopg.connect(_url(root), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, backend_start FROM pg_stat_activity"
            " WHERE application_name = 'pytest-neon-watchdog'"
        ).fetchall()
    return [(int(pid), start) for pid, start in rows]


def test_the_watchdog_polls_sweeps_and_parks_over_one_connection(
    pytester: pytest.Pytester, kept_dir: Path
) -> None:
    pytester.makepyfile(test_w=WRITE_TEST)
    _run(pytester).assert_outcomes(passed=1)
    deadline = time.monotonic() + 10
    while not (sessions := _watchdog_sessions(kept_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(sessions) == 1, "the watchdog holds no connection of its own"
    # a run that sweeps at its start and parks its project at its end, then two more polls
    _run(pytester).assert_outcomes(passed=1)
    assert _left(kept_dir) == set()
    time.sleep(2 * 2.0 + 0.5)
    assert _watchdog_sessions(kept_dir) == sessions


PROMISED = """
import os

def test_no_database():
    print("URL", os.environ["DATABASE_URL"].split("@")[-1])

def test_promised_branch(neon_branch_readwrite):
    import psycopg  # (a driver imported before the tests start makes the branch at once)

    assert os.environ["DATABASE_URL"] == neon_branch_readwrite.connection_string
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        user = conn.execute("SELECT current_user").fetchone()[0]
        conn.execute("CREATE TABLE made (x int)")
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'made'"
        ).fetchone()[0]
    assert user == owner == "neondb_owner"  # the run's login acts as the owner role
"""


CONNECTS_AT_IMPORT = """
import os, pathlib, psycopg

# an application that connects as it is imported (create_all() at import, say)
with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
    print("AT IMPORT", conn.execute("SELECT current_database()").fetchone()[0])
    login = conn.execute("SELECT session_user").fetchone()[0]
pathlib.Path("url").write_text(os.environ["DATABASE_URL"])  # (test files: the test's own)
with psycopg.connect(os.environ["SUPERUSER_URL"]) as conn:  # the password the run found
    found = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (login,))
    pathlib.Path("verifier").write_text(found.fetchone()[0])
"""


def test_code_that_connects_at_import_finds_its_branch_and_a_parked_one_is_reused(
    pytester: pytest.Pytester, kept_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The branch exists before conftest.py is imported: made at the start of a run with
    nothing parked for its place, taken over (nothing made) by the runs after it."""
    ensure_shared_server(kept_dir)  # running, nothing parked here
    pytester.makepyfile(test_w=PROMISED)
    pytester.makeconftest(CONNECTS_AT_IMPORT)
    port = running_port(stamped_cluster(kept_dir))  # type: ignore[arg-type]
    args = ("-p", "no:cacheprovider", "-p", "no:postgresql", "--neon-backend=local", "-s")
    monkeypatch.setenv("SUPERUSER_URL", _url(kept_dir))

    first = run_pytest(pytester, *args, "-k", "no_database", subprocess=True)
    first.assert_outcomes(passed=1, deselected=1)
    first.stdout.fnmatch_lines([f"*kept local PostgreSQL in {kept_dir} (running)]*"])
    first.stdout.fnmatch_lines(["AT IMPORT pytest_neon_*", f"*URL 127.0.0.1:{port}/pytest_neon_*"])
    first.stdout.fnmatch_lines(["*branches created: 1,*"])
    (parked,) = _parked(kept_dir)  # its untouched branch, for the next run here
    handed = _verifier(kept_dir, _ready_record(kept_dir))  # the watchdog's new password
    assert handed != (pytester.path / "verifier").read_text()

    # taken over: the same database, with the password the watchdog gave its login (the
    # run gives it none: no statement before the import)
    again = run_pytest(pytester, *args, "-k", "no_database", subprocess=True)
    again.assert_outcomes(passed=1, deselected=1)
    again.stdout.fnmatch_lines(["*(running); the project parked by the last run here, taken over*"])
    database = _parked_record(kept_dir)["database"]
    again.stdout.fnmatch_lines([f"AT IMPORT {database}", "*branches created: 0,*API calls: 0 *"])
    assert (pytester.path / "verifier").read_text() == handed
    assert _parked(kept_dir) == {parked}
    # parked again as it was: the password it was given is over
    assert _verifier(kept_dir, _ready_record(kept_dir)) != handed
    assert not _logs_in((pytester.path / "url").read_text())
    collected = _run(pytester, "--collect-only")
    assert collected.ret == 0

    # a test writes: still the parked project, and nothing else left after the run
    _run(pytester).assert_outcomes(passed=2)
    assert _parked(kept_dir) == {parked}
    assert _left(kept_dir) == set()


def test_a_taken_over_run_without_database_tests_loads_no_driver(
    pytester: pytest.Pytester, kept_dir: Path
) -> None:
    """Its login gets its password over the server's socket without psycopg (0.2 s to
    import), and is locked out again once the project is parked back."""
    pytester.makepyfile(test_w=WRITE_TEST)
    _run(pytester).assert_outcomes(passed=1)  # starts the server
    _run(pytester).assert_outcomes(passed=1)  # parks its project
    (pytester.path / "test_w.py").unlink()
    pytester.makepyfile(
        test_plain="""
        import os, sys

        def test_no_driver():
            assert "psycopg" not in sys.modules
            assert os.environ["DATABASE_URL"].startswith("postgresql://pytest_neon_login_")
            open("url", "w").write(os.environ["DATABASE_URL"])
        """
    )
    args = ("-p", "no:cacheprovider", "-p", "no:postgresql", "--neon-backend=local")
    result = run_pytest(pytester, *args, subprocess=True)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*the project parked by the last run here, taken over*"])
    _ready_record(kept_dir)
    assert not _logs_in((pytester.path / "url").read_text())  # its password is over
    assert _left(kept_dir) == set()


ON_ITS_OWN = """
import os, psycopg

def test_writes_with_no_fixture():
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS notes (n int)")
        assert conn.execute("SELECT count(*) FROM notes").fetchone() == (0,)
        conn.execute("INSERT INTO notes VALUES (1)")
"""


def test_a_parked_branch_written_without_fixtures_or_lost_is_not_reused_as_it_is(
    pytester: pytest.Pytester, kept_dir: Path
) -> None:
    """Code that writes through DATABASE_URL with no pytest-neon fixture leaves nothing
    for the next run (the branch is copied anew); a parked project whose databases are
    gone (a RAM tablespace lost in a reboot) is not taken over."""
    pytester.makepyfile(test_own=ON_ITS_OWN)
    for _ in range(4):  # starts the server, parks, then takes over twice
        _run(pytester).assert_outcomes(passed=1)
    parked = _ready_record(kept_dir)
    with psycopg.connect(_url(kept_dir), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{parked["database"]}" WITH (FORCE)')
    lost = _run(pytester)
    lost.assert_outcomes(passed=1)
    lost.stdout.no_fnmatch_line("*taken over*")
    lost.stdout.fnmatch_lines(["*branches created: 1,*"])
    assert _ready_record(kept_dir)["project_id"] != parked["project_id"]
    assert _left(kept_dir) == set()


def test_the_django_example_migrates_once_with_warnings_as_errors(
    pytester: pytest.Pytester, kept_dir: Path
) -> None:
    """Its second run copies the cached migrations; its filterwarnings = error also fails
    a run that leaves a watchdog process to the garbage collector."""
    example = Path(__file__).parents[2] / "example_projects" / "django_app"
    shutil.copytree(example, pytester.path, dirs_exist_ok=True)
    first = run_pytest(pytester, "-p", "no:cacheprovider", "tests/test_models.py")
    first.assert_outcomes(passed=5)
    first.stdout.fnmatch_lines(["*migration cache: miss, migrations: *s"])
    second = run_pytest(pytester, "-p", "no:cacheprovider", "tests/test_models.py")
    second.assert_outcomes(passed=5)
    second.stdout.fnmatch_lines(["*migrations: cached"])
    assert _left(kept_dir) == set()


def test_the_fastapi_example_passes_when_its_branch_is_made_late(
    pytester: pytest.Pytester, kept_dir: Path
) -> None:
    """Its engine is built at import and follows resets through the SQLAlchemy
    integration, whose listener must reach a session made after pytest_configure."""
    example = Path(__file__).parents[2] / "example_projects" / "fastapi_app"
    shutil.copytree(example, pytester.path, dirs_exist_ok=True)
    args = ("-p", "no:cacheprovider", "--neon-backend=local")
    run_pytest(pytester, *args, subprocess=True).assert_outcomes(passed=16)  # starts it
    run_pytest(pytester, *args, subprocess=True).assert_outcomes(passed=16)  # parks
    late = run_pytest(pytester, *args, subprocess=True)
    late.stdout.fnmatch_lines(["*(running); the project parked by the last run here, taken over*"])
    late.assert_outcomes(passed=16)
    assert _left(kept_dir) == set()


def test_code_that_connects_on_its_own_finds_the_promised_branch(
    pytester: pytest.Pytester, kept_dir: Path
) -> None:
    """A suite that never asks for a pytest-neon fixture but whose application loads a
    driver and connects to DATABASE_URL (a session fixture building its tables, as the
    full-stack FastAPI template does) gets the branch made before its first test."""
    pytester.makepyfile(test_w=WRITE_TEST)
    _run(pytester).assert_outcomes(passed=1)  # the server runs from now on
    (pytester.path / "test_w.py").unlink()
    pytester.makeconftest(
        """
        import os, psycopg, pytest

        @pytest.fixture(scope="session", autouse=True)
        def tables():
            with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS items (name text)")
        """
    )
    pytester.makepyfile(
        test_app="""
        import os, psycopg

        def test_reads_its_table():
            with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
                assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
        """
    )
    result = run_pytest(pytester, "-p", "no:cacheprovider", "--neon-backend=local", subprocess=True)
    result.stdout.fnmatch_lines(["*(running)*"])
    result.assert_outcomes(passed=1)
    assert _left(kept_dir) == set()


PARKED_TEST = """
import os, pathlib, psycopg, pytest

@pytest.mark.parametrize("n", [1, 2])  # the second after a reset
def test_starts_migrated(neon_branch_readwrite, n):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        pathlib.Path(os.environ["SEEN"]).write_text(conn.info.dbname)
        pathlib.Path(os.environ["SEEN"] + ".url").write_text(os.environ["DATABASE_URL"])
        assert conn.execute("SELECT name FROM items").fetchall() == [
            (os.environ["SCHEMA_VERSION"],)
        ]
        assert conn.execute("SELECT nextval('items_id_seq')").fetchone() == (2,)
        conn.execute("INSERT INTO items (name) VALUES ('left by this run')")
"""


def _parked_record(root: Path) -> dict[str, object]:
    (record,) = (root / "parked").glob("place-*.json")
    data: dict[str, object] = json.loads(record.read_text())
    return data


def _ready_record(root: Path) -> dict[str, object]:
    """The parked record, once the server's watchdog made the project ready (its branch
    as the migrations left it, the login of the run that parked it given a new password
    for the next run)."""
    deadline = time.monotonic() + 15
    while True:
        record = _parked_record(root)
        ready = all(record[flag] is True for flag in ("fresh", "locked_out", "handed"))
        if ready or time.monotonic() > deadline:
            assert ready, f"the watchdog did not make the project ready: {record}"
            return record
        time.sleep(0.05)


def _logs_in(url: str) -> bool:
    """Whether ``url`` logs in (``False`` only for a password refused)."""
    try:
        psycopg.connect(url).close()
    except psycopg.OperationalError as exc:
        if "password authentication failed" not in str(exc):
            raise
        return False
    return True


def _verifier(root: Path, parked: dict[str, object]) -> str:
    """The SCRAM verifier of the parked project's login."""
    with psycopg.connect(_url(root), autocommit=True) as conn:
        row = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s",
            (f"pytest_neon_login_{parked['project_id']}",),
        ).fetchone()
    assert row is not None
    assert row[0]
    return str(row[0])


def test_the_next_run_takes_over_the_parked_project(
    pytester: pytest.Pytester, kept_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose state came from the migration cache parks its project; the next run
    of the place starts on it with nothing made or copied, in the migrated state (what
    the run before wrote, and its sequences, are gone); changed migrations migrate."""
    from pytest_neon.local.dead_runs import drop_dead_projects
    from pytest_neon.local.parking import protected_projects

    log, seen = pytester.path / "migrations.log", pytester.path / "seen"
    monkeypatch.setenv("MIGRATION_LOG", str(log))
    monkeypatch.setenv("SEEN", str(seen))
    pytester.makeconftest(MIGRATIONS)
    pytester.makepyfile(test_items=PARKED_TEST)

    def run(version: str) -> pytest.RunResult:
        monkeypatch.setenv("SCHEMA_VERSION", version)
        result = _run(pytester)
        result.assert_outcomes(passed=2)
        return result

    first = run("v1")  # starts the server, migrates, and parks its project
    first.stdout.fnmatch_lines(["*kept local PostgreSQL in * (started;*", "*branches created: 2,*"])
    # its tests had the branch: the server's watchdog makes it a new copy right after
    parked = _ready_record(kept_dir)
    url = _url(kept_dir).replace("/postgres?", f"/{parked['database']}?")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT name FROM items").fetchall() == [("v1",)]
        assert conn.execute("SELECT last_value FROM items_id_seq").fetchone() == (1,)
    assert not _logs_in((pytester.path / "seen.url").read_text())  # that run's password is over
    database = seen.read_text()
    assert database == parked["database"]

    # the server's sweep leaves it
    drop_dead_projects(_url(kept_dir), lambda: protected_projects(kept_dir))
    assert _parked(kept_dir) == {parked["project_id"]}
    assert _projects(kept_dir) == 1

    taken = run("v1")  # its emulator starts only for the reset between its two tests
    taken.stdout.fnmatch_lines(["*branches created: 0, resets: 1 done*migration cache: hit*"])
    assert seen.read_text() == database
    assert _parked(kept_dir) == {parked["project_id"]}
    assert log.read_text().split() == ["v1"]

    # another fingerprint: the same project migrates again, its old migrated state goes
    changed = run("v2")
    changed.stdout.fnmatch_lines(["*migration cache: miss, migrations: *s"])
    assert log.read_text().split() == ["v1", "v2"]
    again = _parked_record(kept_dir)
    assert again["project_id"] == parked["project_id"]
    assert again["cache_key"] != parked["cache_key"]
    assert parked["migration_database"] not in _databases(kept_dir)
    assert _left(kept_dir) == set()


def _park_a_migrated_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run of two writing tests on migrations: it starts the server, migrates, and
    parks its project."""
    monkeypatch.setenv("MIGRATION_LOG", str(pytester.path / "migrations.log"))
    monkeypatch.setenv("SEEN", str(pytester.path / "seen"))
    monkeypatch.setenv("SCHEMA_VERSION", "v1")
    pytester.makeconftest(MIGRATIONS)
    pytester.makepyfile(test_items=PARKED_TEST)
    _run(pytester).assert_outcomes(passed=2)


def test_a_parked_branch_is_ready_however_the_next_run_comes(
    pytester: pytest.Pytester, kept_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next run waits while the watchdog makes the parked branch ready (it holds the
    place file's lock), and makes it ready itself when nobody did."""
    import fcntl
    import threading

    _park_a_migrated_project(pytester, monkeypatch)
    parked = _ready_record(kept_dir)
    (place,) = (kept_dir / "parked").glob("place-*.json")

    # the place file locked a while, as the watchdog does while it copies the branch
    fd = os.open(place, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    threading.Timer(1.0, os.close, (fd,)).start()
    waited = _run(pytester)
    waited.assert_outcomes(passed=2)
    waited.stdout.fnmatch_lines(["*branches created: 0,*"])
    assert _ready_record(kept_dir)["project_id"] == parked["project_id"]

    # the watchdog that kept its login's password is gone: the run gives it one itself
    _ready_record(kept_dir)
    os.kill(int((kept_dir / WATCHDOG_PID).read_text()), signal.SIGKILL)
    orphaned = _run(pytester)
    orphaned.assert_outcomes(passed=2)
    orphaned.stdout.fnmatch_lines(["*taken over*", "*branches created: 0,*"])
    assert _ready_record(kept_dir)["project_id"] == parked["project_id"]  # (a new watchdog)

    # a watchdog restarted while the server runs holds no password: it gives one anew
    before = _verifier(kept_dir, parked)
    watchdog = int((kept_dir / WATCHDOG_PID).read_text())
    os.kill(watchdog, signal.SIGKILL)
    while detached_alive(watchdog):  # (until its zombie is reaped, by its parent or here)
        time.sleep(0.01)
    port = running_port(stamped_cluster(kept_dir))  # type: ignore[arg-type]
    assert port is not None
    assert attach_shared_server(kept_dir, port) is not None  # (starts a watchdog)
    deadline = time.monotonic() + 15
    while _verifier(kept_dir, parked) == before:
        assert time.monotonic() < deadline, "the new watchdog gave the login no password"
        time.sleep(0.05)  # (its first sweep, or the next request)
    _run(pytester).stdout.fnmatch_lines(["*taken over*", "*branches created: 0,*"])

    # not made ready (no watchdog got to it): the run that claims it copies it anew
    (place,) = (kept_dir / "parked").glob("place-*.json")
    record = json.loads(place.read_text())
    place.write_text(json.dumps({**record, "fresh": False}))
    url = _url(kept_dir).replace("/postgres?", f"/{record['database']}?")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO items (name) VALUES ('left behind')")
    _run(pytester).assert_outcomes(passed=2)  # each test sees the migrated state only
    assert _ready_record(kept_dir)["project_id"] == parked["project_id"]
    assert _left(kept_dir) == set()


def test_a_parked_project_outlives_a_run_without_database_tests_but_not_a_killed_one(
    pytester: pytest.Pytester, kept_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_neon.local.dead_runs import drop_dead_projects
    from pytest_neon.local.parking import claim, place_of, protected_projects

    _park_a_migrated_project(pytester, monkeypatch)
    # no API call at all; in a process of its own, to see what it loaded
    monkeypatch.setenv("LOADED", str(pytester.path / "loaded"))
    thin = run_pytest(
        pytester,
        "-p",
        "no:cacheprovider",
        "--neon-backend=local",
        "test_items.py::test_starts_migrated[1]",
        subprocess=True,
    )
    thin.assert_outcomes(passed=1)
    thin.stdout.fnmatch_lines(["*branches created: 0, resets: 0 done*API calls: 0 *"])
    loaded = dict(
        line.split(" ", 1) for line in (pytester.path / "loaded").read_text().splitlines()
    )
    assert "pytest_neon.neon_session" in loaded  # (the list is the run's)
    for unused in (
        "pytest_neon.api.types",  # the API's records: no call made
        "pytest_neon.api.client",  # not even a client made
        "pytest_neon.local.transport",
        "pytest_neon.local.emulator.app",  # nor an emulator started
        "pytest_neon.local.emulator.sql.metadata",
        "pytest_neon.local.emulator.records",
        "pytest_neon.local.cluster",  # nor a server started or made
        "pytest_neon.local.launcher",
        "pytest_neon.local.pip_package",
    ):
        assert unused not in loaded
    # loaded as a library's modules, not through pytest's assertion rewriter
    assert loaded["pytest_neon.config"] != "AssertionRewritingHook"
    assert loaded["pytest_neon.local.backend"] != "AssertionRewritingHook"
    monkeypatch.delenv("LOADED")

    # the backend left on auto: a running kept server of this version is local PostgreSQL
    # enough (no binaries search), unless binaries are asked for by name
    auto = run_pytest(pytester, "-p", "no:cacheprovider", "test_items.py::test_starts_migrated[1]")
    auto.assert_outcomes(passed=1)
    auto.stdout.fnmatch_lines(
        ["*backend local (auto: no Neon credentials; the kept local PostgreSQL runs*"]
    )
    named = run_pytest(
        pytester,
        "-p",
        "no:cacheprovider",
        "--neon-local-postgres-source=system",
        "test_items.py::test_starts_migrated[1]",
    )
    named.assert_outcomes(passed=1)
    named.stdout.fnmatch_lines(["*auto: no Neon credentials; PostgreSQL binaries in *"])
    named.stdout.fnmatch_lines(["*branches created: 0,*"])  # taken over all the same
    # a claim attaches to the server it knows runs on its port; on another, it does not
    cluster = stamped_cluster(kept_dir)
    assert cluster is not None
    port = running_port(cluster)
    assert port is not None
    attached = attach_shared_server(kept_dir, port)
    assert attached is not None
    assert attached.reused
    assert attached.port == port
    assert attach_shared_server(kept_dir, port + 1) is None
    before = _parked_record(kept_dir)
    (pytester.path / "test_items.py").unlink()
    pytester.makepyfile(test_plain="def test_no_database():\n    pass\n")
    _run(pytester).assert_outcomes(passed=1)
    assert _parked_record(kept_dir)["project_id"] == before["project_id"]

    # a run that claimed it and was killed: the sweep drops it
    place = place_of(pytester.path, "neondb", "neondb_owner")
    taken = claim(kept_dir, place)
    assert taken is not None
    assert claim(kept_dir, place) is None  # one run at a time
    drop_dead_projects(_url(kept_dir), lambda: protected_projects(kept_dir))
    assert _projects(kept_dir) == 1  # its run is alive
    assert taken._fd is not None
    os.close(taken._fd)  # (as a kill -9 would)
    drop_dead_projects(_url(kept_dir), lambda: protected_projects(kept_dir))
    assert _projects(kept_dir) == 0
    assert not list((kept_dir / "parked").iterdir())
    assert _left(kept_dir) == set()


EMPTY_TEST = """
import psycopg, pytest

@pytest.mark.parametrize("n", [1, 2])  # the second after a reset
def test_starts_empty(neon_branch_readwrite, n):
    with psycopg.connect(neon_branch_readwrite.connection_string, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE tablename IN ('mine', 'items')"
        ).fetchall()
        assert tables == []
        conn.execute("CREATE TABLE mine (id int)")
"""


def test_a_project_without_migrations_is_parked_and_its_parent_kept(
    pytester: pytest.Pytester, kept_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_empty=EMPTY_TEST)
    _run(pytester).assert_outcomes(passed=2)  # starts the server, parks its project
    parked = _parked_record(kept_dir)
    assert parked["cache_key"] == ""  # no migrations: the parent is the source
    assert parked["migration_branch_id"] == parked["parent_id"]
    taken = _run(pytester)
    taken.assert_outcomes(passed=2)  # the table a test made is gone, after a reset too
    taken.stdout.fnmatch_lines(["*branches created: 0, resets: 1 done*"])
    assert _parked_record(kept_dir)["project_id"] == parked["project_id"]

    # migrations now, on the same project: its parent is left alone
    monkeypatch.setenv("MIGRATION_LOG", str(pytester.path / "migrations.log"))
    monkeypatch.setenv("SCHEMA_VERSION", "v1")
    pytester.makeconftest(MIGRATIONS)
    pytester.makepyfile(test_read=READ_ITEMS)
    migrated = _run(pytester, "test_read.py")
    migrated.assert_outcomes(passed=1)
    assert (pytester.path / "migrations.log").read_text() == "v1\n"
    assert _parked_record(kept_dir)["project_id"] == parked["project_id"]
    _run(pytester, "test_read.py").assert_outcomes(passed=1)  # cached: taken over
    assert (pytester.path / "migrations.log").read_text() == "v1\n"
    assert _parked_record(kept_dir)["cache_key"] not in ("", None)

    # and gone again: the branch parked in the migrated state is brought to the parent
    (pytester.path / "conftest.py").unlink()
    _run(pytester, "test_empty.py").assert_outcomes(passed=2)
    assert _parked_record(kept_dir)["cache_key"] == ""
