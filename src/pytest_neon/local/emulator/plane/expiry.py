"""The expiry sweep: deleting branches whose ``expires_at`` has passed, as Neon's background
job does (run on every request and by the emulator's sweeper thread)."""

from __future__ import annotations

import logging
from datetime import datetime

from pytest_neon.local.emulator.plane.branches import Branches
from pytest_neon.local.emulator.plane.context import PlaneContext
from pytest_neon.local.emulator.records import BranchRecord
from pytest_neon.local.emulator.timestamps import utcnow

log = logging.getLogger("pytest_neon.emulator")


class ExpirySweep:
    """Deletes expired branches."""

    def __init__(self, ctx: PlaneContext, branches: Branches) -> None:
        self._ctx = ctx
        self._branches = branches

    def sweep(self) -> int:
        """Delete every expired branch; returns how many."""
        ctx = self._ctx
        with ctx.lock:
            if not ctx.is_open:
                return 0
            due = self._expired(utcnow())
            for b in due:
                b.inflight = True
        for b in due:
            try:
                self._branches.remove(b)
                log.info("branch %s (%s) expired and was deleted", b.id, b.name)
            except Exception:
                log.warning("could not delete expired branch %s", b.id, exc_info=True)
        return len(due)

    def _expired(self, now: datetime) -> list[BranchRecord]:
        project = self._ctx.project
        return [
            b
            for b in project.branches.values()
            if b.visible
            and not b.default
            and b.expires_at is not None
            and b.expires_at <= now
            and not b.inflight
            and not b.pins
            and not project.children(b.id)
        ]
