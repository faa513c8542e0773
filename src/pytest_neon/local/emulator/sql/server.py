"""The PostgreSQL server behind the emulator, reached with a superuser DSN: a small pool of
connections, the server's version and host, and DSNs for the clients of a branch.

``CREATE DATABASE`` cannot run in a transaction block, so every connection is autocommit.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from pytest_neon.redact import register_secret

Connection = psycopg.Connection[tuple[Any, ...]]
APPLICATION_NAME = "pytest-neon-emulator"


def build_dsn(
    host: str, port: int, sslmode: str | None, role: str, password: str, dbname: str
) -> str:
    """``postgresql://role:password@host:port/dbname`` (URL-encoded; ``?sslmode`` if given).

    A Unix-socket directory as ``host`` goes into the query string, an IPv6 address in
    brackets.
    """
    query: dict[str, str] = {}
    if host.startswith("/"):
        query["host"], host = host, ""
    elif ":" in host:
        host = f"[{host}]"
    if sslmode:
        query["sslmode"] = sslmode
    uri = (
        f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}"
        f"@{host}:{port}/{quote(dbname, safe='')}"
    )
    return f"{uri}?{urlencode(query)}" if query else uri


class SqlServer:
    """The PostgreSQL server behind the emulator, reached with a superuser DSN.

    ``client_address`` (host, port) is where the branches' clients connect, when not where
    ``url`` does (the superuser over a Unix socket, the clients over TCP). ``tablespace``:
    where new databases go (default: their template's). ``clone_strategy``: the ``STRATEGY``
    of every clone (``FILE_COPY``, ``WAL_LOG``, or ``AUTO``: see :mod:`.clone_strategy`).
    """

    def __init__(
        self,
        url: str,
        pool_size: int = 8,
        *,
        client_address: tuple[str, int] | None = None,
        tablespace: str | None = None,
        clone_strategy: str = "FILE_COPY",
    ) -> None:
        self.url = url
        self.tablespace = tablespace
        self.clone_strategy = clone_strategy
        params = conninfo_to_dict(url)
        host = str(params.get("host") or "").split(",")[0]
        port = str(params.get("port") or "").split(",")[0]
        self.host: str = host
        self.port: int = int(port) if port else 5432
        if client_address is not None:
            self.host, self.port = client_address
        self.sslmode: str | None = str(params["sslmode"]) if params.get("sslmode") else None
        register_secret(str(params.get("password") or ""))
        self._idle: list[Connection] = []
        self._slots = threading.BoundedSemaphore(pool_size)
        self._lock = threading.Lock()
        self._closed = False
        with self.connection() as conn:
            self.server_version: int = conn.info.server_version

    @functools.cached_property
    def syncs(self) -> bool:
        """Whether the server syncs its writes to disk (``fsync``): then every ``DROP
        DATABASE`` and ``FILE_COPY`` clone forces a checkpoint that waits for the disk
        (asked once, by the first that needs it)."""
        with self.connection() as conn:
            row = conn.execute("SELECT current_setting('fsync') = 'on'").fetchone()
        return bool(row and row[0])

    @property
    def endpoint_host(self) -> str:
        """The host name clients use (what the endpoint objects report)."""
        return self.host or "localhost"

    def connect(self) -> Connection:
        """A new autocommit superuser connection (the caller closes it)."""
        conn = psycopg.connect(
            self.url, autocommit=True, application_name=APPLICATION_NAME, connect_timeout=10
        )
        conn.execute("SET TimeZone TO 'UTC'")  # timestamps come back in UTC
        return conn

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """Borrow an autocommit connection from the pool."""
        self._slots.acquire()
        conn: Connection | None = None
        try:
            with self._lock:
                while self._idle and conn is None:
                    candidate = self._idle.pop()
                    conn = None if candidate.closed else candidate
            if conn is None:
                conn = self.connect()
            yield conn
        finally:
            if conn is not None:
                reusable = (
                    not conn.closed
                    and not conn.broken
                    and conn.info.transaction_status == TransactionStatus.IDLE
                )
                with self._lock:
                    if reusable and not self._closed:
                        self._idle.append(conn)
                        conn = None
                if conn is not None:
                    conn.close()
            self._slots.release()

    def close(self) -> None:
        """Close the pooled connections; borrowed ones are closed when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def dsn(self, role: str, password: str, dbname: str) -> str:
        """A ``postgresql://`` URI for ``role`` to the real database ``dbname``."""
        return build_dsn(self.host, self.port, self.sslmode, role, password, dbname)
