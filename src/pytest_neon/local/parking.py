"""A finished run's project, kept ready on the kept server for the next run of the same
project (*parked*), so that run starts with its branch migrated and no copy made.

At the end of a plain run on the kept local server whose migrated state came from the
migration cache, its project (the worker branch, brought back to the migrated state, and
the migration branch) is parked for the next run from the same directory with the same
database and role. When a test had the worker branch, the server's watchdog makes it a
new copy of the migration branch right after that run (:func:`make_ready`). The next run
*claims* the project before ``conftest.py`` is imported: its connection string names the
parked branch, with the new password the watchdog gave the login role (handed over by
:mod:`~pytest_neon.local.watchdog_socket`; else the run gives it one), and when its
fingerprint is the parked one, it makes no branch, copies nothing and restores nothing.
Otherwise it migrates as usual on the same project.

Files in ``<server directory>/parked`` (none holds a secret):

- ``place-<hash>.json``: a parked project, one per place (directory, database, role);
- ``claimed-<project id>.json``: a project claimed by a run, locked by it while it runs.

The server's sweep leaves both alone (:func:`protected_projects`), and drops a parked
project left for longer than :data:`PARK_SECONDS` or made by another plugin version, and
a claimed one whose run is gone. Not on Windows (no ``flock``): there nothing is parked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import psycopg

    from pytest_neon.local.emulator.sql.server import SqlServer
    from pytest_neon.local.watchdog_socket import WatchdogSocket

PARKED_DIR = "parked"
#: a parked project unclaimed for this long is dropped by the next sweep
PARK_SECONDS = 24 * 3600.0


class ParkedProject(NamedTuple):
    """What the next run needs to take a parked project over."""

    project_id: str
    worker_branch_id: str
    worker_endpoint_id: str
    migration_branch_id: str
    migration_endpoint_id: str
    parent_id: str  # the project's default branch
    database: str  # the worker branch's real database: the connection string names it
    migration_database: str  # the migration branch's real database
    owner: str  # the role the run's login acts as
    cache_key: str  # the migration cache's key of the migrated state both branches hold
    plugin: str  # the plugin version that parked it
    #: the worker branch is as the migrations left it (no test had it since its last
    #: reset): else the server's watchdog (or the run that claims it) makes it a new copy
    #: of the migration branch's
    fresh: bool = False
    #: the login of the run that parked it can log in no more (else the server's watchdog,
    #: or the run that claims it, sees to that)
    locked_out: bool = False
    #: the server's watchdog gave the login a new password, to hand to the run that claims
    #: the project (:mod:`~pytest_neon.local.watchdog_socket`)
    handed: bool = False
    #: its databases are in the kept server's RAM tablespace (else on disk)
    in_ram: bool = True
    parked_at: float = 0.0


def place_of(project_dir: Path, database: str, role: str) -> str:
    """The place a parked project is for: a project directory, with a database and role."""
    text = f"{project_dir.resolve()}\0{database}\0{role}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _dir(root: Path) -> Path:
    return root / PARKED_DIR


def _place_file(root: Path, place: str) -> Path:
    return _dir(root) / f"place-{place}.json"


def _claim_file(root: Path, project_id: str) -> Path:
    return _dir(root) / f"claimed-{project_id}.json"


def _read(path: Path) -> ParkedProject | None:
    try:
        return ParkedProject(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _try_lock(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its exclusive lock; ``None`` when another
    process holds it or the file is gone."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class Claim:
    """A parked project this run took over; its file stays locked while the run runs."""

    def __init__(self, root: Path, place: str, parked: ParkedProject, fd: int) -> None:
        self.root = root
        self.place = place
        self.parked = parked
        self._fd: int | None = fd

    @property
    def path(self) -> Path:
        """The claim's file."""
        return _claim_file(self.root, self.parked.project_id)

    def park_again(self, parked: ParkedProject | None = None) -> bool:
        """Park the project again (as claimed, or as ``parked`` now says); ``False`` when
        another run parked one for the place meanwhile, or the claim ended: it then just
        ends)."""
        if self._fd is None:
            return False
        # (this run's login was given a password: it is locked out again)
        done = park(self.root, self.place, parked or self.parked._replace(locked_out=False))
        self.end()
        return done

    def end(self) -> None:
        """The claim ends: the project is no longer protected from the sweep (unless it
        was parked again)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


def claim(root: Path, place: str) -> Claim | None:
    """Take over the project parked for ``place`` by a run of this plugin version, if any."""
    from pytest_neon import __version__

    if sys.platform == "win32":
        return None
    path = _place_file(root, place)
    if not path.exists():
        return None
    fd = _lock_place(path)
    if fd is None:
        return None
    parked = _read(path)
    if parked is None or parked.plugin != __version__ or _stale(parked):
        os.close(fd)  # the sweep drops it
        return None
    try:
        os.rename(path, _claim_file(root, parked.project_id))  # (the lock goes with it)
    except OSError:
        os.close(fd)
        return None
    return Claim(root, place, parked, fd)


def _lock_place(path: Path, patience: float = 5.0) -> int | None:
    """An open descriptor of the place file ``path`` holding its lock, waiting while the
    server's watchdog makes its branch ready (:func:`make_ready`); ``None`` when the file
    is gone, claimed (renamed) by another run meanwhile, or still locked after
    ``patience`` s."""
    deadline = time.monotonic() + patience
    while True:
        fd = _try_lock(path)
        if fd is not None:
            if _same_file(fd, path):
                return fd
            os.close(fd)  # claimed by another run between the open and the lock
            return None
        if not path.exists() or time.monotonic() > deadline:
            return None
        time.sleep(0.005)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == path.stat().st_ino
    except OSError:
        return False


def make_ready(
    root: Path, url: str, conn: psycopg.Connection[Any], keeper: WatchdogSocket | None = None
) -> None:
    """Make every parked project ready for the next run, as the server's watchdog does
    right after the run that parked it ends: a worker branch that a test had made a new
    copy of its migrated state (see :func:`refresh`), and the login of that run locked
    out, or given a new password that ``keeper`` hands to the next run (it forgets those
    of projects no longer parked). A run that claims one meanwhile waits for it; one that
    fails is no longer parked (the sweep drops it). ``conn``: the watchdog's autocommit
    superuser connection to the server at ``url``."""
    from pytest_neon import __version__

    if sys.platform == "win32":
        return
    with contextlib.suppress(FileNotFoundError):
        found = [(path, _read(path)) for path in sorted(_dir(root).glob("place-*.json"))]
        if keeper is not None:
            keeper.retain({parked.project_id for _, parked in found if parked is not None})
        for path, parked in found:
            if parked is None or _ready(parked, keeper) or parked.plugin != __version__:
                continue
            fd = _try_lock(path)
            if fd is None:
                continue
            try:
                now = _read(path)
                if now is None or _ready(now, keeper) or not _same_file(fd, path):
                    continue
                handed = _make_ready(root, url, conn, now, keeper)
                ready = now._replace(fresh=True, locked_out=True, handed=handed)
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(ready._asdict()).encode(), 0)
            except Exception:
                if keeper is not None:
                    keeper.forget(parked.project_id)
                with contextlib.suppress(OSError):
                    path.unlink()
            finally:
                os.close(fd)


def _make_ready(
    root: Path,
    url: str,
    conn: psycopg.Connection[Any],
    parked: ParkedProject,
    keeper: WatchdogSocket | None,
) -> bool:
    """Make ``parked`` ready (see :func:`make_ready`); whether ``keeper`` holds its
    login's new password."""
    from pytest_neon.local.lazy_start import lock_out_statement, login_role, password_statement
    from pytest_neon.local.shared_server import stamped_cluster

    def run(statement: str) -> None:
        conn.execute(statement.encode())  # (its text as is: no parameters)

    cluster = stamped_cluster(root)
    if cluster is None:
        raise RuntimeError("the kept server is not running")
    databases = (parked.database, parked.migration_database)
    password = secrets.token_urlsafe(24) if keeper is not None else None
    lock_out = lock_out_statement(parked.project_id)
    if password is not None:
        statement = password_statement(
            login_role(parked.project_id), password, parked.owner, databases
        )
        try:
            run(statement)  # (fails unless both databases are there)
        except Exception:
            if not parked.locked_out:  # the last run's password ends all the same
                with contextlib.suppress(Exception):
                    run(lock_out)
            raise
    elif not parked.locked_out:
        run(lock_out)
    if not parked.fresh:
        from pytest_neon.local.emulator.sql.server import SqlServer

        server = SqlServer(url, pool_size=1)
        try:
            refresh(server, parked)
        finally:
            server.close()
    if keeper is None or password is None:
        return False
    try:
        directories = _database_directories(conn, cluster.data_dir, databases)
    except Exception:  # (the run that claims it gives the login a password itself)
        return False
    return keeper.keep(parked.project_id, password, directories)


