"""Pre-cloned spares: a restore becomes a swap (rename) instead of a copy.

After branch B is restored from source S, spare copies of S for B are cloned in the
background (two, so that restores in quick succession find one ready; three on a server
that syncs to disk, where a clone is slow). The next restore of
B from S swaps a spare in, if S has not changed since:
no session is connected to S and its activity counters in ``pg_stat_database`` (sessions,
commits, rollbacks) are the ones recorded before the spare was cloned. A session's counters
reach ``pg_stat_database`` when it disconnects (PostgreSQL 15+, where statistics live in
shared memory; older servers get no spares), so a change made and committed by a session
that has gone is always seen; otherwise the restore clones S afresh.

The copies swapped out are dropped in the background too. On a server that syncs to disk
(``fsync`` on) a ``DROP DATABASE`` forces a checkpoint, which competes with the clones'
own: there, while spares are being cloned, the copies swapped out wait (up to
:data:`HELD_BYTES` of them) and are dropped once no clone is under way. In a burst of
writing tests on such a server (the benchmark's) a writing test went from about one
clone and one drop to less than half of that; a third spare, cloned by a third thread,
took it from about one clone to about two thirds of one.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg

from pytest_neon.local import SPARES_PER_BRANCH
from pytest_neon.local.emulator import ids
from pytest_neon.local.emulator.sql.real_databases import RealDatabases, TemplateBusyError
from pytest_neon.local.emulator.sql.swap import DatabaseSwapper

log = logging.getLogger("pytest_neon.emulator")

Key = tuple[str, str, str]  # (template real name, branch id, logical database name)

HELD_BYTES = 1 << 30  # copies swapped out that may wait while spares are cloned (fsync on)
HELD_AT_LEAST = 2  # copies that may wait, however large


@dataclass(frozen=True)
class Spare:
    """A copy of a source database and the source's activity snapshot when it was made."""

    real_name: str
    snapshot: tuple[int, ...]


