"""Waiting on other runs that share the Neon project: pauses that grow from 1 s to 8 s
(with jitter, so runs that started together do not ask together), up to a deadline, their
time counted under a phase of the summary."""

from __future__ import annotations

import random
import time

from pytest_neon.counters import RunCounters


class Patience:
    """``seconds`` of waiting at most, in pauses, timed as ``phase`` in ``counters``."""

    def __init__(self, seconds: float, counters: RunCounters, phase: str) -> None:
        self._started = time.monotonic()
        self._deadline = self._started + seconds
        self._counters = counters
        self._phase = phase
        self._pause = 1.0
        self._slept = False

    @property
    def over(self) -> bool:
        """Whether the time to wait is up."""
        return time.monotonic() >= self._deadline

    @property
    def waited(self) -> float:
        """Seconds since the start if it paused at all, else 0."""
        return time.monotonic() - self._started if self._slept else 0.0

    def pause(self) -> bool:
        """Sleep before the next try; ``False`` (at once) when the time is up."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            return False
        with self._counters.phase(self._phase):
            time.sleep(min(left, self._pause * random.uniform(0.5, 1.5)))
        self._pause = min(self._pause * 2, 8.0)
        self._slept = True
        return True
