"""When and how long to wait before trying a Neon API call again."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import NamedTuple

from pytest_neon.clock import utcnow

#: Statuses that say "try again later": locked by a running operation, rate limited,
#: or the control plane (or a gateway in front of it) briefly unavailable.
RETRY_STATUSES = frozenset({423, 429, 502, 503, 504})


class RetryPolicy(NamedTuple):
    """Bounded exponential backoff with full jitter.

    ``max_attempts`` counts the first try (answers 429 do not count); ``max_elapsed``
    bounds the total time spent on one call, waits included.
    """

    max_attempts: int = 8
    max_elapsed: float = 90.0
    base_delay: float = 0.25
    max_delay: float = 8.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to sleep after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return (rng or random).uniform(ceiling / 2, ceiling)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Parse a ``Retry-After`` header (seconds or an HTTP date) into seconds, if valid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or utcnow())).total_seconds())
