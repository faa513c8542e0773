"""SCRAM-SHA-256's keys (RFC 5802, RFC 7677), shared by the endpoint proxy's exchanges and
the check of a role's stored verifier (``pg_authid.rolpassword``).

Passwords go in as their UTF-8 bytes: SASLprep leaves the emulator's passwords (ASCII
letters and digits) as they are.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os

#: PBKDF2 iterations of the verifiers of the passwords the plugin makes up itself (24
#: random bytes: a run's login, a throwaway cluster's superuser). Iterations slow down
#: guessing a weak password, which 192 random bits need no help with; PostgreSQL's 4096
#: cost every new connection about 5 ms of the client's CPU here.
RANDOM_PASSWORD_ITERATIONS = 16


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA-256 of ``data`` under ``key``."""
    return hmac.new(key, data, hashlib.sha256).digest()


@functools.lru_cache(maxsize=256)
def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    """SaltedPassword: PBKDF2-HMAC-SHA-256 (cached: it is slow by design)."""
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


def client_key(salted: bytes) -> bytes:
    """ClientKey of a salted password."""
    return hmac_sha256(salted, b"Client Key")


def stored_key(salted: bytes) -> bytes:
    """StoredKey: what a server keeps to check a client's proof."""
    return hashlib.sha256(client_key(salted)).digest()


def server_key(salted: bytes) -> bytes:
    """ServerKey: what a server signs its final message with."""
    return hmac_sha256(salted, b"Server Key")


def verifier(password: str, iterations: int = RANDOM_PASSWORD_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier of ``password`` with a new salt, as ``pg_authid`` holds
    it (``ALTER ROLE ... PASSWORD`` takes it as it is: the password never reaches the
    server)."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    encoded = (base64.b64encode(k).decode() for k in (salt, stored_key(salted), server_key(salted)))
    salt_text, stored, server = encoded
    return f"SCRAM-SHA-256${iterations}:{salt_text}${stored}:{server}"


def scram_matches(verifier: str, password: str) -> bool:
    """Whether ``verifier`` (``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``,
    as ``pg_authid`` holds it) was made from ``password``."""
    try:
        method, rest = verifier.split("$", 1)
        head, keys = rest.split("$", 1)
        iterations, salt = head.split(":", 1)
        expected = base64.b64decode(keys.split(":", 1)[0])
        salted = salted_password(password, base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return method == "SCRAM-SHA-256" and hmac.compare_digest(stored_key(salted), expected)
