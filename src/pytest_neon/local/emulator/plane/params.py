"""Checking what a request gives: JSON objects, expiry times, flags, page limits, cursors.
Each raises the 400 Neon answers for a bad value."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timedelta
from typing import Any

from pytest_neon.local.emulator.api_errors import bad_request
from pytest_neon.local.emulator.records import JSON
from pytest_neon.local.emulator.timestamps import parse_rfc3339

MAX_EXPIRY = timedelta(days=30)


def json_object(value: Any, what: str) -> JSON:
    """``value`` if it is a JSON object (``what`` names it in the error)."""
    if not isinstance(value, dict):
        raise bad_request(f"{what} must be a JSON object")
    return value


def optional_string(value: Any, what: str) -> str | None:
    """``value`` if it is a string or ``None`` (``what`` names it in the error)."""
    if value is not None and not isinstance(value, str):
        raise bad_request(f"{what} must be a string")
    return value


def expiry(value: Any, now: datetime, what: str = "expires_at") -> datetime:
    """Validate an ``expires_at`` as Neon does: RFC 3339, in the future, <= 30 days ahead
    (``what`` names the field in the error)."""
    if not isinstance(value, str):
        raise bad_request(f"{what} must be an RFC 3339 date-time string")
    try:
        moment = parse_rfc3339(value)
    except ValueError:
        raise bad_request(f"{what} {value!r} is not a valid RFC 3339 date-time") from None
    if moment <= now:
        raise bad_request(f"{what} {value} must be in the future")
    if moment > now + MAX_EXPIRY:
        raise bad_request(f"{what} {value} must be at most 30 days in the future")
    return moment


def boolean(value: str | None, name: str) -> bool:
    """A query flag: ``true``/``1``, ``false``/``0``, or absent (``False``)."""
    if value is None or value == "":
        return False
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise bad_request(f"{name} must be true or false")


def page_limit(value: str | None, maximum: int) -> int | None:
    """The ``limit`` of a page: 1 to ``maximum``, or ``None`` for no limit."""
    if value is None or value == "":
        return None
    try:
        limit = int(value)
    except ValueError:
        raise bad_request("limit must be an integer") from None
    if not 1 <= limit <= maximum:
        raise bad_request(f"limit must be between 1 and {maximum}")
    return limit


def encode_cursor(data: JSON) -> str:
    """An opaque pagination cursor holding ``data``."""
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> JSON:
    """The data of a cursor made by :func:`encode_cursor` (a 400 for anything else)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: deep nesting
        raise bad_request("invalid cursor") from None
    if not isinstance(data, dict):
        raise bad_request("invalid cursor")
    return data
