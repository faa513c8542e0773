"""What one pytest process did with its branches, for the end-of-run summary."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class RunCounters:
    """Counts and phase timings; safe to update from the background threads."""

    branches_created: int = 0
    branches_swept: int = 0
    resets_done: int = 0
    resets_skipped: int = 0
    migration_cache: str = ""  # "", "hit" or "miss"
    phases: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

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
