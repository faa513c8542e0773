"""Child processes and the processes of a cluster: environment, liveness, lookups.

The lookups use ``psutil`` (Linux, macOS, the BSDs, Windows alike), imported on first use:
a run that starts no PostgreSQL never loads it.
"""

from __future__ import annotations

import os
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