def _database_directories(
    conn: psycopg.Connection[Any], data_dir: Path, names: tuple[str, ...]
) -> tuple[Path, ...]:
    """Where the databases ``names`` keep their files (each must exist)."""
    rows = conn.execute(
        "SELECT oid, pg_tablespace_location(dattablespace) FROM pg_database"
        " WHERE datname = ANY(%s)",
        (list(names),),
    ).fetchall()
    if len(rows) != len(names):
        raise RuntimeError("a parked database is gone")
    return tuple(_database_directory(data_dir, oid, place) for oid, place in rows)


def _database_directory(data_dir: Path, oid: int, tablespace: str) -> Path:
    """Where a database's files are: under ``base``, or its tablespace's directory."""
    if not tablespace:
        return data_dir / "base" / str(oid)
    for version in Path(tablespace).glob("PG_*"):
        return version / str(oid)
    return Path(tablespace) / "missing" / str(oid)  # (never a directory: nothing handed)


def _ready(parked: ParkedProject, keeper: WatchdogSocket | None = None) -> bool:
    """Ready for the next run: with a watchdog, only if it holds the login's password
    (one restarted since holds none: it gives the login another)."""
    if not (parked.fresh and parked.locked_out):
        return False
    return keeper is None or (parked.handed and keeper.holds(parked.project_id))


