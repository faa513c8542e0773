"""One client's handshake through an endpoint's listener: TLS, SCRAM-SHA-256(-PLUS)
against the role's password, then the login on the real server (the relay takes over)."""

from __future__ import annotations

import secrets
import struct
import threading
from dataclasses import dataclass, field

from pytest_neon.local.emulator.proxy import wire
from pytest_neon.local.emulator.proxy.backend_login import (
    BackendRefused,
    Login,
    ServerAddress,
    log_in,
    send_cancel,
)
from pytest_neon.local.emulator.proxy.conn import PgSocket
from pytest_neon.local.emulator.proxy.scram import ScramError, ScramServer
from pytest_neon.local.emulator.proxy.targets import Directory, Refusal
from pytest_neon.local.emulator.proxy.tls import ServerTls

#: what Neon's proxy answers a client that does not use TLS
INSECURE = "connection is insecure (try using `sslmode=require`)"
_READ_ONLY = "-c default_transaction_read_only=on"
_NOT_PASSED = {"user", "database", "options"}


@dataclass
class ProxyState:
    """What every session of the proxy shares."""

    directory: Directory
    server: ServerAddress
    tls: ServerTls | None
    #: the cancel keys handed to clients -> the real server's
    cancel_keys: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new_cancel_key(self, login: Login) -> tuple[int, int]:
        """A key for the client that stands for the server's."""
        keys = (secrets.randbits(31), secrets.randbits(32))
        with self.lock:
            self.cancel_keys[keys] = (login.pid, login.key)
        return keys

    def forget_cancel_key(self, keys: tuple[int, int]) -> None:
        """The session ended."""
        with self.lock:
            self.cancel_keys.pop(keys, None)


class Refused(Exception):
    """The client is refused: ``error`` is the ``ErrorResponse`` to send it."""

    def __init__(self, error: bytes) -> None:
        super().__init__("refused")
        self.error = error


def _refuse(sqlstate: str, text: str) -> Refused:
    return Refused(wire.error_response(sqlstate, text))


def handshake(client: PgSocket, endpoint_id: str, state: ProxyState) -> Login | None:
    """Up to the login on the real server (``None`` after a cancel request)."""
    secure = False
    while True:
        body = client.read_packet()
        (code,) = struct.unpack("!I", body[:4])
        if code == wire.SSL_REQUEST and state.tls is not None and not secure:
            if client.buffered:
                raise _refuse("08P01", "data sent after the SSL request, before TLS")
            client.send(b"S")
            client.start_tls(state.tls.context, server_side=True)
            secure = True
        elif code in (wire.SSL_REQUEST, wire.GSSENC_REQUEST):
            client.send(b"N")
        elif code == wire.CANCEL_REQUEST:
            _cancel(body, state)
            return None
        else:
            break
    startup = wire.parse_startup(body)
    if startup.version >> 16 != 3:
        raise _refuse("0A000", "unsupported frontend protocol: the proxy speaks 3.0")
    if state.tls is not None and not secure:
        raise _refuse("28000", INSECURE)
    params = startup.params
    unknown = [k for k in params if k.startswith("_pq_.")]
    if startup.version & 0xFFFF or unknown:
        client.send(wire.negotiate_protocol(0, unknown))
    user = params.get("user", "")
    database = params.get("database") or user
    options = _options(params.get("options", ""))
    try:
        target = state.directory.target(endpoint_id, user, database)
    except Refusal as refusal:
        raise _refuse(refusal.sqlstate, refusal.message) from None
    end_point = state.tls.end_point if secure and state.tls is not None else None
    _authenticate(client, user, target.password, end_point)
    assert target.password is not None
    if target.read_only:
        options = f"{options} {_READ_ONLY}".strip()
    passed = {k: v for k, v in params.items() if k not in _NOT_PASSED and not k.startswith("_pq_.")}
    passed["database"] = target.database
    if options:
        passed["options"] = options
    try:
        return log_in(state.server, target.role, target.password, passed)
    except BackendRefused as refused:
        raise Refused(refused.error) from None
    except OSError as exc:
        raise _refuse("08006", f"the emulator's PostgreSQL is unreachable: {exc}") from None


def greeting(login: Login, keys: tuple[int, int]) -> bytes:
    """What the client gets once logged in: ``AuthenticationOk``, the server's parameters,
    the proxy's cancel key, ``ReadyForQuery``."""
    messages, ready = login.messages[:-6], login.messages[-6:]
    return wire.auth(wire.AUTH_OK) + messages + wire.backend_key_data(*keys) + ready


def _cancel(body: bytes, state: ProxyState) -> None:
    if len(body) >= 12:
        pid, key = struct.unpack("!II", body[4:12])
        with state.lock:
            real = state.cancel_keys.get((pid, key))
        if real is not None:
            send_cancel(state.server, *real)


def _options(options: str) -> str:
    """The client's ``options`` without Neon's routing ones (``endpoint=``, ``project=``);
    point-in-time reads are refused."""
    kept: list[str] = []
    for token in options.split():
        if token.startswith(("neon_lsn:", "neon_timestamp:")):
            raise _refuse("0A000", "point-in-time connections are not emulated")
        if not token.startswith(("endpoint=", "project=", "endpoint%3D", "project%3D")):
            kept.append(token)
    return " ".join(kept)


def _authenticate(
    client: PgSocket, user: str, password: str | None, end_point: bytes | None
) -> None:
    """SCRAM-SHA-256 (``-PLUS`` over TLS) against ``password``; no role: it fails."""
    failed = _refuse("28P01", f'password authentication failed for user "{user}"')
    scram = ScramServer(password or secrets.token_hex(16), end_point)
    client.send(wire.sasl_mechanisms(scram.mechanisms))
    try:
        kind, body = client.read_message()
        if kind != b"p":
            raise _refuse("08P01", "expected a SASL initial response")
        mechanism, data = wire.parse_sasl_initial(body)
        client.send(wire.auth(wire.AUTH_SASL_CONTINUE, scram.first(mechanism, data)))
        kind, body = client.read_message()
        if kind != b"p":
            raise _refuse("08P01", "expected a SASL response")
        final = scram.final(body)
    except ScramError as exc:
        if str(exc) == "wrong password":
            raise failed from None
        raise _refuse("28000", f"SCRAM authentication failed: {exc}") from None
    if password is None:
        raise failed
    client.send(wire.auth(wire.AUTH_SASL_FINAL, final))
