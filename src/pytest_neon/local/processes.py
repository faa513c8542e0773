"""Child processes and the processes of a cluster: environment, liveness, ``/proc`` lookups."""

from __future__ import annotations

import os
from pathlib import Path


def child_env() -> dict[str, str]:
    """The environment of a PostgreSQL program: no ``PG*`` variables, C locale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"  # stable (English) messages, e.g. "Address already in use"
    return env


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
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


def child_pids(parent: int) -> list[int]:
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


def pids_mentioning(path: Path, uid: int) -> list[int]:
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
