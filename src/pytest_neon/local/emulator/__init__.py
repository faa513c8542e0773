"""A Neon API v2 emulator over a real PostgreSQL: a branch is a set of cloned databases.

Use it in-process (``Emulator(postgres_url).start()``) or as ``pytest-neon-emulator`` /
``python -m pytest_neon.local.emulator``.
"""

from __future__ import annotations

from pytest_neon.local.emulator.app import Emulator
from pytest_neon.local.emulator.faults import FaultSettings

__all__ = ["Emulator", "FaultSettings"]