class SparePool:
    """Spare clones per (source database, branch, logical database), made in the background.

    ``depth`` spares are kept per key, so that back-to-back restores find one ready while
    the clone replacing the last one taken is still being made; one more on a server that
    syncs to disk (``workers`` threads clone and drop them).
    """

    def __init__(
        self,
        databases: RealDatabases,
        swapper: DatabaseSwapper,
        comment: str,
        *,
        workers: int = 3,
        depth: int = SPARES_PER_BRANCH,
    ) -> None:
        self._databases = databases
        self._swapper = swapper
        self._comment = comment
        self._depth = depth
        self._spares: dict[Key, list[Spare]] = {}
        self._cloning: dict[Key, int] = {}  # clones under way per key
        self._changed = threading.Condition()
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="neon-emulator-spare")
        self._closed = False
        self._hold = False  # drops wait for the clones (see the module): set by prepare()
        self._sizes: dict[str, int] = {}  # bytes of a copy, by template (measured once)
        self._trash: list[str] = []  # copies to drop, oldest first
        self._draining = False

    def take(self, key: Key) -> Spare | None:
        """A spare for ``key``, now owned by the caller, else ``None``.

        With none ready, waits for one still being cloned: that beats a clone from scratch.
        The caller swaps it in only if its source is still as the snapshot says (see
        ``DatabaseSwapper.swap_in``), and drops it otherwise.
        """
        with self._changed:
            self._changed.wait_for(
                lambda: self._spares.get(key) or not self._cloning.get(key), timeout=60
            )
            spares = self._spares.get(key)
            return spares.pop(0) if spares else None  # the oldest first

    def ready(self, branch_id: str) -> list[str] | None:
        """Real names of ``branch_id``'s ready spares; ``None`` while one is being cloned."""
        with self._changed:
            if any(key[1] == branch_id for key in self._cloning):
                return None
            return [s.real_name for k, v in self._spares.items() if k[1] == branch_id for s in v]

    @property
    def enabled(self) -> bool:
        """Spares need PostgreSQL 15+: before it, activity counters arrive late (through the
        statistics collector) and a change to the source could go unseen."""
        return self._databases.server.server_version >= 150000

    def prepare(self, key: Key, owner: str) -> None:
        """Clone spares of ``key``'s template in the background until ``depth`` are kept."""
        if not self.enabled:
            return
        hold = self._databases.server.syncs  # (asked once, not under the lock)
        with self._changed:
            if self._closed:
                return
            self._hold = hold
            kept = len(self._spares.get(key, [])) + self._cloning.get(key, 0)
            for _ in range(self._depth + (1 if hold else 0) - kept):
                self._cloning[key] = self._cloning.get(key, 0) + 1
                self._executor.submit(self._make, key, owner)

    def _make(self, key: Key, owner: str) -> None:
        template = key[0]
        name: str | None = None
        snapshot: tuple[int, ...] | None = None
        size = 0
        try:
            snapshot = self._swapper.activity_snapshot(template)
            if snapshot is None:
                return  # someone is connected to the template: no spare this time
            name = ids.real_database_name()
            self._databases.clone(template, name, owner, self._comment, wait=0.0)
            if self._hold and template not in self._sizes:
                size = self._databases.size(name)
        except (psycopg.Error, TemplateBusyError) as exc:
            log.debug("no spare of %s: %s", template, exc)
            name = None
        finally:
            stale: list[Spare] = []
            with self._changed:
                self._cloning[key] -= 1
                if size:
                    self._sizes[template] = size
                if not self._cloning[key]:
                    del self._cloning[key]
                if name is not None and snapshot is not None and not self._closed:
                    spares = self._spares.setdefault(key, [])
                    # spares cloned before the template changed are of no use any more
                    stale = [s for s in spares if s.snapshot != snapshot]
                    spares[:] = [s for s in spares if s.snapshot == snapshot]
                    spares.append(Spare(name, snapshot))
                    name = None
                self._changed.notify_all()
                self._drain_soon()
            for old in stale:
                self.drop_later(old.real_name)
            if name is not None:  # made after close
                self._databases.drop_quietly(name)

    def discard_branch(self, branch_id: str) -> None:
        """Drop every spare (and wait for every clone under way) of ``branch_id``."""
        with self._changed:
            self._changed.wait_for(
                lambda: not any(key[1] == branch_id for key in self._cloning), timeout=60
            )
            keys = [key for key in self._spares if key[1] == branch_id]
            doomed = [spare.real_name for key in keys for spare in self._spares.pop(key)]
        for name in doomed:
            self._databases.drop_quietly(name)

    def drop_later(self, real_name: str) -> None:
        """Drop a database in the background (a swapped-out branch copy or a stale spare)."""
        with self._changed:
            if not self._closed:
                self._trash.append(real_name)
                self._drain_soon()
                return
        self._databases.drop_quietly(real_name)

    def _may_wait(self) -> bool:
        """Whether the copies to drop may wait for now (the caller holds the lock)."""
        if not (self._hold and self._cloning):
            return False
        largest = max(self._sizes.values(), default=1)
        held = max(HELD_AT_LEAST, HELD_BYTES // largest)
        return len(self._trash) <= held

    def _drain_soon(self) -> None:
        """Start dropping the copies that may not wait (the caller holds the lock)."""
        if self._trash and not self._draining and not self._may_wait():
            self._draining = True
            self._executor.submit(self._drain)

    def _drain(self) -> None:
        """Drop copies, oldest first, until the rest may wait (one worker: the others
        stay free for clones)."""
        while True:
            with self._changed:
                if self._closed or not self._trash or self._may_wait():  # close() has the rest
                    self._draining = False
                    return
                name = self._trash.pop(0)
            self._databases.drop_quietly(name)

    def close(self, *, drop: bool = True) -> None:
        """Finish the background work and drop every spare; without ``drop`` (the whole
        project is dropped next, spares with it), work not started yet is cancelled and
        the spares are left."""
        with self._changed:
            self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=not drop)
        with self._changed:
            doomed = [spare.real_name for spares in self._spares.values() for spare in spares]
            doomed += self._trash
            self._spares.clear()
            self._trash.clear()
        if drop:
            self._databases.drop_all(doomed, quietly=True)
