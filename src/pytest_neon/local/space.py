"""How much room a run's branches take locally, and whether RAM holds them.

A local branch is a full copy of its databases. A run holds the parent, the migrated
state, and per worker its branches, each with its clean spares, and the server keeps
``wal_keep_size`` of WAL. The size of the databases is known only once they exist, so each
run notes the largest it saw (per project directory, in the user's cache directory) and the
next run decides from it, before anything is started.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from pytest_neon.local import SPARES_PER_BRANCH
from pytest_neon.local.user_dirs import APP_DIR, user_cache_dir

if TYPE_CHECKING:
    from pytest_neon.local.shared_server import SharedServer

WAL_ROOM = 320 << 20  # wal_keep_size (256 MB) and the segments being written
MARGIN = 1.25  # RAM is left this much more than the estimate, for everything else
LARGE = 512 << 20  # an estimate the header mentions even when it fits
_RECORD = "sizes.json"
_KEPT_PROJECTS = 64


class Estimate(NamedTuple):
    """What a run's branches will hold: ``copies`` of ``size`` bytes plus the WAL."""

    size: int
    copies: int

    @property
    def total(self) -> int:
        """Bytes in all."""
        return self.size * self.copies + WAL_ROOM

    def fits(self, free: int) -> bool:
        """Whether ``free`` bytes hold it with room to spare."""
        return free >= self.total * MARGIN

    def describe(self) -> str:
        """``about 1.5 GB: 7 copies of 193 MB + WAL``."""
        return (
            f"about {_human(self.total)}: {self.copies} copies of {_human(self.size)} + "
            f"{_human(WAL_ROOM)} of WAL"
        )


def copies_needed(workers: int, branches_per_worker: int) -> int:
    """Databases of one size a run holds at once: the parent and the migrated state, and
    per worker its branches, each with the spares cloned ahead for its resets (the servers
    of ours do not sync to disk: :data:`~pytest_neon.local.SPARES_PER_BRANCH` each)."""
    return 2 + max(1, workers) * max(1, branches_per_worker) * (1 + SPARES_PER_BRANCH)


def free_bytes(path: Path) -> int | None:
    """Bytes free to this user under ``path`` (``None`` when it cannot be told)."""
    try:
        stat = os.statvfs(path)
    except (OSError, AttributeError):  # (no statvfs on Windows)
        return None
    return stat.f_bavail * stat.f_frsize


def _record_path() -> Path:
    return user_cache_dir() / APP_DIR / _RECORD


def _key(project_dir: Path) -> str:
    return hashlib.sha256(str(project_dir).encode()).hexdigest()[:16]


def remembered_size(project_dir: Path) -> int | None:
    """The largest database an earlier run of ``project_dir`` saw, if one noted it."""
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        sizes = json.loads(_record_path().read_text())
        size = sizes.get(_key(project_dir))
        return int(size) if size else None
    return None


def remember_size(project_dir: Path, size: int) -> None:
    """Note the largest database this run of ``project_dir`` saw (best effort)."""
    path = _record_path()
    with contextlib.suppress(OSError, ValueError, TypeError):
        try:
            sizes = json.loads(path.read_text())
        except (OSError, ValueError):
            sizes = {}
        if not isinstance(sizes, dict):
            sizes = {}
        key = _key(project_dir)
        sizes.pop(key, None)
        sizes[key] = int(size)  # the newest last: the oldest go first
        while len(sizes) > _KEPT_PROJECTS:
            sizes.pop(next(iter(sizes)))
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{_RECORD}.{os.getpid()}")
        temp.write_text(json.dumps(sizes))
        os.replace(temp, path)


def _human(size: int) -> str:
    if size >= 1 << 30:
        return f"{size / (1 << 30):.1f} GB"
    if size >= 1 << 20:
        return f"{size / (1 << 20):.0f} MB"
    return f"{size / 1024:.0f} KB"


class Room(NamedTuple):
    """What a run's branches will take: ``copies`` of the databases of ``project_dir``."""

    project_dir: Path
    copies: int

    def estimate(self) -> Estimate | None:
        """From the size an earlier run noted (``None``: no run noted one yet)."""
        size = remembered_size(self.project_dir)
        return Estimate(size, self.copies) if size else None


