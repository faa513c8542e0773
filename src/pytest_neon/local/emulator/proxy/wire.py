"""PostgreSQL's wire protocol as far as the proxy speaks it: the startup packets, the
authentication messages, and ``ErrorResponse``."""

from __future__ import annotations

import struct
from dataclasses import dataclass

PROTOCOL_3_0 = 196608  # 3 << 16
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
#: the longest startup packet accepted (PostgreSQL's own limit)
MAX_STARTUP = 10_000
#: the longest message accepted during the handshake
MAX_HANDSHAKE_MESSAGE = 64_000

AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


@dataclass(frozen=True)
class Startup:
    """A ``StartupMessage``: its protocol version and parameters."""

    version: int
    params: dict[str, str]


def parse_startup(body: bytes) -> Startup:
    """The startup packet's body (after its length and version): ``key\\0value\\0...\\0``."""
    (version,) = struct.unpack("!I", body[:4])
    fields = body[4:].split(b"\0")
    params: dict[str, str] = {}
    for key, value in zip(fields[0::2], fields[1::2], strict=False):
        if not key:
            break
        params[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return Startup(version, params)


def startup_packet(params: dict[str, str]) -> bytes:
    """A protocol 3.0 ``StartupMessage`` with ``params``."""
    body = struct.pack("!I", PROTOCOL_3_0)
    for key, value in params.items():
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def message(kind: bytes, body: bytes = b"") -> bytes:
    """A typed message: its byte, its length, its body."""
    return kind + struct.pack("!I", len(body) + 4) + body


def cstring(text: str) -> bytes:
    """``text`` null-terminated."""
    return text.encode() + b"\0"


def read_cstring(data: bytes, start: int = 0) -> tuple[str, int]:
    """The null-terminated string at ``start`` and the offset after it."""
    end = data.index(b"\0", start)
    return data[start:end].decode("utf-8", "replace"), end + 1


def auth(code: int, data: bytes = b"") -> bytes:
    """An ``Authentication*`` message."""
    return message(b"R", struct.pack("!I", code) + data)


def auth_code(body: bytes) -> int:
    """The code of an ``Authentication*`` message's body."""
    return int(struct.unpack("!I", body[:4])[0])


def sasl_mechanisms(names: list[str]) -> bytes:
    """``AuthenticationSASL`` offering ``names``."""
    return auth(AUTH_SASL, b"".join(cstring(n) for n in names) + b"\0")


def sasl_initial_response(mechanism: str, data: bytes) -> bytes:
    """The client's ``SASLInitialResponse``."""
    return message(b"p", cstring(mechanism) + struct.pack("!i", len(data)) + data)


def parse_sasl_initial(body: bytes) -> tuple[str, bytes]:
    """The mechanism and data of a ``SASLInitialResponse``."""
    mechanism, at = read_cstring(body)
    (length,) = struct.unpack("!i", body[at : at + 4])
    data = body[at + 4 : at + 4 + length] if length >= 0 else b""
    return mechanism, data


def backend_key_data(pid: int, key: int) -> bytes:
    """``BackendKeyData``: what the client's ``CancelRequest`` will carry."""
    return message(b"K", struct.pack("!II", pid, key))


def cancel_request(pid: int, key: int) -> bytes:
    """A ``CancelRequest`` packet."""
    return struct.pack("!IIII", 16, CANCEL_REQUEST, pid, key)


def negotiate_protocol(minor: int, unknown: list[str]) -> bytes:
    """``NegotiateProtocolVersion``: the newest minor version served, options not known."""
    body = struct.pack("!II", minor, len(unknown)) + b"".join(cstring(u) for u in unknown)
    return message(b"v", body)


def error_response(sqlstate: str, text: str, severity: str = "FATAL") -> bytes:
    """An ``ErrorResponse``."""
    fields = (
        b"S"
        + cstring(severity)
        + b"V"
        + cstring(severity)
        + b"C"
        + cstring(sqlstate)
        + b"M"
        + cstring(text)
        + b"\0"
    )
    return message(b"E", fields)


def error_fields(body: bytes) -> dict[str, str]:
    """An ``ErrorResponse``'s fields by their code letter."""
    fields: dict[str, str] = {}
    at = 0
    while at < len(body) and body[at] != 0:
        code = chr(body[at])
        value, at = read_cstring(body, at + 1)
        fields[code] = value
    return fields
