"""pytest-xdist support: who is a worker, the controller's hand-off, the run's directory.

The controller publishes a small JSON hand-off in the environment before workers start
(workers inherit it); a worker trusts it only when the controller is its parent process,
so a pytest started from inside a test never picks up an outer run's hand-off. The
processes of a run share a directory (the migration gate's lock and state live there);
it holds branch ids, never secrets.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger("pytest_neon.xdist")

HANDOFF_ENV = "PYTEST_NEON_HANDOFF"
WORKER_ENV = "PYTEST_XDIST_WORKER"


class Handoff(NamedTuple):
    """What a controller tells its workers before they start."""

    controller_pid: int
    run_id: str
    api_host: str | None = None  # set when the controller runs the local backend
    project_id: str | None = None
    api_key: str | None = None
    inspector_url: str | None = None  # local backend: superuser DSN for pg_walinspect
    parent_id: str | None = None  # the branch test branches come from, looked up once
    cache_url: str | None = None  # kept local server: superuser DSN of the migration cache
    branches: dict[str, str] | None = None  # Neon: branch ids made for the workers
    worker_branches: int | None = None  # Neon: branches each worker takes turns on

    def publish(self) -> None:
        """Put the hand-off in this process's environment, for workers to inherit."""
        os.environ[HANDOFF_ENV] = json.dumps(self._asdict())


def worker_id() -> str | None:
    """This process's xdist worker id (``gw0``…), or ``None`` outside a worker."""
    return os.environ.get(WORKER_ENV) or None


def read_handoff() -> Handoff | None:
    """The hand-off of this worker's own controller, if there is one."""
    raw = os.environ.get(HANDOFF_ENV)
    if not raw or worker_id() is None:
        return None
    try:
        data: dict[str, Any] = json.loads(raw)
        handoff = Handoff(**data)
    except (ValueError, TypeError):
        return None
    return handoff if handoff.controller_pid == os.getppid() else None


def new_run_id() -> str:
    """A short id that makes this run's branch names unique."""
    return secrets.token_hex(4)


_RUN_DIR = re.compile(r"^pytest-neon-[0-9a-f]{8}$")
STALE_RUN_DIR_SECONDS = 86400.0
_OWNER = "owner.pid"  # the pid of the run's controller (or only) process


def coordination_path(run_id: str) -> Path:
    """Where run ``run_id``'s shared directory is (it may not exist)."""
    return Path(tempfile.gettempdir()) / f"pytest-neon-{run_id}"


def claim_coordination_dir(run_id: str) -> None:
    """Make run ``run_id``'s directory now and record this process as its owner."""
    (coordination_dir(run_id) / _OWNER).write_text(str(os.getpid()))


def _owner_alive(path: Path) -> bool:
    try:
        pid = int((path / _OWNER).read_text())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: alive
    return True


def sweep_coordination_dirs(max_age: float = STALE_RUN_DIR_SECONDS) -> list[Path]:
    """Remove the directories of killed runs: this user's, untouched for ``max_age`` s,
    whose owner process is gone. Never fails: it is housekeeping."""
    removed: list[Path] = []
    uid = getattr(os, "geteuid", lambda: None)()
    try:
        now = time.time()
        with os.scandir(tempfile.gettempdir()) as entries:  # (cheaper than a glob)
            for entry in entries:
                if not _RUN_DIR.match(entry.name):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if not stat.S_ISDIR(info.st_mode):
                    continue
                if uid is not None and info.st_uid != uid:
                    continue
                path = Path(entry.path)
                if now - info.st_mtime > max_age and not _owner_alive(path):
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
    except Exception as exc:  # pragma: no cover - an odd temp dir must not stop a run
        log.debug("could not sweep old run directories: %s", exc)
    return removed


def coordination_dir(run_id: str) -> Path:
    """A directory shared by the processes of run ``run_id`` (created on first use)."""
    path = coordination_path(run_id)
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def remove_coordination_dir(run_id: str) -> None:
    """Remove run ``run_id``'s directory, if it was ever made."""
    shutil.rmtree(coordination_path(run_id), ignore_errors=True)
