"""The kept server's watchdog's own superuser connection, kept open between its polls.

A new connection costs the server a process of its own and a cold catalog cache, more than
the few queries the watchdog runs on it: one made every poll (every two seconds for as long
as the server runs), and three more for every run's sweep, added up to tens of
milliseconds of CPU a run, beside the run. The watchdog makes one, keeps it, and makes
it again when the server restarted (another port), dropped it, or a query on it failed
(so that no session state, an advisory lock say, outlives the failure).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import psycopg


class ServerLink:
    """One autocommit superuser connection, made when first needed."""

    def __init__(self, application_name: str = "pytest-neon-watchdog") -> None:
        self._application_name = application_name
        self._conn: psycopg.Connection[Any] | None = None
        self._url: str | None = None

    @contextlib.contextmanager
    def using(self, url: str) -> Iterator[psycopg.Connection[Any]]:
        """The connection to the server at ``url`` (made now if there is none to it);
        closed if what runs on it fails, to be made again next time."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken or url != self._url:
            self.close()
            conn = psycopg.connect(
                url, autocommit=True, connect_timeout=5, application_name=self._application_name
            )
            self._conn, self._url = conn, url
        try:
            yield conn
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the connection, if there is one."""
        conn, self._conn, self._url = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def connected(
    url: str, conn: psycopg.Connection[Any] | None
) -> AbstractContextManager[psycopg.Connection[Any]]:
    """``conn`` (left open), else a new autocommit connection to ``url`` (closed after):
    for what the watchdog runs on its link and a run on a connection of its own."""
    if conn is not None:
        return contextlib.nullcontext(conn)
    return psycopg.connect(url, autocommit=True, connect_timeout=10)
