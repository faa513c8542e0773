"""A Neon API v2 emulator over a real PostgreSQL: a branch is a set of cloned databases.

Use it in-process (``Emulator(postgres_url).start()``) or as ``pytest-neon-emulator`` /
``python -m pytest_neon.local.emulator``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_neon.local.emulator.app import Emulator
    from pytest_neon.local.emulator.faults import FaultSettings

__all__ = ["Emulator", "FaultSettings"]


def __getattr__(name: str) -> Any:
    """``Emulator`` and ``FaultSettings``, imported on first use: the plugin reads the
    emulator's SQL helpers (``sql/``) without loading the whole emulator."""
    if name == "Emulator":
        from pytest_neon.local.emulator.app import Emulator

        return Emulator
    if name == "FaultSettings":
        from pytest_neon.local.emulator.faults import FaultSettings

        return FaultSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