def note_largest_database(url: str, comment: str, room: Room) -> None:
    """Note the size of the largest database carrying ``comment`` (the run's project's)
    on the server at ``url`` (best effort: a failure only loses the note)."""
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT max(pg_database_size(oid)) FROM pg_database"
                " WHERE pg_catalog.shobj_description(oid, 'pg_database') = %s",
                (comment,),
            ).fetchone()
    except psycopg.Error:
        return
    if row is not None and row[0]:
        remember_size(room.project_dir, int(row[0]))


def throwaway_place(estimate: Estimate | None) -> tuple[Path | None, str]:
    """Where a throwaway cluster goes (``None``: the default, RAM when it has room) and
    what the header says of it."""
    from pytest_neon.local.unavailable import PostgresUnavailableError

    if estimate is None:
        return None, ""
    ram = default_base_dir()
    if ram is not None:
        free = free_bytes(ram) or 0
        if estimate.fits(free):
            return None, _large(estimate, f"in RAM ({ram})")
        why = f"; on disk: the branches take {estimate.describe()}, {ram} has {_human(free)} free"
    else:
        why = ""
    disk = Path(tempfile.gettempdir())
    disk_free = free_bytes(disk)
    if disk_free is not None and disk_free < estimate.total:
        raise PostgresUnavailableError(
            f"the local branches would take {estimate.describe()} (the last run's largest "
            f"database), more than {disk} has free ({_human(disk_free)}): free some space, set "
            "TMPDIR to a bigger disk, run fewer xdist workers, or set "
            "--neon-local-postgres-url to a server of your own"
        )
    return disk, why or _large(estimate, f"on disk ({disk})")


def branches_on_kept_server(
    shared: SharedServer, estimate: Estimate | None
) -> tuple[SharedServer, str]:
    """The kept server with the run's branches in RAM when they fit there, else on disk
    (its own data directory); and what the header says of it."""
    in_ram, note = kept_placement(shared.ram_dir, estimate)
    if in_ram:
        return shared, note
    return shared._replace(tablespace=None, ram_dir=None), note


def kept_placement(ram_dir: Path | None, estimate: Estimate | None) -> tuple[bool, str]:
    """Whether the run's branches go to the kept server's RAM tablespace in ``ram_dir``,
    and what the header says of it."""
    if ram_dir is None:
        return False, ""
    if estimate is None:
        return True, ""
    free = free_bytes(ram_dir if ram_dir.exists() else ram_dir.parent) or 0
    if estimate.fits(free):
        return True, _large(estimate, "in RAM")
    return False, (
        f"; this run's branches on disk: they take {estimate.describe()}, "
        f"{ram_dir} has {_human(free)} free"
    )


def _large(estimate: Estimate, where: str) -> str:
    if estimate.total < LARGE:
        return ""
    return f"; branches {where}: {estimate.describe()} (the last run's largest database)"


# A RAM-backed directory per platform: Linux has a tmpfs at /dev/shm; macOS has no RAM disk
# unless one is made by hand, so its clusters live in the temp dir.
_RAM_DIRS = {"linux": Path("/dev/shm")}  # noqa: S108 - checked before use
_RAM_NEEDED = 1 << 30


def ram_dir(platform: str = sys.platform) -> Path | None:
    """The RAM-backed directory of ``platform`` (default: this one) when it has room and we
    may write to it; ``None`` when there is none (macOS has no RAM disk by default)."""
    path = _RAM_DIRS.get(platform)
    if path is None:
        return None
    free = free_bytes(path)
    if free is None or free < _RAM_NEEDED or not os.access(path, os.W_OK | os.X_OK):
        return None
    return path


def default_base_dir(platform: str = sys.platform) -> Path | None:
    """Where throwaway clusters live: RAM (:func:`ram_dir`) when it has room, else the temp
    dir (``None``).

    Cloning a database copies its files; on a RAM disk that takes a few milliseconds, on an
    ext4 disk it can take hundreds. An explicit ``TMPDIR`` is always respected.
    """
    if os.environ.get("TMPDIR"):
        return None
    return ram_dir(platform)
