"""Hashing migration files, for the integrations' ``neon_migration_fingerprint``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Protocol


class Digest(Protocol):
    """What :func:`hash_files` needs of a ``hashlib`` hash object."""

    def update(self, data: bytes, /) -> None:
        """Feed ``data`` to the hash."""


def _every(path: Path) -> bool:
    return True


def hash_files(
    digest: Digest,
    root: Path,
    pattern: str,
    name: Callable[[PurePath], str],
    keep: Callable[[Path], bool] = _every,
) -> None:
    """Feed ``digest`` the paths under ``root`` matching ``pattern`` that ``keep`` accepts.

    In sorted order, each one as ``name(its path relative to root)``, then its bytes.
    """
    for path in sorted(root.rglob(pattern)):
        if keep(path):
            digest.update(name(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
