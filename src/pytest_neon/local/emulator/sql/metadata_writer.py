"""The project's metadata connection (it holds the project's lock) and the one thread that
writes changes to the metadata tables, in the order they were made."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from pytest_neon.local.emulator.records import ProjectRecord
from pytest_neon.local.emulator.sql import metadata
from pytest_neon.local.emulator.sql.server import Connection, SqlServer

log = logging.getLogger("pytest_neon.emulator")


class MetadataWriter:
    """Writes one project's changes to the metadata tables, in order, on one thread."""

    def __init__(self, server: SqlServer, project_id: str) -> None:
        self._server = server
        self._project_id = project_id
        self._meta: Connection | None = None
        self._meta_lock = threading.Lock()
        # Every metadata change is written by this one thread, in the order it was made.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="neon-emulator-store")

    def open(self) -> ProjectRecord | None:
        """Connect, make the tables if missing and take the project lock; return the stored
        project, or ``None`` when there is none."""
        meta = self._server.connect()
        self._meta = meta
        metadata.ensure_schema(meta)
        if not metadata.try_lock_project(meta, self._project_id):
            raise RuntimeError(f"project {self._project_id} is already served by another emulator")
        return metadata.load_project(meta, self._project_id)

    def close(self) -> None:
        """Write the changes not yet written; release the connection (and the project lock)."""
        self._writer.shutdown(wait=True)  # changes not yet written are written first
        with self._meta_lock:
            if self._meta is not None:
                self._meta.close()
                self._meta = None

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """The metadata connection inside a transaction (reconnects once if it broke)."""
        with self._meta_lock:
            meta = self._meta
            if meta is None or meta.closed or meta.broken:
                if meta is not None:
                    meta.close()
                meta = self._server.connect()
                if not metadata.try_lock_project(meta, self._project_id):
                    log.warning("could not re-take the lock of project %s", self._project_id)
                self._meta = meta
            # Pipelined: a whole change costs about one round trip to the server.
            with meta.pipeline(), meta.transaction():
                yield meta

    def persist(self, change: Callable[[Connection], None], *, wait: bool = True) -> None:
        """Write ``change`` to the metadata store after every change made before it.

        ``wait=False`` returns at once (write-behind): for changes whose loss in a crash
        costs nothing but timestamps, such as a restore that kept every database's name.
        """
        future = self._writer.submit(self._write, change, raising=wait)
        if wait:
            future.result()

    def flush(self) -> None:
        """Wait until the changes still being written are written."""
        self._writer.submit(lambda: None).result()

    def _write(self, change: Callable[[Connection], None], *, raising: bool) -> None:
        try:
            with self.transaction() as conn:
                change(conn)
        except Exception:
            if raising:
                raise
            log.exception("could not write a change to the metadata store")
