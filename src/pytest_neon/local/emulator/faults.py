"""Injected latency and faults: request delay, operation delay, rate limit, random failures,
and operations that end ``failed``."""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class FaultSettings:
    """Latency and fault knobs of an emulator (all off by default)."""

    request_delay: float = 0.0
    operation_delay: float = 0.0
    rate_limit: float | None = None
    fail_rate: float = 0.0
    seed: int | None = None
    fail_operations: float = 0.0

    def __post_init__(self) -> None:
        if self.request_delay < 0 or self.operation_delay < 0:
            raise ValueError("delays must be >= 0")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError("rate_limit must be > 0 (or None for no limit)")
        if not 0.0 <= self.fail_rate <= 1.0:
            raise ValueError("fail_rate must be between 0 and 1")
        if not 0.0 <= self.fail_operations <= 1.0:
            raise ValueError("fail_operations must be between 0 and 1")


class RateLimiter:
    """A token bucket: ``rate`` requests per second, bursts of up to ``rate`` requests."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> int | None:
        """Take a token; return ``None`` if allowed, else the seconds to wait (``Retry-After``)."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return None
            return max(1, math.ceil((1.0 - self._tokens) / self.rate))


class Faults:
    """The live fault state of one emulator; settings can change while it serves."""

    def __init__(self, settings: FaultSettings) -> None:
        self._lock = threading.Lock()
        self._settings = settings
        self._limiter = RateLimiter(settings.rate_limit) if settings.rate_limit else None
        self._rng = random.Random(settings.seed)

    @property
    def settings(self) -> FaultSettings:
        """The current settings."""
        return self._settings

    def configure(self, **changes: object) -> FaultSettings:
        """Change some settings (keyword names of :class:`FaultSettings`); returns the new ones."""
        with self._lock:
            new = replace(self._settings, **changes)  # type: ignore[arg-type]
            if new.rate_limit != self._settings.rate_limit:
                self._limiter = RateLimiter(new.rate_limit) if new.rate_limit else None
            if "seed" in changes:
                self._rng = random.Random(new.seed)
            self._settings = new
            return new

    def delay_request(self) -> None:
        """Sleep for the configured request delay."""
        delay = self._settings.request_delay
        if delay > 0:
            time.sleep(delay)

    def rate_limited(self) -> int | None:
        """``None`` when the request may proceed, else the ``Retry-After`` seconds for a 429."""
        limiter = self._limiter
        return limiter.acquire() if limiter is not None else None

    def injected_failure(self) -> int | None:
        """For a mutating call: ``None``, or the status (503 or 423) of an injected failure."""
        with self._lock:
            rate = self._settings.fail_rate
            if rate <= 0 or self._rng.random() >= rate:
                return None
            return 503 if self._rng.random() < 0.5 else 423

    def operation_fails(self) -> bool:
        """For a create or restore: whether its operation ends ``failed`` (doing nothing)."""
        with self._lock:
            rate = self._settings.fail_operations
            return rate > 0 and self._rng.random() < rate
