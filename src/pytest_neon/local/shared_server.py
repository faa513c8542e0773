"""The kept local PostgreSQL: one server per user, started by the first run that needs it,
reused by the next ones and stopped by its watchdog once nobody used it for a while.

Its directory (``--neon-local-dir``, default the user's cache directory, on disk) holds the
data directory, the server log and a stamp saying which plugin version and binaries made
it. A server made by another version or other binaries, or one that does not start, is
removed and made again: it is never trusted. The superuser has no known password: the
plugin reaches it over the Unix socket in that directory (only its owner can enter it),
so no password is ever written anywhere. Runs share the server; each run's databases are
its own emulated project, dropped at its end, and a killed run's are dropped by the next
run or the watchdog (:mod:`pytest_neon.local.dead_runs`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

from pytest_neon.file_lock import exclusive
from pytest_neon.local import DATA_DIR, SUPERUSER
from pytest_neon.local.binaries import find_pg_bindir, has_server_binaries
from pytest_neon.local.processes import (
    detached_alive,
    pid_alive,
    pid_exists,
    read_postmaster_pid,
)
from pytest_neon.local.unavailable import PostgresUnavailableError, one_line, redacted_tail

# What starts or makes a server loads with it: a run that finds the server running needs
# none of it (the clusters, the pip-installed PostgreSQL, the user to run it as).
if TYPE_CHECKING:
    from pytest_neon.local.cluster import Cluster
    from pytest_neon.local.run_as import OsUser

STAMP = "pytest-neon.json"
LOCK = "lock"
IDLE_FILE = "idle_timeout"
LAST_USE = "last_use"  # touched by every run that counts on the server
WATCHDOG_PID = "watchdog.pid"
SWEEP_REQUEST = "sweep"  # a run that ended asks the watchdog to drop its project now
READY_REQUEST = "ready"  # a run that parked its project asks the watchdog to make it ready
LAYOUT = 1  # bump when the directory's layout or the server's settings change
_MAX_SOCKET_DIR = 100 - len("/.s.PGSQL.65535")
_LOCK_WAIT = 120.0
TABLESPACE = "pytest_neon_ram"


class SharedServerUnavailable(PostgresUnavailableError):
    """The kept server cannot be used here (the run falls back to a throwaway cluster)."""


class KeptServer(NamedTuple):
    """Where the kept local PostgreSQL lives and how long it waits unused."""

    root: Path
    idle_timeout: int


class SharedServer(NamedTuple):
    """The kept server, running: ``url`` is a superuser DSN over its Unix socket;
    ``tablespace`` (in RAM) holds the runs' databases, when there is room for it."""

    root: Path
    url: str
    port: int
    source: str
    reused: bool
    tablespace: str | None = None
    ram_dir: Path | None = None

    @property
    def description(self) -> str:
        """One line for the header."""
        how = "reused" if self.reused else "started"
        where = f"; branches in RAM ({self.ram_dir})" if self.ram_dir else "; branches on disk"
        return f"kept local PostgreSQL in {self.root} ({how}; {self.source}{where})"


def socket_url(root: Path, port: int) -> str:
    """The superuser DSN over the Unix socket in ``root`` (trust: no password)."""
    return f"postgresql://{SUPERUSER}@/postgres?host={quote(str(root), safe='/')}&port={port}"


def _binaries(source: str) -> tuple[Path, str]:
    """Server binaries for the kept server, and where they come from."""
    if source in ("auto", "system"):
        bindir = find_pg_bindir()
        if bindir is not None:
            return bindir, f"system binaries in {bindir}"
    if source in ("auto", "package"):
        from pytest_neon.local.pip_package import find_package

        package = find_package()
        if package is not None:
            return package.bindir, package.label
    raise SharedServerUnavailable("no PostgreSQL server binaries for a kept local server")


def _run_as() -> OsUser | None:
    from pytest_neon.local.run_as import is_root, unprivileged_user

    if not is_root():
        return None
    user = unprivileged_user()
    if user is None:
        raise SharedServerUnavailable("running as root and no 'postgres' user to run the server")
    return user


@contextlib.contextmanager
def locked(root: Path, wait: float = _LOCK_WAIT) -> Iterator[None]:
    """Hold the directory's lock (one process starts, stops or checks the server at a time)."""
    if sys.platform == "win32":
        raise SharedServerUnavailable("no file locks on this platform")

    def busy() -> Exception:
        return SharedServerUnavailable(f"{root} stayed locked by another process for {wait:.0f} s")

    with exclusive(root / LOCK, timeout=wait, busy=busy):
        yield


