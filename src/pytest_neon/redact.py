"""Keep secrets (API keys, passwords in DSNs) out of every message, log line and file."""

from __future__ import annotations

import re
import threading
from collections.abc import Collection
from typing import Any
from urllib.parse import quote

_MASK = "********"
# scheme://user:password@host  ->  scheme://user:********@host
_DSN_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?=@)")
# key=value DSNs and query strings: password=...
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'[^']*'|[^\s&]+)", re.IGNORECASE)
_BEARER = re.compile(r"(?P<head>\bBearer\s+)(?P<pw>\S+)", re.IGNORECASE)

_known: set[str] = set()
_lock = threading.Lock()


def register_secret(secret: str | None) -> None:
    """Remember a secret so that :func:`redact` masks it wherever it appears."""
    if secret and len(secret) >= 4:
        with _lock:
            _known.add(secret)
            _known.add(quote(secret, safe=""))


def redact(text: str) -> str:
    """Return ``text`` with registered secrets, DSN passwords and bearer tokens masked."""
    with _lock:
        secrets = sorted(_known, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _MASK)
    text = _DSN_PASSWORD.sub(lambda m: m.group("head") + _MASK, text)
    text = _KV_PASSWORD.sub(lambda m: m.group("head") + _MASK, text)
    return _BEARER.sub(lambda m: m.group("head") + _MASK, text)


def repr_without(record: Any, hidden: Collection[str]) -> str:
    """``record`` (a named tuple) as its repr would be, but for the fields ``hidden``."""
    shown = (
        f"{name}={value!r}"
        for name, value in zip(record._fields, record, strict=True)
        if name not in hidden
    )
    return f"{type(record).__name__}({', '.join(shown)})"
