"""One SQL statement run as the kept server's superuser over its Unix socket, without a
database driver: a run that takes over a parked project and never touches the database
does not pay for importing one (psycopg alone takes ~0.2 s to import here).

Speaks just enough of PostgreSQL's protocol (the emulator's proxy's wire helpers): a
trust login, one simple query, its errors.
"""

from __future__ import annotations

from pathlib import Path

from pytest_neon.local import SUPERUSER


class StatementFailed(RuntimeError):
    """The server refused the statement (or the login); the message is the server's."""


def quote_ident(name: str) -> str:
    """``name`` as an SQL identifier."""
    _no_nul(name)
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """``text`` as an SQL string literal (``standard_conforming_strings`` is on)."""
    _no_nul(text)
    return "'" + text.replace("'", "''") + "'"


def _no_nul(text: str) -> None:
    if "\0" in text:
        raise ValueError("SQL text cannot hold a NUL character")


def run_statement(root: Path, port: int, statement: str) -> None:
    """Run ``statement`` as the superuser of the kept server in ``root`` (its socket)."""
    from pytest_neon.local.emulator.proxy import wire
    from pytest_neon.local.emulator.proxy.backend_login import (
        BackendRefused,
        ServerAddress,
        log_in,
    )

    params = {"database": "postgres", "application_name": "pytest-neon"}
    try:
        login = log_in(ServerAddress(str(root), port), SUPERUSER, "", params)
    except BackendRefused as exc:
        raise StatementFailed(_text(wire.error_fields(exc.error[5:]))) from None
    conn = login.conn
    error: dict[str, str] | None = None
    try:
        conn.send(wire.message(b"Q", wire.cstring(statement)))
        while True:
            kind, body = conn.read_message()
            if kind == b"E":
                error = wire.error_fields(body)
            elif kind == b"Z":
                break
        conn.send(wire.message(b"X"))  # Terminate
    finally:
        conn.close()
    if error is not None:
        raise StatementFailed(_text(error))


def _text(fields: dict[str, str]) -> str:
    return f"{fields.get('M', 'the server refused')} (SQLSTATE {fields.get('C', '?')})"
