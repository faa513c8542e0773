"""The throwaway PostgreSQL of pytest_neon.local (launcher, cluster), against real servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg
import pytest

from pytest_neon.errors import NeonConfigError
from pytest_neon.local.binaries import find_pg_bindir
from pytest_neon.local.cluster import RunningPostgres
from pytest_neon.local.given_server import check_postgres_url
from pytest_neon.local.launcher import start_postgres
from pytest_neon.local.pip_package import find_package
from pytest_neon.local.unavailable import PostgresUnavailableError
from pytest_neon.redact import redact
from tests.support.reliability import default_sigint

needs_system = pytest.mark.skipif(
    find_pg_bindir() is None, reason="no PostgreSQL server binaries on this machine"
)


def _processes_using(path: Path) -> list[int]:
    """Pids whose command line mentions ``path`` (e.g. ``postgres -D <path>``)."""
    needle = str(path)
    pids = []
    for proc in psutil.process_iter():
        try:
            if needle in " ".join(proc.cmdline()):
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return pids


def _assert_gone(pg: RunningPostgres) -> None:
    assert pg.data_dir is not None
    assert not pg.data_dir.exists()
    assert not pg.data_dir.parent.exists()
    assert _processes_using(pg.data_dir) == []


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture(scope="module")
def system_pg() -> Iterator[RunningPostgres]:
    if find_pg_bindir() is None:
        pytest.skip("no PostgreSQL server binaries on this machine")
    pg = start_postgres(prefer="system")
    yield pg
    pg.stop()
    _assert_gone(pg)


# --------------------------------------------------------------------------- system binaries


def test_system_cluster_is_tuned_for_tests(system_pg: RunningPostgres) -> None:
    assert system_pg.source.startswith("system binaries in ")
    with psycopg.connect(system_pg.url) as conn:
        show = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in (
                "fsync",
                "full_page_writes",
                "synchronous_commit",
                "listen_addresses",
                "max_connections",
                "unix_socket_directories",
            )
        }
    assert show["fsync"] == show["full_page_writes"] == show["synchronous_commit"] == "off"
    assert show["listen_addresses"] == "127.0.0.1"
    assert int(show["max_connections"]) >= 300
    assert system_pg.data_dir is not None
    assert show["unix_socket_directories"] in ("", str(system_pg.data_dir.parent))


def test_url_is_tcp_superuser_with_a_secret_password(system_pg: RunningPostgres) -> None:
    parts = urlsplit(system_pg.url)
    assert parts.scheme == "postgresql"
    assert parts.hostname == "127.0.0.1"
    assert parts.username == "postgres"
    assert parts.password
    assert len(parts.password) >= 20
    assert parts.password not in redact(system_pg.url)
    assert parts.password not in repr(system_pg)
    with psycopg.connect(system_pg.url) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        assert conn.info.hostaddr == "127.0.0.1"


def test_wrong_password_is_refused_over_tcp(system_pg: RunningPostgres) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(_with_password(system_pg.url, "not-the-password"), connect_timeout=5)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(_with_password(system_pg.url, ""), connect_timeout=5)


def test_server_runs_unprivileged_in_a_private_dir(system_pg: RunningPostgres) -> None:
    with psycopg.connect(system_pg.url) as conn:
        backend = conn.info.backend_pid
        status = Path(f"/proc/{backend}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    if os.geteuid() == 0:
        import pwd

        assert uid == pwd.getpwnam("postgres").pw_uid
        assert "(run as user postgres)" in system_pg.source
    else:
        assert uid == os.geteuid()
    assert system_pg.data_dir is not None
    root = system_pg.data_dir.parent
    assert root.name.startswith("pytest-neon-pg-")
    assert root.stat().st_mode & 0o077 == 0


def test_check_postgres_url_accepts_a_live_server(system_pg: RunningPostgres) -> None:
    check_postgres_url(system_pg.url)


@needs_system
def test_concurrent_clusters_do_not_collide(tmp_path: Path) -> None:
    results: list[RunningPostgres] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            results.append(start_postgres(prefer="system", base_dir=tmp_path))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert errors == []
        first, second = results
        assert urlsplit(first.url).port != urlsplit(second.url).port
        assert first.data_dir != second.data_dir
        for pg in results:
            assert pg.data_dir is not None
            assert pg.data_dir.parent.parent == tmp_path.resolve()
            with psycopg.connect(pg.url) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        for pg in results:
            pg.stop()
    for pg in results:
        _assert_gone(pg)
        pg.stop()  # idempotent
        _assert_gone(pg)
    assert list(tmp_path.iterdir()) == []


@needs_system
def test_context_manager_stops_and_removes(tmp_path: Path) -> None:
    with start_postgres(prefer="system", base_dir=tmp_path) as pg:
        assert pg.data_dir is not None
        assert _processes_using(pg.data_dir)
    _assert_gone(pg)


@needs_system
def test_stop_kills_a_server_whose_pid_file_is_gone(tmp_path: Path) -> None:
    pg = start_postgres(prefer="system", base_dir=tmp_path)
    assert pg.data_dir is not None
    postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    children = [child.pid for child in psutil.Process(postmaster).children()]
    assert children
    (pg.data_dir / "postmaster.pid").unlink()  # as if start was interrupted before writing it
    pg.stop()
    _assert_gone(pg)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in [postmaster, *children]):
        time.sleep(0.05)
    assert [p for p in [postmaster, *children] if _alive(p)] == []


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --------------------------------------------------------------------------- package


def test_package_cluster_works_and_cleans_up() -> None:
    package = find_package()
    assert package is not None, 'the local extra is installed: pip install "pytest-neon[local]"'
    pg = start_postgres(prefer="package")
    try:
        assert pg.source.startswith(package.label)
        parts = urlsplit(pg.url)
        assert (parts.hostname, parts.username) == ("127.0.0.1", "postgres")
        with psycopg.connect(pg.url, autocommit=True) as conn:
            assert conn.execute("SHOW fsync").fetchone() == ("off",)
            assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
            # its contrib modules: the write check's inspector
            conn.execute("CREATE EXTENSION pg_walinspect")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(_with_password(pg.url, "wrong-password"), connect_timeout=5)
    finally:
        pg.stop()
    _assert_gone(pg)
    pg.stop()


def test_auto_falls_back_to_the_package_when_system_binaries_fail(tmp_path: Path) -> None:
    package = find_package()
    assert package is not None
    broken = tmp_path / "bin"
    broken.mkdir()
    for name in ("initdb", "postgres", "pg_ctl"):
        (broken / name).write_text("#!/bin/sh\necho 'broken binary' >&2\nexit 3\n")
        (broken / name).chmod(0o755)
    base = tmp_path / "base"
    with start_postgres(bindirs=[broken], base_dir=base) as pg:
        assert pg.source.startswith(package.label)
        check_postgres_url(pg.url)
    _assert_gone(pg)
    assert list(base.iterdir()) == []


# --------------------------------------------------------------------------- failures


def test_nothing_available_says_what_to_install() -> None:
    assert find_pg_bindir(search=[]) is None
    with pytest.raises(PostgresUnavailableError) as info:
        start_postgres(bindirs=[], allow_package=False)
    message = str(info.value)
    assert "pytest-neon[local]" in message
    assert "NEON_LOCAL_POSTGRES_URL" in message
    assert "--neon-local-postgres-url" in message
    assert "\n" not in message
    assert isinstance(info.value, NeonConfigError)


def test_prefer_system_without_binaries_fails_even_with_the_package(tmp_path: Path) -> None:
    with pytest.raises(PostgresUnavailableError, match=r"pytest-neon\[local\]"):
        start_postgres(prefer="system", bindirs=[tmp_path])


def test_search_list_is_honoured(tmp_path: Path) -> None:
    real = find_pg_bindir()
    if real is None:
        pytest.skip("no PostgreSQL server binaries on this machine")
    assert find_pg_bindir(search=[tmp_path, str(real)]) == real


def test_broken_system_binaries_give_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "bin"
    broken.mkdir()
    for name in ("initdb", "postgres", "pg_ctl"):
        (broken / name).write_text("#!/bin/sh\necho 'broken binary' >&2\nexit 3\n")
        (broken / name).chmod(0o755)
    base = tmp_path / "base"
    with pytest.raises(PostgresUnavailableError, match="initdb") as info:
        start_postgres(prefer="system", bindirs=[broken], base_dir=base)
    if os.geteuid() != 0:  # as root, the postgres user may not even reach tmp_path
        assert "broken binary" in str(info.value)
    assert list(base.iterdir()) == []


def test_unknown_preference_is_a_config_error() -> None:
    with pytest.raises(NeonConfigError, match="auto, system, package"):
        start_postgres(prefer="docker")


def test_check_postgres_url_on_a_dead_port_hides_the_password() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    password = "Sup3r-secret-pw/x"
    url = f"postgresql://alice:Sup3r-secret-pw%2Fx@127.0.0.1:{port}/db"
    with pytest.raises(PostgresUnavailableError) as info:
        check_postgres_url(url, timeout=2)
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert password not in message
    assert "Sup3r-secret-pw%2Fx" not in message
    assert "\n" not in message


def test_check_postgres_url_rejects_garbage() -> None:
    with pytest.raises(PostgresUnavailableError, match="invalid PostgreSQL URL"):
        check_postgres_url("this is not a dsn")
    with pytest.raises(PostgresUnavailableError, match="notaport") as info:
        check_postgres_url("postgresql://u:hunter22@127.0.0.1:notaport/db")
    assert "hunter22" not in str(info.value)


# --------------------------------------------------------------------------- interpreter exit


@needs_system
def test_sigint_stops_and_removes_the_cluster(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from pytest_neon.local.launcher import start_postgres

        pg = start_postgres(prefer="system", base_dir=Path(sys.argv[1]))
        print(pg.data_dir, flush=True)
        time.sleep(120)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    ) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line, proc.stderr.read() if proc.stderr else ""
        data_dir = Path(line)
        assert _processes_using(data_dir)
        proc.send_signal(signal.SIGINT)
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            raise
    assert "KeyboardInterrupt" in stderr
    assert not data_dir.exists()
    assert _processes_using(data_dir) == []
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- conftest


def test_suite_postgres_url_fixture_works(postgres_url: str) -> None:
    check_postgres_url(postgres_url)


def test_immediate_stop_leaves_no_shared_memory_segments() -> None:
    shm = Path("/dev/shm")  # noqa: S108 - where POSIX shared memory segments would appear
    if not shm.is_dir():
        pytest.skip("no /dev/shm on this system")

    def segments() -> set[str]:
        return {p.name for p in shm.glob("PostgreSQL.*")}

    before = segments()
    with start_postgres(prefer="system") as pg, psycopg.connect(pg.url) as conn:
        conn.execute("SET max_parallel_workers_per_gather = 2")
        conn.execute("SELECT count(*) FROM generate_series(1, 1000)").fetchone()
    # another xdist worker's server may hold a segment for a moment: a leak would stay
    deadline = time.monotonic() + 10
    while not segments() <= before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert segments() <= before


def test_a_made_up_password_is_stored_with_few_iterations_and_still_checked(
    postgres_url: str,
) -> None:
    """The verifiers of the plugin's own random passwords: a login works with the
    password, not without it, and costs the client few PBKDF2 iterations."""
    import secrets

    from psycopg import sql

    from pytest_neon.local.emulator.scram_keys import RANDOM_PASSWORD_ITERATIONS, verifier

    password, role = secrets.token_urlsafe(24), f"made_up_{secrets.token_hex(4)}"
    parts = urlsplit(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(verifier(password))
            )
        )
        stored = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)
        ).fetchone()
    try:
        assert stored is not None
        assert stored[0].startswith(f"SCRAM-SHA-256${RANDOM_PASSWORD_ITERATIONS}:")

        def as_role(secret: str) -> str:
            netloc = f"{role}:{secret}@{parts.hostname}:{parts.port}"
            return urlunsplit(parts._replace(netloc=netloc))

        with psycopg.connect(as_role(password)) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(as_role(password + "x"))
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
