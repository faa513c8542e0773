"""What one pytest process did with its branches, for the end-of-run summary."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class RunCounters:
    """Counts and phase timings; safe to update from the background threads."""

    def __init__(self) -> None:
        self.branches_created = 0
        self.branches_swept = 0
        self.resets_done = 0
        self.resets_skipped = 0
        self.migration_cache = ""  # "", "hit" or "miss"
        self.phases: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to the counter ``name`` (``branches_created``, ``resets_done``…)."""
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def note_cache(self, outcome: str) -> None:
        """The migration cache's answer: ``hit`` or ``miss``."""
        with self._lock:
            self.migration_cache = outcome

    def add_phase(self, name: str, seconds: float) -> None:
        """Accumulate time spent in phase ``name``."""
        with self._lock:
            self.phases[name] = self.phases.get(name, 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a block of work under ``name``."""
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.add_phase(name, time.monotonic() - t0)

    def as_dict(self) -> dict[str, object]:
        """The counters as plain JSON-able data."""
        with self._lock:
            return {
                "branches_created": self.branches_created,
                "branches_swept": self.branches_swept,
                "resets_done": self.resets_done,
                "resets_skipped": self.resets_skipped,
                "migration_cache": self.migration_cache,
                "phases": dict(self.phases),
            }
