"""Housekeeping: sweeping earlier runs' branches, keeping this run's alive, deleting them.

Never imports pytest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING

from pytest_neon.branch_ops import BranchOps
from pytest_neon.clock import utcnow
from pytest_neon.errors import NeonError, api_unavailable
from pytest_neon.naming import branch_name, ephemeral_of_another_run, of_run

if TYPE_CHECKING:
    from pytest_neon.api.types import Branch

log = logging.getLogger("pytest_neon.branches")

#: branches deleted at once at the end of a run
MAX_DELETES = 4
#: a failure to delete a branch: (branch id, why)
Failure = tuple[str, str]


def sweep_stale(ops: BranchOps, branches: list[Branch], max_age: int) -> list[str]:
    """Delete branches left by earlier runs; return their names.

    Only branches this plugin created (``pytest-neon-`` name *and* ``created-by``
    annotation), never ``pytest-neon-cache-*`` ones: those whose expiry passed, and
    those without an expiry created more than ``max_age`` seconds ago.
    """
    now = utcnow()
    old = now - timedelta(seconds=max_age)
    stale = [
        b
        for b in branches
        if ephemeral_of_another_run(b, ops.run_id)
        and (
            (b.expires_at is not None and b.expires_at <= now)
            or (b.expires_at is None and b.created_at is not None and b.created_at <= old)
        )
    ]
    stale.sort(key=lambda b: b.created_at or now, reverse=True)  # a child before its parent
    swept: list[str] = []
    for branch in stale:
        try:
            with ops.counters.phase("sweep"):
                ops.client.delete_branch(ops.project_id, branch.id)
        except NeonError as exc:
            log.warning("could not sweep stale branch %s (%s): %s", branch.name, branch.id, exc)
            if api_unavailable(exc):
                break
            continue
        log.info("swept stale branch %s (%s)", branch.name, branch.id)
        swept.append(branch.name)
    ops.counters.add("branches_swept", len(swept))
    return swept


class KeepAlive:
    """Every third of the expiry, pushes back the expiry of the branches still in use.

    The expiry is a safety net for crashed runs; without this, Neon would delete a branch
    a long run still uses: the migration branch, a module branch, or a worker branch whose
    tests stopped writing (only a reset restarts its clock).
    """

    def __init__(self, ops: BranchOps) -> None:
        self._ops = ops
        self._last = time.monotonic()

    def maybe(self, branch_ids: Iterable[str], *, resetting: set[str]) -> None:
        """Push back ``branch_ids``' expiry if it is time (not those being reset: a reset
        restarts the clock anyway)."""
        expiry = self._ops.settings.branch_expiry
        now = time.monotonic()
        if not expiry or now - self._last < expiry / 3:
            return
        self._last = now
        for branch_id in dict.fromkeys(b for b in branch_ids if b not in resetting):
            try:
                self._ops.set_expiry(branch_id, expiry)
            except NeonError as exc:
                log.warning("could not push back the expiry of branch %s: %s", branch_id, exc)


def delete_created(ops: BranchOps, *, keep: str = "") -> tuple[list[Failure], bool]:
    """Delete every branch this process created but ``keep``, several at a time.

    A run's branches all expire, so none has children: any order will do. Returns the
    failures and whether the API was found unavailable (then what is left is not tried:
    it would wait as long and fail the same way).
    """
    todo = [b for b in reversed(list(ops.created)) if b != keep]
    failures: list[Failure] = []
    api_down = threading.Event()

    def delete(branch_id: str) -> None:
        if api_down.is_set():
            failures.append((branch_id, "not tried: the Neon API is unavailable"))
            return
        try:
            ops.delete(branch_id)
        except NeonError as exc:
            failures.append((branch_id, str(exc)))
            if api_unavailable(exc):
                api_down.set()

    if len(todo) < 2:
        for branch_id in todo:
            delete(branch_id)
    else:
        with ThreadPoolExecutor(min(MAX_DELETES, len(todo)), "pytest-neon-delete") as pool:
            list(pool.map(delete, todo))
    return failures, api_down.is_set()


def branches_of_run(ops: BranchOps) -> list[Branch]:
    """Every branch on the project that this run (any of its processes) created."""
    found = ops.client.list_branches(ops.project_id, search=branch_name(ops.run_id, ""))
    return [b for b in found if of_run(b, ops.run_id)]


def delete_run_branches(ops: BranchOps) -> list[Failure]:
    """Delete every branch of this run, created by any process (the controller's sweep)."""
    failures, api_down = delete_created(ops)
    if api_down:
        return failures
    try:
        leftovers = branches_of_run(ops)
    except NeonError as exc:
        return [*failures, ("(list)", str(exc))]
    for branch in leftovers:
        try:
            ops.delete(branch.id)
        except NeonError as exc:
            failures.append((branch.id, str(exc)))
    return failures
