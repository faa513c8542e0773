"""The time the plugin and its emulator go by, which tests that move the clock
(time-machine, freezegun) cannot move.

Branch expiries, operations and the emulator's sweeps compare times taken at different
moments; a test that travels to 2022 must not make a branch expire or an operation look
running. The wall clock is read once, as this module is imported (pytest imports the
plugin before any test runs), and the time since is counted on a clock those libraries
leave alone (``CLOCK_BOOTTIME``, which counts a suspended machine's sleep too, else
``CLOCK_MONOTONIC``, read through ``time.clock_gettime``; ``time.monotonic`` on Windows).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

_CLOCK: int | None = getattr(time, "CLOCK_BOOTTIME", getattr(time, "CLOCK_MONOTONIC", None))


def _elapsed() -> float:
    if _CLOCK is not None:
        return time.clock_gettime(_CLOCK)
    return time.monotonic()


_ANCHOR = datetime.now(UTC)
_START = _elapsed()


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC (whatever tests do to the clock)."""
    return _ANCHOR + timedelta(seconds=_elapsed() - _START)
