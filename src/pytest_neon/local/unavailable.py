"""``PostgresUnavailableError`` (no PostgreSQL could be found, started or reached) and the
pieces its messages are made of: one-line texts and a server log's last lines."""

from __future__ import annotations

from pytest_neon.errors import NeonConfigError
from pytest_neon.redact import redact

LOG_TAIL_LINES = 25


class PostgresUnavailableError(NeonConfigError):
    """No PostgreSQL server could be found, started or reached."""


def redacted_tail(text: str) -> str:
    """The last lines of ``text`` (at most ``LOG_TAIL_LINES``), secrets masked."""
    return redact("\n".join(text.strip().splitlines()[-LOG_TAIL_LINES:]))


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
