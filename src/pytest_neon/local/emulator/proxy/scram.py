"""SCRAM-SHA-256 (RFC 5802, RFC 7677) both ways: :class:`ScramServer` checks a client of
the proxy (``-PLUS``: bound to the TLS channel with ``tls-server-end-point``, RFC 5929),
:class:`ScramClient` logs the proxy in to the real server.

The keys themselves come from :mod:`pytest_neon.local.emulator.scram_keys`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

from pytest_neon.local.emulator.scram_keys import (
    client_key,
    hmac_sha256,
    salted_password,
    server_key,
    stored_key,
)

SCRAM = "SCRAM-SHA-256"
SCRAM_PLUS = "SCRAM-SHA-256-PLUS"
ITERATIONS = 4096
_BINDING = "tls-server-end-point"


class ScramError(Exception):
    """The exchange failed: a malformed message, a wrong proof or binding."""


@functools.lru_cache(maxsize=256)
def _server_salt(password: str) -> bytes:
    """One random salt per password for this process (as a stored verifier would keep)."""
    del password  # the cache is keyed by it; the salt itself is random
    return secrets.token_bytes(16)


def _attributes(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError("malformed SCRAM message")
        pairs.setdefault(part[0], part[2:])
    return pairs


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise ScramError("malformed base64 in a SCRAM message") from exc


class ScramServer:
    """The server side of one exchange for ``password``; ``end_point`` is the SHA-256 of
    the server certificate (DER) when the session is over TLS, else ``None``."""

    def __init__(self, password: str, end_point: bytes | None) -> None:
        self._password = password
        self._end_point = end_point
        self._gs2 = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._mechanism = ""

    @property
    def mechanisms(self) -> list[str]:
        """What to offer: ``-PLUS`` first when over TLS."""
        return [SCRAM_PLUS, SCRAM] if self._end_point is not None else [SCRAM]

    def first(self, mechanism: str, client_first: bytes) -> bytes:
        """The server-first-message answering the client-first-message."""
        if mechanism not in self.mechanisms:
            raise ScramError(f"SASL mechanism {mechanism!r} is not offered")
        text = client_first.decode("utf-8", "replace")
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise ScramError("malformed SCRAM client-first-message")
        flag, authzid, bare = parts
        if authzid:
            raise ScramError("SCRAM authorization identities are not supported")
        if mechanism == SCRAM_PLUS:
            if flag != f"p={_BINDING}":
                raise ScramError(f"SCRAM-SHA-256-PLUS needs channel binding {_BINDING}")
        elif flag == "y" and self._end_point is not None:
            raise ScramError("the client thinks channel binding is not offered: it is")
        elif flag not in ("n", "y"):
            raise ScramError("channel binding asked for without SCRAM-SHA-256-PLUS")
        attrs = _attributes(bare)
        if "m" in attrs or "r" not in attrs:
            raise ScramError("malformed SCRAM client-first-message")
        self._mechanism = mechanism
        self._gs2 = f"{flag},{authzid},"
        self._client_first_bare = bare
        self._nonce = attrs["r"] + _b64(secrets.token_bytes(18))
        salt = _server_salt(self._password)
        self._server_first = f"r={self._nonce},s={_b64(salt)},i={ITERATIONS}"
        return self._server_first.encode()

    def final(self, client_final: bytes) -> bytes:
        """The server-final-message once the client's proof and binding check out."""
        text = client_final.decode("utf-8", "replace")
        without_proof, sep, proof_text = text.rpartition(",p=")
        if not sep:
            raise ScramError("malformed SCRAM client-final-message")
        attrs = _attributes(without_proof)
        binding = self._gs2.encode()
        if self._mechanism == SCRAM_PLUS:
            assert self._end_point is not None
            binding += self._end_point
        if attrs.get("c") is None or not hmac.compare_digest(_unb64(attrs["c"]), binding):
            raise ScramError("SCRAM channel binding check failed")
        if attrs.get("r") != self._nonce:
            raise ScramError("SCRAM nonce mismatch")
        salted = salted_password(self._password, _server_salt(self._password), ITERATIONS)
        stored = stored_key(salted)
        message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = hmac_sha256(stored, message)
        proof = _unb64(proof_text)
        if len(proof) != len(signature):
            raise ScramError("wrong password")
        claimed = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.sha256(claimed).digest(), stored):
            raise ScramError("wrong password")
        return f"v={_b64(hmac_sha256(server_key(salted), message))}".encode()


class ScramClient:
    """The client side of one SCRAM-SHA-256 exchange (no channel binding)."""

    def __init__(self, password: str) -> None:
        self._password = password
        self._nonce = _b64(secrets.token_bytes(18))
        self._client_first_bare = f"n=,r={self._nonce}"
        self._server_signature = b""

    def first(self) -> bytes:
        """The client-first-message."""
        return f"n,,{self._client_first_bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        """The client-final-message with its proof."""
        text = server_first.decode("utf-8", "replace")
        attrs = _attributes(text)
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s"), attrs.get("i", "")
        if not nonce.startswith(self._nonce) or salt is None or not iterations.isdigit():
            raise ScramError("malformed SCRAM server-first-message")
        salted = salted_password(self._password, _unb64(salt), int(iterations))
        without_proof = f"c={_b64(b'n,,')},r={nonce}"
        message = f"{self._client_first_bare},{text},{without_proof}".encode()
        key = client_key(salted)
        signature = hmac_sha256(stored_key(salted), message)
        proof = bytes(a ^ b for a, b in zip(key, signature, strict=True))
        self._server_signature = hmac_sha256(server_key(salted), message)
        return f"{without_proof},p={_b64(proof)}".encode()

    def verify(self, server_final: bytes) -> None:
        """Check the server's signature (it knows the password too)."""
        attrs = _attributes(server_final.decode("utf-8", "replace"))
        if "e" in attrs:
            raise ScramError(f"the server refused: {attrs['e']}")
        if not hmac.compare_digest(_unb64(attrs.get("v", "")), self._server_signature):
            raise ScramError("the server's SCRAM signature is wrong")
