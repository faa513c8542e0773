"""Which ``STRATEGY`` a clone uses (PostgreSQL 15+): fixed (``FILE_COPY`` by default), or
measured on the server (``AUTO``).

``FILE_COPY`` copies the template's files after a checkpoint: a few milliseconds on a
server without ``fsync`` whose data is in RAM, tens to hundreds on one that syncs to disk,
where the checkpoint flushes every dirty page of the server. ``WAL_LOG`` copies through
shared buffers and the WAL: no checkpoint, so it is often the faster clone on such a
server, but it writes the whole database to the WAL, which every write check of the
plugin then has to read: measured on a server on disk with ``fsync`` on, reading tests
after a burst of writes cost 136-177 ms with it against 3.6-5.2 ms with ``FILE_COPY``. So the
default stays ``FILE_COPY``; ``AUTO`` (the emulator's ``--clone-strategy auto``, for
clients that do no write checks) tries each on a template's first two clones and keeps
the faster one, following the clones made since (a moving average).
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("pytest_neon.emulator")

FILE_COPY = "FILE_COPY"
WAL_LOG = "WAL_LOG"
AUTO = "AUTO"  # measured
STRATEGIES = (FILE_COPY, WAL_LOG)


class CloneStrategy:
    """Picks the strategy of each clone: a fixed one, or the faster one measured."""

    def __init__(self, strategy: str = FILE_COPY) -> None:
        """``strategy``: ``FILE_COPY`` or ``WAL_LOG`` for every clone, or ``AUTO``."""
        if strategy not in (*STRATEGIES, AUTO):
            raise ValueError(f"clone strategy must be one of {', '.join((*STRATEGIES, AUTO))}")
        self.fixed = None if strategy == AUTO else strategy
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