def read_stamp(root: Path) -> dict[str, Any]:
    """What made the server in ``root`` (empty when unknown)."""
    try:
        data = json.loads((root / STAMP).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _identity(bindir: Path, run_as: OsUser | None) -> dict[str, Any]:
    from pytest_neon import __version__

    return {
        "layout": LAYOUT,
        "plugin": __version__,
        "bindir": str(bindir),
        "run_as": [run_as.name, run_as.uid, run_as.gid] if run_as else None,
    }


def _prepare_root(root: Path, run_as: OsUser | None) -> None:
    if len(os.fsencode(root)) > _MAX_SOCKET_DIR:  # (bytes: a non-ASCII home too)
        raise SharedServerUnavailable(
            f"{root} is too long for a Unix socket path: set NEON_LOCAL_DIR "
            "(--neon-local-dir) to a shorter directory"
        )
    root.mkdir(parents=True, exist_ok=True)
    if run_as is not None:
        from pytest_neon.local.run_as import ensure_traversable

        os.chown(root, run_as.uid, run_as.gid)
        try:
            ensure_traversable(root, run_as)
        except OSError as exc:
            raise SharedServerUnavailable(
                f"user {run_as.name} cannot reach {root}: {exc}"
            ) from None
    root.chmod(0o700)


def ensure_shared_server(
    root: Path,
    *,
    source: str = "auto",
    idle_timeout: int = 600,
    timeout: float = 60.0,
    port: int | None = None,
) -> SharedServer:
    """The kept server in ``root``: reused when it runs and is ours, else (re)started
    (on ``port`` when it is free: a run that named it in a connection string already).

    Raises :class:`SharedServerUnavailable` when a kept server is impossible here, or
    :class:`PostgresUnavailableError` when it does not start.
    """
    bindir, label = _binaries(source)
    run_as = _run_as()
    _prepare_root(root, run_as)
    identity = _identity(bindir, run_as)
    cluster = _cluster(root, bindir, run_as)
    deadline = time.monotonic() + timeout
    with locked(root):
        touch_last_use(root)
        wanted, port = port, running_port(cluster) if read_stamp(root) == identity else None
        # one connection says the server is up and sees to its RAM tablespace
        conn = _connect_if_up(socket_url(root, port)) if port is not None else None
        reused = conn is not None
        try:
            if not reused:
                port = None
                if read_stamp(root) == identity and (cluster.data_dir / "PG_VERSION").exists():
                    with contextlib.suppress(PostgresUnavailableError):
                        port = _start(cluster, deadline, wanted)
                if port is None:
                    _remake(cluster, deadline)
                    port = _start(cluster, deadline, wanted)
                (root / STAMP).write_text(json.dumps(identity))
            assert port is not None
            (root / IDLE_FILE).write_text(str(idle_timeout))
            _ensure_watchdog(root)
            url = socket_url(root, port)
            if conn is None:
                conn = _connect(url)
            ram_dir = ram_tablespace(conn, root, run_as)
        finally:
            if conn is not None:
                conn.close()
    major = _major(cluster.data_dir)
    return SharedServer(
        root,
        url,
        port,
        f"{label}, PostgreSQL {major}",
        reused,
        tablespace=TABLESPACE if ram_dir else None,
        ram_dir=ram_dir,
    )


def running_kept_port(root: Path) -> int | None:
    """The port of the kept server in ``root`` if it runs and this version of the plugin
    made it, its binaries still there (read from its files: no connection, no search)."""
    running = _running_kept(root)
    return running[1] if running is not None else None


def _running_kept(root: Path) -> tuple[Path, int] | None:
    """The binaries and port of the kept server in ``root``, as :func:`running_kept_port`."""
    from pytest_neon import __version__

    stamp = read_stamp(root)
    if stamp.get("layout") != LAYOUT or stamp.get("plugin") != __version__:
        return None
    bindir = Path(str(stamp.get("bindir")))
    if not stamp.get("bindir") or not has_server_binaries(bindir):
        return None
    port = _port_of(root / DATA_DIR)
    return (bindir, port) if port is not None else None


def attach_shared_server(root: Path, port: int, *, idle_timeout: int = 600) -> SharedServer | None:
    """The kept server in ``root`` that a run knows to answer on ``port`` (it has just
    worked on it: a parked project taken over), without the checks of
    :func:`ensure_shared_server`; ``None`` when its files say otherwise (then ensure it)."""
    running = _running_kept(root)
    if running is None or running[1] != port:
        return None
    bindir = running[0]
    ram_dir = ram_dir_of(root)
    if ram_dir is not None and not ram_dir.is_dir():
        return None  # the RAM tablespace needs making again
    with locked(root):
        touch_last_use(root)
        (root / IDLE_FILE).write_text(str(idle_timeout))
        _ensure_watchdog(root)
    return SharedServer(
        root,
        socket_url(root, port),
        port,
        f"binaries in {bindir}, PostgreSQL {_major(root / DATA_DIR)}",
        True,
        tablespace=TABLESPACE if ram_dir else None,
        ram_dir=ram_dir,
    )


def ram_dir_of(root: Path) -> Path | None:
    """Where the runs' databases of the kept server in ``root`` go in RAM (``None``: no
    RAM disk with room)."""
    from pytest_neon.local.space import default_base_dir

    base = default_base_dir()
    if base is None:
        return None
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    uid = os.geteuid() if hasattr(os, "geteuid") else 0
    return base / f"pytest-neon-{uid}-{digest}"


def ram_tablespace(conn: Any, root: Path, run_as: OsUser | None) -> Path | None:
    """Make sure the tablespace ``TABLESPACE`` is usable, in RAM; its directory, or
    ``None`` when there is no RAM disk (the databases then stay on disk). ``conn``: an
    autocommit superuser connection to the server.

    After a reboot the RAM directory is gone, and with it every database in it (those of
    runs that are over): they are dropped and the tablespace made again.
    """
    from psycopg import sql

    ram = ram_dir_of(root)
    row = conn.execute(
        "SELECT oid, pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = %s",
        (TABLESPACE,),
    ).fetchone()
    if row is not None:
        location = Path(row[1])
        if location == ram and any(location.glob("PG_*")):
            return ram
        lost = conn.execute(
            "SELECT datname FROM pg_database WHERE dattablespace = %s", (row[0],)
        ).fetchall()
        for (name,) in lost:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        conn.execute(sql.SQL("DROP TABLESPACE {}").format(sql.Identifier(TABLESPACE)))
    if ram is None:
        return None
    shutil.rmtree(ram, ignore_errors=True)
    ram.mkdir(mode=0o700)
    if run_as is not None:
        os.chown(ram, run_as.uid, run_as.gid)
    conn.execute(
        sql.SQL("CREATE TABLESPACE {} LOCATION {}").format(
            sql.Identifier(TABLESPACE), sql.Literal(str(ram))
        )
    )
    return ram


def _cluster(root: Path, bindir: Path, run_as: OsUser | None) -> Cluster:
    from pytest_neon.local.cluster import Cluster

    cluster = Cluster(root, bindir, run_as)
    cluster.source = "the kept local PostgreSQL"
    return cluster


def stamped_cluster(root: Path) -> Cluster | None:
    """The cluster in ``root`` as its stamp describes it (``None``: no stamp)."""
    stamp = read_stamp(root)
    if not stamp.get("bindir"):
        return None
    from pytest_neon.local.run_as import OsUser

    run_as = stamp.get("run_as")
    user = OsUser(str(run_as[0]), int(run_as[1]), int(run_as[2])) if run_as else None
    return _cluster(root, Path(stamp["bindir"]), user)


def _major(data_dir: Path) -> str:
    try:
        return (data_dir / "PG_VERSION").read_text().strip()
    except OSError:
        return "?"


def running_port(cluster: Cluster) -> int | None:
    """The port of the server running on ``cluster``'s data directory, if any."""
    return _port_of(cluster.data_dir)


def _port_of(data_dir: Path) -> int | None:
    pid = read_postmaster_pid(data_dir)
    if pid is None or not pid_exists(pid):  # (pg_ctl's postmaster is never our child)
        return None
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        return int(lines[3])
    except (OSError, IndexError, ValueError):
        return None


def _connect(url: str, timeout: int = 10) -> Any:
    import psycopg

    return psycopg.connect(url, connect_timeout=timeout, autocommit=True)


def _connect_if_up(url: str) -> Any:
    """A connection to the server at ``url`` if it accepts one, else ``None``."""
    import psycopg

    try:
        conn = _connect(url, timeout=5)
        conn.execute("SELECT 1")
    except psycopg.Error:
        return None
    return conn


def _remake(cluster: Cluster, deadline: float) -> None:
    """Stop whatever runs on the data directory, remove it and make a new cluster."""
    cluster.stop_server()
    shutil.rmtree(cluster.data_dir, ignore_errors=True)
    password = secrets.token_urlsafe(24)  # required by initdb, then forgotten
    pwfile = cluster.root / "pwfile"
    pwfile.unlink(missing_ok=True)
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    cluster.give_to_run_as(pwfile)
    try:
        args = ["initdb", "-D", str(cluster.data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}"]
        args += ["--auth-local=trust", "--auth-host=scram-sha-256"]
        args += ["--encoding=UTF8", "--locale=C", "--no-sync"]
        try:
            proc = cluster.run(args, timeout=max(5.0, deadline - time.monotonic()))
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostgresUnavailableError(f"initdb for the kept server failed: {exc}") from None
    finally:
        pwfile.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise PostgresUnavailableError(
            f"initdb for the kept server failed ({proc.returncode}):\n{redacted_tail(proc.stdout)}"
        )
    cluster.write_config(kept=True)


def touch_last_use(root: Path) -> None:
    """Note that a run counts on the server now (the watchdog waits that long too)."""
    with contextlib.suppress(OSError):
        (root / LAST_USE).touch()


def _port_is_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start(cluster: Cluster, deadline: float, wanted: int | None = None) -> int:
    """Start the server on ``wanted`` if free, else a free port; return the port once it
    accepts connections."""
    from pytest_neon.local.cluster import free_port

    port = wanted if wanted and _port_is_free(wanted) else free_port()
    proc, offset = cluster.pg_ctl_start(port, deadline)
    if proc.returncode != 0:
        raise cluster.failure(f"pg_ctl start: {one_line(proc.stdout or '')}", offset)
    cluster.wait_accepting(socket_url(cluster.root, port), deadline, offset)
    return port


def _ensure_watchdog(root: Path) -> None:
    """Start the idle watchdog of the server in ``root`` unless one runs."""
    from pytest_neon.local.watchdog_socket import SOCKET

    if watchdog_running(root):
        return
    with contextlib.suppress(OSError):  # an ended watchdog's: until the new one listens,
        (root / SOCKET).unlink()  # its pid tells whether it runs
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    quiet = [
        (os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0)  # type: ignore[attr-defined,unused-ignore]
        for fd in (0, 1, 2)
    ]
    # not a Popen: it outlives this process, which must not wait for it (or warn)
    pid = os.posix_spawn(  # type: ignore[attr-defined,unused-ignore]
        sys.executable,
        [sys.executable, "-m", "pytest_neon.local.idle_watchdog", str(root)],
        env,
        file_actions=quiet,
        setsid=True,
    )
    (root / WATCHDOG_PID).write_text(str(pid))


def hand_over_cleanup(root: Path) -> bool:
    """Ask the watchdog of the server in ``root`` to drop, within a second, what ended or
    killed runs left (and failing tests' data past its expiry); ``False`` when no
    watchdog runs, and the caller must clean up itself."""
    return ask_watchdog(root, SWEEP_REQUEST)


def ask_watchdog(root: Path, request: str) -> bool:
    """Ask the watchdog of the server in ``root`` for ``request`` (:data:`SWEEP_REQUEST`,
    :data:`READY_REQUEST`) over its socket, else leave it as a file it looks for;
    ``False`` when no watchdog runs."""
    from pytest_neon.local.watchdog_socket import send_request

    if send_request(root, request):
        return True
    if not watchdog_running(root):
        return False
    try:
        (root / request).touch()
    except OSError:
        return False
    return True


def watchdog_running(root: Path) -> bool:
    """Whether the watchdog of the server in ``root`` runs: its process exists and, if it
    made its socket, listens there (one that has ended but not been reaped yet by the
    run that started it still has a pid)."""
    from pytest_neon.local.watchdog_socket import listening

    try:
        pid = int((root / WATCHDOG_PID).read_text().strip())
    except (OSError, ValueError):
        return False
    return detached_alive(pid) and listening(root) is not False


def stop_shared_server(root: Path) -> bool:
    """Stop the kept server in ``root`` and its watchdog, and remove the directory.

    Returns whether there was anything to remove.
    """
    if not root.exists():
        return False
    with locked(root):
        with contextlib.suppress(OSError, ValueError):
            pid = int((root / WATCHDOG_PID).read_text().strip())
            if pid_alive(pid):
                os.kill(pid, 15)
        cluster = stamped_cluster(root)
        if cluster is not None:
            cluster.stop_server()
        ram = ram_dir_of(root)
        if ram is not None:
            shutil.rmtree(ram, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)  # the lock file, released above
    return True
