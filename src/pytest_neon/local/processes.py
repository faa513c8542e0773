"""Child processes and the processes of a cluster: environment, liveness, lookups.

The lookups use ``psutil`` (Linux, macOS, the BSDs, Windows alike), imported on first use:
a run that starts no PostgreSQL never loads it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def child_env() -> dict[str, str]:
    """The environment of a PostgreSQL program: no ``PG*`` variables, C locale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"  # stable (English) messages, e.g. "Address already in use"
    return env


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not; another user's process does)."""
    import psutil

    if pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:  # ZombieProcess included
        return False
    except psutil.AccessDenied:
        return True


def read_postmaster_pid(data_dir: Path) -> int | None:
    """The postmaster's pid from ``postmaster.pid`` (``None`` when there is none)."""
    try:
        first = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        return int(first)
    except (OSError, ValueError):
        return None


def pid_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists, zombies included: for a process that is not our
    child (a postmaster started by ``pg_ctl``) the same as :func:`pid_alive`, and cheaper
    (no ``psutil`` outside Windows)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":  # (signal 0 is not a probe there)
        return pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def detached_alive(pid: int) -> bool:
    """Whether ``pid`` runs, for a process that is left to run on its own (a watchdog
    started with ``posix_spawn`` by this process or another): one that has ended is
    reaped here if it was ours (never waited for, it would stay a zombie)."""
    if not pid_exists(pid):
        return False
    if sys.platform == "win32":
        return True  # (pid_exists asked psutil, which tells zombies apart)
    try:
        ended, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child: it exists, and nobody's zombie for long
        return True
    return ended == 0


def child_pids(parent: int) -> list[int]:
    """Direct children of ``parent`` (empty when it is gone)."""
    import psutil

    try:
        return [child.pid for child in psutil.Process(parent).children()]
    except psutil.Error:
        return []


def pids_mentioning(path: Path, uid: int) -> list[int]:
    """Processes of (effective) user ``uid`` with ``path`` as one of their arguments, this
    process left out."""
    import psutil

    arg = str(path)
    me = os.getpid()
    pids = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != me and proc.uids().effective == uid and arg in proc.cmdline():
                pids.append(proc.pid)
        except psutil.Error:  # gone, a zombie, or not ours to read
            continue
    return pids
