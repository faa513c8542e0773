"""Where the kept local PostgreSQL lives: the user's cache directory, per platform."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pytest_neon.local.run_as import is_root

APP_DIR = "pytest-neon"


def user_cache_dir() -> Path:
    """The platform's per-user cache directory (as ``platformdirs`` would choose it).

    macOS ``~/Library/Caches``; Windows ``%LOCALAPPDATA%``; elsewhere ``$XDG_CACHE_HOME``
    or ``~/.cache``.
    """
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        return Path(base) if base else Path.home() / "AppData" / "Local"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    if xdg and Path(xdg).is_absolute():
        return Path(xdg)
    return Path.home() / ".cache"


def shared_server_dir(explicit: str | None = None) -> Path:
    """The kept server's directory: ``explicit`` (``--neon-local-dir``), else
    ``<user cache>/pytest-neon/postgres``.

    As root the server runs as the ``postgres`` user, who cannot enter root's home: the
    directory is then ``/var/tmp/pytest-neon-root`` (on disk, kept across reboots).
    """
    if explicit:
        return Path(explicit).expanduser().resolve()
    if is_root():
        return Path("/var/tmp") / f"{APP_DIR}-root"  # noqa: S108 - on disk, owned by us
    return (user_cache_dir() / APP_DIR / "postgres").resolve()
