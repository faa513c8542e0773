"""Random tokens (passwords, API keys, run ids), from ``os.urandom`` as the ``secrets``
module makes them, without importing it: ``secrets`` loads ``hmac`` and OpenSSL, about
2 ms that every run would pay."""

from __future__ import annotations

import base64
import os


def token_hex(nbytes: int) -> str:
    """``nbytes`` random bytes as ``2 * nbytes`` hex digits."""
    return os.urandom(nbytes).hex()


def token_urlsafe(nbytes: int) -> str:
    """``nbytes`` random bytes, URL-safe base64 without padding (as ``secrets``)."""
    return base64.urlsafe_b64encode(os.urandom(nbytes)).rstrip(b"=").decode("ascii")
