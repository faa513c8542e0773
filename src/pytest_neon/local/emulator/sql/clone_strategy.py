"""Which ``STRATEGY`` a clone uses (PostgreSQL 15+): fixed, or measured on the server.

``FILE_COPY`` copies the template's files after a checkpoint: a few milliseconds on a
server without ``fsync`` whose data is in RAM, hundreds on one that syncs to disk, where
the checkpoint flushes every dirty page of the server. ``WAL_LOG`` copies through shared
buffers and the WAL: no checkpoint, but every page is written twice. Which one wins depends
on the server and the database's size, so on a server we do not know, each template's
first two clones try one each, and later clones take the faster one. The figures follow
the clones made since (a moving average), so a choice that gets slower is dropped.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("pytest_neon.emulator")

FILE_COPY = "FILE_COPY"
WAL_LOG = "WAL_LOG"
STRATEGIES = (FILE_COPY, WAL_LOG)


class CloneStrategy:
    """Picks the strategy of each clone: ``fixed``, or the faster one measured."""

    def __init__(self, fixed: str | None = None) -> None:
        """``fixed``: always this strategy (``FILE_COPY`` or ``WAL_LOG``); ``None``: measure."""
        if fixed is not None and fixed not in STRATEGIES:
            raise ValueError(f"clone strategy must be one of {', '.join(STRATEGIES)}")
        self.fixed = fixed
        self._seconds: dict[str, dict[str, float]] = {}  # template -> strategy -> seconds
        self._lock = threading.Lock()

    def pick(self, template: str) -> str:
        """The strategy for the next clone of ``template``."""
        if self.fixed is not None:
            return self.fixed
        with self._lock:
            measured = self._seconds.get(template, {})
            for strategy in STRATEGIES:
                if strategy not in measured:
                    return strategy
            return min(measured, key=measured.__getitem__)

    def record(self, template: str, strategy: str, seconds: float) -> None:
        """A clone of ``template`` with ``strategy`` took ``seconds``."""
        if self.fixed is not None:
            return
        with self._lock:
            measured = self._seconds.setdefault(template, {})
            before = measured.get(strategy)
            measured[strategy] = seconds if before is None else (before + seconds) / 2
            if before is None and len(measured) == len(STRATEGIES):
                log.info(
                    "clones of %s: %s",
                    template,
                    ", ".join(f"{s} {measured[s] * 1000:.0f} ms" for s in STRATEGIES),
                )

    def measured(self) -> dict[str, dict[str, float]]:
        """Seconds per clone, by template and strategy (a copy)."""
        with self._lock:
            return {t: dict(m) for t, m in self._seconds.items()}
