"""The Neon API client, driven over HTTP against the emulator on a real PostgreSQL."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from pytest_neon.api import NeonClient
from pytest_neon.api.retry import RetryPolicy
from pytest_neon.errors import (
    NeonAPIError,
    NeonAuthError,
    NeonConflictError,
    NeonNotFoundError,
    NeonTimeoutError,
)
from pytest_neon.local.emulator import Emulator

FAST_RETRY = RetryPolicy(max_attempts=4, max_elapsed=5.0, base_delay=0.01, max_delay=0.05)


def _client(emu: Emulator, **kwargs: object) -> NeonClient:
    return NeonClient(emu.api_key or "", api_host=emu.api_host, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def emu(postgres_url: str) -> Iterator[Emulator]:
    """A fresh emulated project, dropped at the end of the test."""
    with Emulator(postgres_url, api_key="client-test-key-123") as e:
        yield e
        e.stop(drop=True)


def _unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


def test_branch_lifecycle(emu: Emulator) -> None:
    client = _client(emu)
    pid = emu.project_id
    assert client.get_project(pid).id == pid
    branches = client.list_branches(pid)
    main = [b for b in branches if b.default]
    assert len(main) == 1
    assert main[0].id == emu.default_branch_id

    expires = datetime.now(UTC) + timedelta(minutes=10)
    created = client.create_branch(
        pid,
        name="pytest-neon-client-a",
        parent_id=emu.default_branch_id,
        expires_at=expires,
        annotations={"created-by": "pytest-neon"},
    )
    endpoint = client.settle(pid, created)
    assert created.branch.parent_id == emu.default_branch_id
    assert endpoint.branch_id == created.branch.id
    assert created.branch.expires_at is not None
    assert abs((created.branch.expires_at - expires).total_seconds()) < 2

    fetched = client.get_branch(pid, created.branch.id)
    assert fetched.name == "pytest-neon-client-a"
    assert fetched.annotations == {"created-by": "pytest-neon"}
    assert [b.id for b in client.list_branches(pid, search="client-a")] == [created.branch.id]
    assert [e.id for e in client.list_branch_endpoints(pid, created.branch.id)] == [endpoint.id]

    password = client.reveal_password(pid, created.branch.id, "neondb_owner")
    uri = client.connection_uri(
        pid, branch_id=created.branch.id, database_name="neondb", role_name="neondb_owner"
    )
    assert password
    with psycopg.connect(uri) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")

    restored = client.restore_branch(pid, created.branch.id, source_branch_id=emu.default_branch_id)
    client.wait_for_operations(pid, restored.operations)
    assert (
        client.connection_uri(
            pid, branch_id=created.branch.id, database_name="neondb", role_name="neondb_owner"
        )
        == uri
    )
    with psycopg.connect(uri) as conn:
        exists = conn.execute("SELECT to_regclass('t') IS NOT NULL").fetchone()
    assert exists == (False,)

    ops = client.delete_branch(pid, created.branch.id)
    client.wait_for_operations(pid, ops)
    assert client.delete_branch(pid, created.branch.id) == ()
    with pytest.raises(NeonNotFoundError) as info:
        client.get_branch(pid, created.branch.id)
    assert info.value.status == 404


def test_list_branches_reads_every_page(emu: Emulator) -> None:
    client = _client(emu)
    pid = emu.project_id
    names = {f"pytest-neon-page-{i:03d}" for i in range(105)}
    for name in sorted(names):
        client.create_branch(pid, name=name, parent_id=emu.default_branch_id, endpoint=False)
    listed = {b.name for b in client.list_branches(pid)}
    assert names <= listed
    assert client.stats.by_call["list_branches"] >= 2  # more than one page was read


def test_operations_are_waited_for(postgres_url: str) -> None:
    with Emulator(postgres_url, api_key="client-test-key-123", operation_delay=1.0) as emu:
        client = _client(emu)
        created = client.create_branch(emu.project_id, name="slow", parent_id=emu.default_branch_id)
        assert any(not op.done for op in created.operations)
        t0 = time.monotonic()
        client.settle(emu.project_id, created)
        assert time.monotonic() - t0 >= 0.5
        assert client.get_branch(emu.project_id, created.branch.id).current_state == "ready"
        assert client.stats.by_call.get("get_operation", 0) >= 1
        emu.stop(drop=True)


def test_423_is_retried_until_the_running_operation_ends(postgres_url: str) -> None:
    with Emulator(postgres_url, api_key="client-test-key-123", operation_delay=1.0) as emu:
        client = _client(emu, retry=RetryPolicy(max_elapsed=10.0, base_delay=0.05))
        created = client.create_branch(emu.project_id, name="busy", parent_id=emu.default_branch_id)
        # The create operations are still running: the restore is refused with 423 at first.
        restored = client.restore_branch(
            emu.project_id, created.branch.id, source_branch_id=emu.default_branch_id
        )
        assert client.stats.retries >= 1
        assert restored.branch.id == created.branch.id
        emu.stop(drop=True)


def test_429_honours_retry_after(postgres_url: str) -> None:
    with Emulator(postgres_url, api_key="client-test-key-123", rate_limit=3) as emu:
        client = _client(emu, retry=RetryPolicy(max_elapsed=20.0))
        for _ in range(8):
            client.get_project(emu.project_id)
        assert client.stats.retries >= 1
        emu.stop(drop=True)


def test_random_503_and_423_are_retried(postgres_url: str) -> None:
    with Emulator(postgres_url, api_key="client-test-key-123", fail_rate=0.5, seed=7) as emu:
        client = _client(emu, retry=RetryPolicy(max_attempts=12, base_delay=0.01, max_delay=0.05))
        ids = []
        for i in range(6):
            created = client.create_branch(
                emu.project_id, name=f"flaky-{i}", parent_id=emu.default_branch_id
            )
            ids.append(created.branch.id)
        for branch_id in ids:
            client.delete_branch(emu.project_id, branch_id)
        assert client.stats.retries >= 1
        remaining = {b.id for b in client.list_branches(emu.project_id)}
        assert not remaining & set(ids)
        emu.stop(drop=True)


def test_persistent_failure_gives_up_with_a_clear_error(postgres_url: str) -> None:
    with Emulator(postgres_url, api_key="client-test-key-123", fail_rate=1.0, seed=1) as emu:
        client = _client(emu, retry=FAST_RETRY)
        with pytest.raises(NeonAPIError) as info:
            client.create_branch(emu.project_id, name="never", parent_id=emu.default_branch_id)
        assert info.value.status in (423, 503)
        assert "gave up after 4 attempts" in str(info.value)
        assert client.stats.by_call["create_branch"] == 4
        emu.stop(drop=True)


def test_errors_are_typed_and_keep_neon_details(emu: Emulator) -> None:
    client = _client(emu)
    with pytest.raises(NeonNotFoundError) as missing:
        client.get_branch(emu.project_id, "br-no-such-00000000")
    assert missing.value.status == 404
    assert missing.value.neon_message
    assert missing.value.path.endswith("/branches/br-no-such-00000000")

    client.create_branch(emu.project_id, name="twice", parent_id=emu.default_branch_id)
    with pytest.raises(NeonConflictError) as dup:
        client.create_branch(emu.project_id, name="twice", parent_id=emu.default_branch_id)
    assert dup.value.status == 409
    assert client.stats.by_call["create_branch"] == 2  # a 409 is not retried


def test_refused_key_says_where_it_came_from(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pytest_neon.api")
    client = NeonClient("wrong-key-987654", api_host=emu.api_host, key_source="--neon-api-key")
    with pytest.raises(NeonAuthError) as info:
        client.get_project(emu.project_id)
    text = str(info.value)
    assert info.value.status == 401
    assert "--neon-api-key" in text
    assert "wrong-key-987654" not in text
    assert "wrong-key-987654" not in caplog.text
    assert client.stats.by_call["get_project"] == 1


class _ResettingServer:
    """A TCP listener that accepts and immediately drops connections, like a broken network."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/api/v2"

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(2)


