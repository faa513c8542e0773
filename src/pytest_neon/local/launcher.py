"""Start a throwaway PostgreSQL for tests: from system binaries, else from the pip package.

The data directory is a new ``pytest-neon-pg-*`` directory (in RAM on Linux when there is
room, else in the temp dir); ``initdb`` sets a generated superuser password; the server is
tuned for tests and serves on 127.0.0.1 (see :mod:`pytest_neon.local.cluster`). As root,
the server runs as the ``postgres`` user, or, with no such user, as the package's own user.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pytest_neon.errors import NeonConfigError
from pytest_neon.local import SUPERUSER
from pytest_neon.local.binaries import find_pg_bindir
from pytest_neon.local.cluster import Cluster, RunningPostgres, track
from pytest_neon.local.pip_package import PostgresPackage, find_package, import_package
from pytest_neon.local.run_as import (
    RUN_AS_USER,
    OsUser,
    ensure_traversable,
    is_root,
    unprivileged_user,
    user_named,
)
from pytest_neon.local.space import default_base_dir
from pytest_neon.local.unavailable import PostgresUnavailableError, one_line, redacted_tail
from pytest_neon.redact import register_secret

_TMP_PREFIX = "pytest-neon-pg-"

_INSTALL_HINT = (
    'install one with `pip install "pytest-neon[local]"` (a bundled PostgreSQL) or a '
    "PostgreSQL server package (e.g. `apt-get install postgresql`), or set "
    "NEON_LOCAL_POSTGRES_URL / --neon-local-postgres-url to a server you have"
)

_package_lock = threading.Lock()


def _make_root(base_dir: Path | None, run_as: OsUser | None) -> Path:
    if base_dir is None:
        base_dir = default_base_dir()
    if base_dir is not None:
        base_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=base_dir)).resolve()
    if run_as is not None:
        try:
            os.chown(root, run_as.uid, run_as.gid)
            ensure_traversable(root, run_as)
        except OSError as exc:
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresUnavailableError(
                f"cannot prepare {root} for user {run_as.name}: {exc}"
            ) from None
    return root


def _postgres_major(data_dir: Path) -> str:
    try:
        return (data_dir / "PG_VERSION").read_text().strip()
    except OSError:
        return "?"


def _start_system(
    bindir: Path,
    run_as: OsUser | None,
    base_dir: Path | None,
    timeout: float,
    label: str | None = None,
) -> RunningPostgres:
    """Our own cluster from the binaries in ``bindir`` (``label`` names where they come from)."""
    deadline = time.monotonic() + timeout
    cluster = Cluster(_make_root(base_dir, run_as), bindir, run_as)
    track(cluster)
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
            args = ["initdb", "-D", str(cluster.data_dir), "-U", SUPERUSER]
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
            output = redacted_tail(proc.stdout)
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


def _start_package(
    package: PostgresPackage, base_dir: Path | None, timeout: float
) -> RunningPostgres:
    """Start the package's PostgreSQL: with our own cluster code, as the ``postgres`` user
    when we are root; as root with no such user, through the package's ``get_server``."""
    run_as = unprivileged_user() if is_root() else None
    if not is_root() or run_as is not None:
        if run_as is not None:
            try:
                ensure_traversable(package.bindir, run_as)
            except OSError as exc:
                raise PostgresUnavailableError(
                    f"user {run_as.name} cannot reach {package.bindir}: {exc}"
                ) from None
        return _start_system(package.bindir, run_as, base_dir, timeout, label=package.label)
    return _start_as_package_user(package, base_dir, timeout)


def _start_as_package_user(
    package: PostgresPackage, base_dir: Path | None, timeout: float
) -> RunningPostgres:
    """Let the package create the cluster as a user of its own (we are root and there is no
    ``postgres`` user), then restart it our way.

    The package serves on a unix socket with trust auth only; we set a password, add the
    tuning and restart the server on a TCP port under our own control (so ``stop()`` is
    ours too: the package tracks only the postmaster it started itself).
    """
    deadline = time.monotonic() + timeout
    module = import_package(package)
    root = _make_root(base_dir, None)
    cluster = Cluster(root, package.bindir, None)
    cluster.source = package.label
    track(cluster)
    try:
        url = _take_over_package_cluster(module, package, cluster, deadline)
    except PostgresUnavailableError:
        cluster.stop()
        raise
    except Exception as exc:
        cluster.stop()
        raise PostgresUnavailableError(
            f"{package.label} could not start PostgreSQL: {type(exc).__name__}: "
            f"{one_line(str(exc))}"
        ) from exc
    except BaseException:
        cluster.stop()
        raise
    return RunningPostgres(url, cluster.source, cluster.data_dir, cluster)


def _take_over_package_cluster(
    module: Any, package: PostgresPackage, cluster: Cluster, deadline: float
) -> str:
    """Have the package make and start the cluster, give its superuser a password, stop it
    and start it again our way; return the superuser URL."""
    with _package_lock, warnings.catch_warnings():
        # (the lock: the package's inter-process file lock is not thread-safe)
        warnings.simplefilter("ignore")
        server = module.get_server(cluster.data_dir, cleanup_mode=None)
    cluster.package_handle = server
    system_user = getattr(server, "system_user", None)
    if system_user:
        cluster.run_as = user_named(system_user)
        cluster.source += f" (run as user {system_user})"
    cluster.source += f", PostgreSQL {_postgres_major(cluster.data_dir)}"

    password = secrets.token_urlsafe(24)
    register_secret(password)
    _set_superuser_password(server.get_uri(), password)
    stop = ["pg_ctl", "-D", str(cluster.data_dir), "-m", "fast", "-w", "-t", "30", "stop"]
    proc = cluster.run(stop, timeout=40)
    if proc.returncode != 0:
        raise cluster.failure(f"could not restart {package.label}: {one_line(proc.stdout)}")

    hba = (
        "local all all trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
        "host all all ::1/128 scram-sha-256\n"
    )
    (cluster.data_dir / "pg_hba.conf").write_text(hba)
    cluster.write_config()
    if cluster.run_as is not None:
        cluster.give_to_run_as(cluster.root)
        cluster.root.chmod(0o700)
    return cluster.start(password, deadline)


def _set_superuser_password(uri: str, password: str) -> None:
    """Set the superuser's password (sent as a SCRAM verifier) through ``uri``."""
    import psycopg
    from psycopg import sql

    from pytest_neon.local.emulator.scram_keys import verifier

    with psycopg.connect(uri, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(SUPERUSER), sql.Literal(verifier(password))
            )
        )


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
        run_as = unprivileged_user() if is_root() else None
        if bindir is None:
            problem = "no PostgreSQL server binaries (initdb, postgres, pg_ctl) found"
        elif is_root() and run_as is None and package is None:
            problem = f"running as root and no {RUN_AS_USER!r} user to run {bindir}/postgres as"
        elif not (is_root() and run_as is None):
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