def park(root: Path, place: str, parked: ParkedProject) -> bool:
    """Park ``parked`` for ``place``; ``False`` when one is parked there already."""
    if sys.platform == "win32":
        return False
    folder = _dir(root)
    folder.mkdir(mode=0o700, exist_ok=True)
    record = parked._replace(parked_at=time.time(), handed=False)
    temp = folder / f".{parked.project_id}.{os.getpid()}.tmp"
    temp.write_text(json.dumps(record._asdict()))
    try:
        os.link(temp, _place_file(root, place))  # never over another run's
    except FileExistsError:
        return False
    finally:
        temp.unlink()
    _hand_to_watchdog(root, parked)
    return True


def _hand_to_watchdog(root: Path, parked: ParkedProject) -> None:
    """Ask the server's watchdog to make a project just parked ready (:func:`make_ready`:
    a branch a test had copied anew, a new password for its login) while this run exits.
    With no watchdog, the login is locked out here; the run that claims the project next
    copies the branch."""
    from pytest_neon.local.shared_server import READY_REQUEST, ask_watchdog, running_kept_port

    if ask_watchdog(root, READY_REQUEST) or parked.locked_out:
        return
    from pytest_neon.local.lazy_start import lock_out_statement
    from pytest_neon.local.socket_statement import run_statement

    port = running_kept_port(root)
    if port is not None:
        with contextlib.suppress(Exception):  # (else the next claim does it)
            run_statement(root, port, lock_out_statement(parked.project_id))


def refresh(server: SqlServer, parked: ParkedProject) -> None:
    """Make the parked worker branch's database a new copy of the migration branch's, where
    it was (RAM or disk), as the emulator makes a branch's (``server``: the kept server's
    superuser; nobody is connected to either: only the server's watchdog knows the
    login's password while it is parked)."""
    from pytest_neon.local.emulator.sql.ownership import comment_for
    from pytest_neon.local.emulator.sql.real_databases import RealDatabases

    with server.connection() as conn:
        row = conn.execute(
            "SELECT t.spcname FROM pg_database d"
            " JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = %s",
            (parked.database,),
        ).fetchone()
    if row is None:
        raise RuntimeError(f"the parked branch's database {parked.database} is gone")
    server.tablespace = row[0]
    databases = RealDatabases(server)
    databases.drop(parked.database)
    databases.clone(
        parked.migration_database,
        parked.database,
        parked.owner,
        comment_for(parked.project_id),
        wait=5.0,
    )


def _stale(parked: ParkedProject) -> bool:
    return time.time() - parked.parked_at > PARK_SECONDS


def protected_projects(root: Path) -> set[str]:
    """The projects a sweep of the server in ``root`` must leave: parked ones, and those
    claimed by a live run. Parked ones too old or of another version, and claims whose run
    is gone, are forgotten here (their projects are then dropped as dead)."""
    from pytest_neon import __version__

    if sys.platform == "win32":
        return set()
    kept: set[str] = set()
    with contextlib.suppress(FileNotFoundError):
        for path in _dir(root).iterdir():
            name = path.name
            if name.startswith("."):  # a parked file being written (or a killed run's)
                if time.time() - _mtime(path) > 60:
                    with contextlib.suppress(OSError):
                        path.unlink()
                continue
            if name.startswith("place-"):
                parked = _read(path)
                project_id = parked.project_id if parked is not None else None
                if parked is not None and parked.plugin == __version__ and not _stale(parked):
                    kept.add(parked.project_id)
                    continue
            elif name.startswith("claimed-"):
                project_id = name[len("claimed-") : -len(".json")]
            else:
                continue
            if not _remove_unless_held(path) and project_id is not None:
                kept.add(project_id)  # a run holds it: alive, or being claimed
        # a claim made while the folder was read (a parked file renamed) is kept too
        kept |= {p.name[len("claimed-") : -len(".json")] for p in _dir(root).glob("claimed-*")}
    return kept


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _remove_unless_held(path: Path) -> bool:
    """Remove ``path`` unless a run holds its lock; whether it is gone."""
    fd = _try_lock(path)
    if fd is None:
        return not path.exists()
    try:
        with contextlib.suppress(OSError):
            path.unlink()
    finally:
        os.close(fd)
    return True