def test_connection_resets_are_retried_then_reported() -> None:
    server = _ResettingServer()
    try:
        client = NeonClient("secret-key-abcdef", api_host=server.url, retry=FAST_RETRY)
        with pytest.raises(NeonTimeoutError) as info:
            client.get_project("proj-1")
        assert server.accepted == 4
        assert "4 times" in str(info.value)
        assert "NEON_API_HOST" in str(info.value)
        assert "secret-key-abcdef" not in str(info.value)
    finally:
        server.close()


def test_hung_server_times_out_and_is_retried() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # accepts at the TCP level, never answers
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/api/v2"
        client = NeonClient("k-123456", api_host=url, timeout=(0.5, 0.2), retry=FAST_RETRY)
        t0 = time.monotonic()
        with pytest.raises(NeonTimeoutError):
            client.get_project("proj-1")
        assert time.monotonic() - t0 < 5
        assert client.stats.by_call["get_project"] == 4
    finally:
        sock.close()


def test_connection_uri_password_is_registered_as_secret(emu: Emulator) -> None:
    from pytest_neon.redact import redact

    client = _client(emu)
    uri = client.connection_uri(
        emu.project_id,
        branch_id=emu.default_branch_id,
        database_name="neondb",
        role_name="neondb_owner",
    )
    password = client.reveal_password(emu.project_id, emu.default_branch_id, "neondb_owner")
    assert password not in redact(f"failed: {uri} and {password}")
