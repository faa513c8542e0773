"""Time as the emulator keeps it (aware, UTC) and writes it (RFC 3339, as Neon does)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pytest_neon.clock import utcnow  # the emulator's "now": tests moving time leave it

__all__ = ["parse_rfc3339", "rfc3339", "utcnow"]

# RFC 3339 date-time: full date, 'T' (or space), time with seconds, optional fraction, zone.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


def rfc3339(moment: datetime) -> str:
    """``moment`` as Neon writes timestamps: ``2024-02-26T12:00:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 date-time; raise ``ValueError`` for anything else."""
    if not _RFC3339.match(text):
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    normalized = text.upper().replace(" ", "T").replace("Z", "+00:00")
    fraction = re.search(r"\.(\d+)", normalized)
    if fraction and len(fraction.group(1)) > 6:  # Python keeps microseconds at most
        normalized = normalized.replace(fraction.group(0), "." + fraction.group(1)[:6])
    moment = datetime.fromisoformat(normalized)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00, before year 1 in UTC
        raise ValueError(f"date-time out of range: {text!r}") from None
