"""Pre-cloned spares: a restore becomes a swap (rename) instead of a copy.

After branch B is restored from source S, a spare copy of S for B is cloned in the
background. The next restore of B from S swaps the spare in, if S has not changed since:
no session is connected to S and its activity counters in ``pg_stat_database`` (sessions,
commits, rollbacks) are the ones recorded before the spare was cloned. A session's counters
reach ``pg_stat_database`` when it disconnects, so a change made and committed by a
session that has gone is always seen; otherwise the restore clones S afresh.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import psycopg

from pytest_neon.local.emulator import ids
from pytest_neon.local.emulator.pg import PgServer, TemplateBusyError

log = logging.getLogger("pytest_neon.emulator")

Key = tuple[str, str, str]  # (template real name, branch id, logical database name)


@dataclass(frozen=True)
class _Spare:
    real_name: str
    snapshot: tuple[int, ...]


class SparePool:
    """Spare clones per (source database, branch, logical database), made in the background."""

    def __init__(self, pg: PgServer, comment: str, *, workers: int = 2) -> None:
        self._pg = pg
        self._comment = comment
        self._spares: dict[Key, _Spare] = {}
        self._jobs: dict[Key, Future[None]] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="neon-emulator-spare")
        self._closed = False

    def take(self, key: Key) -> str | None:
        """A valid spare's real name for ``key`` (now owned by the caller), else ``None``."""
        with self._lock:
            job = self._jobs.get(key)
        if job is not None:
            job.result()  # a spare still being cloned is worth waiting for
        with self._lock:
            spare = self._spares.pop(key, None)
        if spare is None:
            return None
        if self._pg.activity_snapshot(key[0]) == spare.snapshot:
            return spare.real_name
        self.drop_later(spare.real_name)
        return None

    def prepare(self, key: Key, owner: str) -> None:
        """Clone a spare of ``key``'s template in the background (replacing an older one)."""
        with self._lock:
            if self._closed or key in self._jobs:
                return
            self._jobs[key] = self._executor.submit(self._make, key, owner)

    def _make(self, key: Key, owner: str) -> None:
        template = key[0]
        try:
            snapshot = self._pg.activity_snapshot(template)
            if snapshot is None:
                return  # someone is connected to the template: no spare this time
            name = ids.real_database_name()
            self._pg.clone_database(template, name, owner, self._comment, wait=0.0)
        except (psycopg.Error, TemplateBusyError) as exc:
            log.debug("no spare of %s: %s", template, exc)
            return
        finally:
            with self._lock:
                self._jobs.pop(key, None)
        with self._lock:
            closed = self._closed
            old = None if closed else self._spares.pop(key, None)
            if not closed:
                self._spares[key] = _Spare(name, snapshot)
        if closed:
            self._drop_now(name)
        elif old is not None:
            self.drop_later(old.real_name)

    def discard_branch(self, branch_id: str) -> None:
        """Drop every spare (and wait for every clone under way) of ``branch_id``."""
        with self._lock:
            jobs = [job for key, job in self._jobs.items() if key[1] == branch_id]
        for job in jobs:
            job.result()
        with self._lock:
            keys = [key for key in self._spares if key[1] == branch_id]
            doomed = [self._spares.pop(key).real_name for key in keys]
        for name in doomed:
            self._drop_now(name)

    def drop_later(self, real_name: str) -> None:
        """Drop a database in the background (a swapped-out branch copy or a stale spare)."""
        with self._lock:
            if not self._closed:
                self._executor.submit(self._drop_now, real_name)
                return
        self._drop_now(real_name)

    def _drop_now(self, real_name: str) -> None:
        try:
            self._pg.drop_database(real_name)
        except psycopg.Error:
            log.warning("could not drop database %s", real_name, exc_info=True)

    def close(self) -> None:
        """Finish the background work and drop every spare."""
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=True)
        with self._lock:
            doomed = [spare.real_name for spare in self._spares.values()]
            self._spares.clear()
        for name in doomed:
            self._drop_now(name)
