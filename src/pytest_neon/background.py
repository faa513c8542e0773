"""Work on a worker's branches that runs while tests go on: resets and spare branches.

Never imports pytest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from pytest_neon.neon_branch import NeonBranch

log = logging.getLogger("pytest_neon.branches")


class HasWork(Protocol):
    """A slot of :mod:`pytest_neon.worker_pool`: what :meth:`Background.run_here` needs."""

    pending: Future[bool] | None
    dirty: bool


class Background:
    """A thread pool for a worker's branches, and the listeners told of every reset."""

    def __init__(self, *, size: int) -> None:
        self.size = max(1, size)
        #: called with the branch after every reset (integrations drop cut connections)
        self.listeners: list[Callable[[NeonBranch], None]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._jobs: dict[Future[bool], tuple[Callable[..., bool], tuple[Any, ...]]] = {}

    def submit(self, work: Callable[..., bool], *args: Any) -> Future[bool]:
        """Run ``work(*args)`` on a background thread; ``True`` from it means a reset."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.size, thread_name_prefix="pytest-neon-reset")
        future = self._executor.submit(work, *args)
        self._jobs[future] = (work, args)  # for run_here; forgotten once done
        future.add_done_callback(lambda f: self._jobs.pop(f, None))
        return future

    def run_here(self, slot: HasWork) -> None:
        """Do ``slot``'s background work on this thread if no thread has started it yet.

        The caller would only wait for it: this saves two thread hand-offs.
        """
        pending = slot.pending
        job = self._jobs.pop(pending, None) if pending is not None else None
        if pending is None or job is None or not pending.cancel():
            return
        work, args = job
        done: Future[bool] = Future()
        try:
            done.set_result(work(*args))
        except Exception as exc:
            done.set_exception(exc)
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): maybe half done
            slot.pending = None
            slot.dirty = True
            raise
        slot.pending = done

    def after_reset(self, branch: NeonBranch) -> None:
        """Tell the listeners that ``branch`` was reset."""
        for listener in list(self.listeners):
            try:
                listener(branch)
            except Exception:
                log.exception("reset listener %r failed", listener)

    def shutdown(self) -> None:
        """Wait for the threads to end."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
