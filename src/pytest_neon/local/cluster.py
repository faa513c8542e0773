"""The throwaway PostgreSQL cluster: a data directory under a private temp dir, and the server
running on it.

The server is tuned for tests (no fsync, 300 connections), listens on 127.0.0.1 only with a
generated superuser password, keeps its unix socket in a private directory, and is stopped
and deleted by :meth:`RunningPostgres.stop` or, failing that, when the interpreter exits.
:mod:`pytest_neon.local.launcher` makes and starts one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from pytest_neon.local import DATA_DIR, SUPERUSER
from pytest_neon.local.processes import (
    child_env,
    child_pids,
    pid_alive,
    pids_mentioning,
    read_postmaster_pid,
)
from pytest_neon.local.run_as import OsUser
from pytest_neon.local.unavailable import PostgresUnavailableError, one_line, redacted_tail
from pytest_neon.redact import redact

_PORT_ATTEMPTS = 5
_STOP_TIMEOUT = 15.0
# sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS), NUL included.
_MAX_SOCKET_PATH = 100

# Durability is worthless for a throwaway test server; connections are not (xdist workers
# times the connections each test opens).
_TUNING = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "300",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "unix_socket_permissions": "0700",
    # Every database clone forces a checkpoint, which may remove the WAL a write check has
    # yet to read (a check that cannot read it counts as written: a needless reset).
    "wal_keep_size": "'256MB'",
    # Shared memory segments in the data directory: an immediate stop leaves POSIX ones
    # behind in /dev/shm, these go with the directory.
    "dynamic_shared_memory_type": "mmap",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _conf_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


_live: dict[int, Cluster] = {}
_live_lock = threading.Lock()
_atexit_registered = False
_package_lock = threading.Lock()


def _stop_all_at_exit() -> None:
    with _live_lock:
        clusters = list(_live.values())
    for cluster in clusters:
        if cluster.owner_pid == os.getpid():  # not in a forked child
            with contextlib.suppress(Exception):
                cluster.stop()


def track(cluster: Cluster) -> None:
    global _atexit_registered
    with _live_lock:
        _live[id(cluster)] = cluster
        if not _atexit_registered:
            atexit.register(_stop_all_at_exit)
            _atexit_registered = True


class Cluster:
    """A data directory under a private temp dir, and the server running on it."""

    def __init__(self, root: Path, bindir: Path, run_as: OsUser | None) -> None:
        self.root = root
        self.data_dir = root / DATA_DIR
        self.log_file = root / "postgres.log"
        self.bindir = bindir
        self.run_as = run_as
        self.owner_pid = os.getpid()
        self.source = ""
        self.package_handle: Any = None
        self._lock = threading.Lock()
        self._stopped = False

    # -- helpers

    def run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program as the cluster's user, output captured."""
        user: dict[str, Any] = {}
        if self.run_as is not None:
            user = {"user": self.run_as.uid, "group": self.run_as.gid, "extra_groups": []}
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            env=child_env(),
            cwd=self.root,
            check=False,
            **user,
        )

    def give_to_run_as(self, path: Path) -> None:
        if self.run_as is not None:
            os.chown(path, self.run_as.uid, self.run_as.gid)

    def log_tail(self, offset: int = 0) -> str:
        try:
            with self.log_file.open("rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no server log)"
        return redacted_tail(text) if text.strip() else "(server log is empty)"

    def log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def socket_dir(self) -> str:
        if len(str(self.root)) + len("/.s.PGSQL.65535.lock") > _MAX_SOCKET_PATH:
            return ""  # path too long for a unix socket: TCP only
        return str(self.root)

    def write_config(self, *, kept: bool = False) -> None:
        """Append the test tuning to ``postgresql.conf``."""
        settings = dict(_TUNING, unix_socket_directories=_conf_quote(self.socket_dir()))
        block = "".join(f"{k} = {v}\n" for k, v in settings.items())
        what = "kept local test server" if kept else "throwaway test server"
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\n# pytest-neon: {what}\n{block}")

    # -- start

    def start(self, password: str, deadline: float) -> str:
        """Start the server on a free port; return its superuser URL once it accepts logins."""
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = free_port()
            proc, offset = self.pg_ctl_start(port, deadline)
            if proc.returncode == 0:
                secret = quote(password, safe="")
                url = f"postgresql://{SUPERUSER}:{secret}@127.0.0.1:{port}/postgres"
                self.wait_accepting(url, deadline, offset)
                return url
            tail = self.log_tail(offset)
            pid = read_postmaster_pid(self.data_dir)
            port_taken = "Address already in use" in tail or "Address already in use" in (
                proc.stdout or ""
            )
            if port_taken and attempt < _PORT_ATTEMPTS and not (pid and pid_alive(pid)):
                continue  # another process took the port between our probe and the bind
            raise self.failure(
                f"pg_ctl start exited with {proc.returncode}: {one_line(proc.stdout or '')}",
                offset,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def pg_ctl_start(
        self, port: int, deadline: float
    ) -> tuple[subprocess.CompletedProcess[str], int]:
        """Run ``pg_ctl start`` on ``port``: its result, and the log's size before it (a
        hang or a missing ``pg_ctl`` raises)."""
        offset = self.log_size()
        wait = max(1, int(deadline - time.monotonic()))
        args = ["pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file)]
        args += ["-w", "-t", str(wait), "-o", f"-p {port}", "start"]
        try:
            return self.run(args, timeout=wait + 10), offset
        except subprocess.TimeoutExpired:
            raise self.failure(f"pg_ctl start did not return within {wait} s", offset) from None
        except OSError as exc:
            raise self.failure(f"cannot run {self.bindir / 'pg_ctl'}: {exc}") from None

    def wait_accepting(self, url: str, deadline: float, log_offset: int) -> None:
        import psycopg

        while True:
            try:
                with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.Error as exc:
                if time.monotonic() >= deadline:
                    reason = one_line(str(exc))
                    what = f"it does not accept connections: {reason}"
                    raise self.failure(what, log_offset) from None
                time.sleep(0.05)

    def failure(self, what: str, log_offset: int = 0) -> PostgresUnavailableError:
        return PostgresUnavailableError(
            f"PostgreSQL ({self.source}) did not start: {what}\n"
            f"Server log {self.log_file} ends with:\n{self.log_tail(log_offset)}"
        )

    # -- stop

    def stop(self) -> None:
        """Stop the server (immediate shutdown, then SIGKILL) and delete the temp dir."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        with _live_lock:
            _live.pop(id(self), None)
        try:
            self.stop_server()
        finally:
            if self.package_handle is not None:
                # Drops it from the package's registry; the server was already stopped.
                with contextlib.suppress(Exception):
                    self.package_handle.cleanup()
            self._remove_root()

    def stop_server(self) -> None:
        """Stop the server (immediate shutdown, then SIGKILL of what is left)."""
        pid = read_postmaster_pid(self.data_dir)
        if pid is not None and pid_alive(pid):
            args = ["pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "-t", "10"]
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self.run([*args, "stop"], timeout=_STOP_TIMEOUT)
        # Whatever is left (pg_ctl failed, or start was interrupted before postmaster.pid
        # was written): SIGKILL the processes of this data dir, children first.
        uid = self.run_as.uid if self.run_as is not None else os.geteuid()
        victims = pids_mentioning(self.data_dir, uid)
        if pid is not None and pid_alive(pid):
            victims = [*child_pids(pid), pid, *victims]
        for victim in victims:
            with contextlib.suppress(OSError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while any(pid_alive(v) for v in victims) and time.monotonic() < deadline:
            time.sleep(0.02)

    def _remove_root(self) -> None:
        for _ in range(20):
            shutil.rmtree(self.root, ignore_errors=True)
            if not self.root.exists():
                return
            time.sleep(0.05)  # a dying backend may still be writing a file


@dataclass(eq=False, repr=False)
class RunningPostgres:
    """A PostgreSQL server for the tests; :meth:`stop` stops it and deletes its files.

    ``url`` is a superuser DSN over TCP (the password URL-encoded), ``source`` says where the
    server comes from, ``data_dir`` is its data directory (``None`` for a server we did not
    start, whose ``stop()`` does nothing).
    """

    url: str
    source: str
    data_dir: Path | None
    _cluster: Cluster | None = field(default=None, compare=False)

    def stop(self) -> None:
        """Stop the server and remove its data directory; safe to call more than once."""
        if self._cluster is not None:
            self._cluster.stop()

    def cleanup_plan(self) -> dict[str, Any] | None:
        """What another process needs to stop this server and remove its files, if ours."""
        cluster = self._cluster
        if cluster is None:
            return None
        run_as = cluster.run_as
        return {
            "kind": "cluster",
            "root": str(cluster.root),
            "bindir": str(cluster.bindir),
            "run_as": [run_as.name, run_as.uid, run_as.gid] if run_as else None,
        }

    def __enter__(self) -> RunningPostgres:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"RunningPostgres(url={redact(self.url)!r}, source={self.source!r}, "
            f"data_dir={self.data_dir!r})"
        )


def remove_cluster(plan: Mapping[str, Any]) -> None:
    """Stop the server of :meth:`RunningPostgres.cleanup_plan` and delete its directory."""
    run_as = plan.get("run_as")
    user = OsUser(str(run_as[0]), int(run_as[1]), int(run_as[2])) if run_as else None
    cluster = Cluster(Path(plan["root"]), Path(plan["bindir"]), user)
    if cluster.root.exists():
        cluster.stop()
