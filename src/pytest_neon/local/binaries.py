"""Finding PostgreSQL server binaries (``initdb``, ``postgres``, ``pg_ctl``) on this machine."""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

SERVER_BINARIES = ("initdb", "postgres", "pg_ctl")


def has_server_binaries(directory: Path) -> bool:
    """Whether ``directory`` holds every server binary, executable."""
    return all(os.access(directory / name, os.X_OK) for name in SERVER_BINARIES)


#: installations with the version in a directory name, newest first: Debian/Ubuntu, RPM,
#: Homebrew's postgresql@N (Apple silicon, then Intel), Postgres.app
_VERSIONED_DIRS = (
    "/usr/lib/postgresql/*/bin",
    "/usr/pgsql-*/bin",
    "/opt/homebrew/opt/postgresql@*/bin",
    "/usr/local/opt/postgresql@*/bin",
    "/Applications/Postgres.app/Contents/Versions/*/bin",
)


def _version_key(path: Path) -> tuple[int, ...]:
    """Sort key of ``/usr/lib/postgresql/<version>/bin``: numeric parts of the version."""
    name = path.parent.name
    return tuple(int(part) for part in re.findall(r"\d+", name.rsplit("@", 1)[-1]))


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
    for pattern in _VERSIONED_DIRS:
        found = [Path(p) for p in glob.glob(pattern)]
        yield from sorted(found, key=_version_key, reverse=True)
    yield Path("/usr/local/pgsql/bin")
    yield Path("/opt/homebrew/bin")  # Homebrew's unversioned formula (Apple silicon)


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
        if has_server_binaries(candidate):
            return candidate
    return None
