"""The worker's branches: which one the next test gets, resets in the background, write checks.

A pytest process (a plain run or an xdist worker) takes turns on one or more branches
(``--neon-worker-branches``). After a test that may have written, its write check is sent;
its answer is read before the next test, and a reset starts in the background if the test
wrote. A checkout hands out a clean branch, waiting only for what is left of a reset.
Never imports pytest.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait

from pytest_neon.background import Background
from pytest_neon.branch_ops import BranchOps
from pytest_neon.errors import NeonError
from pytest_neon.neon_branch import NeonBranch
from pytest_neon.probe import WriteProbe

log = logging.getLogger("pytest_neon.branches")

#: background resets of a worker branch that may fail in a row before it is given up
MAX_RESET_FAILURES = 3

#: seconds a WAL position from the end of a check may serve as the start of the next one
POSITION_MAX_AGE = 1.0


class SlotState(enum.Enum):
    """Where a worker branch is in its cycle."""

    MAKING = "making"  # being created, not usable yet
    CLEAN = "clean"  # in the migrated state, ready for a test
    DIRTY = "dirty"  # a test may have written; no reset under way (or it failed)
    BUSY = "busy"  # background work (a reset, its creation) under way or not yet taken


class Slot:
    """One worker branch and what this process knows of it."""

    dirty: bool = False
    pending: Future[bool] | None = None  # background work: True when it reset the branch
    probe: WriteProbe | None = None
    clean_position: str | None = None  # where the next write check may start
    clean_at: float = 0.0  # when clean_position was read (monotonic)
    failures: int = 0  # background resets failed in a row
    handed_out: bool = False  # given to a test since it was last in the migrated state

    def __init__(self, branch: NeonBranch | None) -> None:
        self.branch = branch  # None while it is being created

    @property
    def state(self) -> SlotState:
        """The slot's state, from what it holds."""
        if self.branch is None:
            return SlotState.MAKING
        if self.pending is not None:
            return SlotState.BUSY
        return SlotState.DIRTY if self.dirty else SlotState.CLEAN

    @property
    def ready(self) -> bool:
        """Usable now: created, clean, no background work on it."""
        return self.state is SlotState.CLEAN

    def keep_position(self, position: str | None, read_at: float | None = None) -> None:
        """Remember ``position`` (read at monotonic ``read_at``, default now) as a start for
        the next write check."""
        self.clean_position = position
        self.clean_at = time.monotonic() if read_at is None else read_at

    def take_position(self) -> str | None:
        """The kept position if it is recent (a check from an old one reads much WAL)."""
        position, self.clean_position = self.clean_position, None
        if position is not None and time.monotonic() - self.clean_at > POSITION_MAX_AGE:
            return None
        return position


class WorkerPool:
    """The branches one pytest process takes turns on, and their resets."""

    def __init__(
        self,
        ops: BranchOps,
        *,
        worker: str,
        size: int = 1,
        inspector_url: str | None = None,
    ) -> None:
        """``worker``: this process's name (``main``, ``gw0``…); ``size``: branches to take
        turns on; ``inspector_url``: a local server's superuser DSN for ``pg_walinspect``."""
        self.ops = ops
        self.worker = worker
        self.size = max(1, size)
        self.inspector_url = inspector_url
        self.counters = ops.counters
        self.source_id: str | None = None  # the branch a reset restores from
        self.slots: list[Slot] = []  # the first one holds the first worker branch
        self._current: Slot | None = None  # the one the running (or last) test got
        self._grown = False  # the other branches are made (or being made)
        self._closing = False  # the run is ending: no reset starts any more
        #: the branch whose state the first branch holds, when it was not made from the
        #: parent (a parked project's, taken over): adopting another source restores it
        self.at_source: str | None = None
        self.background = Background(size=self.size)

    def resize(self, size: int) -> None:
        """Take turns on ``size`` branches (before :meth:`adopt` makes the others)."""
        if self.source_id is None:
            self.size = max(1, size)
            self.background.size = self.size

    @property
    def current_branch(self) -> NeonBranch | None:
        """The branch the running (or last) test got: the first one before any test."""
        return self._current.branch if self._current is not None else None

    def branches(self) -> list[NeonBranch]:
        """This process's worker branches made so far."""
        return [s.branch for s in self.slots if s.branch is not None]

    @property
    def first_branch(self) -> NeonBranch | None:
        """The worker branch made first (``None`` before :meth:`start`)."""
        return self.slots[0].branch if self.slots else None

    def start(self, existing: NeonBranch | None = None) -> NeonBranch:
        """Create this process's first worker branch from the parent (once), or take
        ``existing``.

        Its operations are not waited for here: :meth:`checkout` does, when a test needs it.
        """
        if not self.slots:
            slot = Slot(existing or self.ops.create(self.worker, wait=False))
            self.slots.append(slot)
            self._current = slot
        branch = self.slots[0].branch
        assert branch is not None
        return branch

    def adopt(self, source_id: str) -> None:
        """Use ``source_id`` (the migrated state) from now on; bring the first branch there.

        With more than one branch per worker, the others are made in the background when
        the first test that may write starts (:meth:`_grow`): a run with none never makes
        them.
        """
        if self.source_id is not None:
            return
        branch = self.start()
        if source_id != (self.at_source or self.ops.parent_id):
            self.ops.restore(branch, source_id)
            self.background.after_reset(branch)
        self.source_id = source_id
        for slot in self.slots:
            slot.dirty = False

    def _grow(self) -> None:
        """Start making the other branches (once, for the first test that may write)."""
        if self._grown or self._closing or self.source_id is None or len(self.slots) >= self.size:
            return
        self._grown = True
        for n in range(len(self.slots), self.size):
            slot = Slot(None)
            slot.pending = self.background.submit(self._make_spare, slot, f"{self.worker}-{n + 1}")
            self.slots.append(slot)

    def _make_spare(self, slot: Slot, suffix: str) -> bool:
        try:
            slot.branch = self.ops.create(suffix, source_id=self.source_id, wait_for_room=False)
        except NeonError as exc:  # (at the limit, when auto chose two without knowing it)
            quiet = self.ops.settings.worker_branches is None
            (log.info if quiet else log.warning)(
                "pytest-neon: worker branch %s not made (%s): one fewer", suffix, exc
            )
        return False  # nothing to tell the listeners: nobody has used it yet

    # -- checkout --------------------------------------------------------------------------

    def checkout(self) -> NeonBranch:
        """A worker branch in the migrated state: the last one used when it is clean.

        Otherwise another clean one, else the first whose background reset (or write check)
        ends: only the part still running is waited for. A dirty branch with no reset under
        way is reset now.
        """
        self.start()
        assert self._current is not None
        self._conclude_check(self._current)
        self._tend_the_others()
        slot = self._take_a_slot()
        if slot.dirty:
            self._reset(slot)
            slot.dirty = False
            assert slot.branch is not None
            self.background.after_reset(slot.branch)
        self._current = slot
        slot.handed_out = True
        assert slot.branch is not None
        self.ops.wait_ready(slot.branch.branch_id)
        return slot.branch

    def _tend_the_others(self) -> None:
        """Retry the failed reset of a branch, take the finished work of others."""
        for other in self.slots:
            if other is self._current:
                continue
            if other.dirty and other.pending is None:  # its background reset failed: again
                other.pending = self.background.submit(self._reset, other)
            elif other.pending and other.pending.done() and other.pending.exception() is None:
                self._settle(other)  # made or reset meanwhile: ready before the current one

    def _take_a_slot(self) -> Slot:
        """The slot the next test gets, settled (a failed reset raises, the slot dirty)."""
        assert self._current is not None
        while True:
            slot = self._current
            if not slot.ready:
                slot = next((s for s in self.slots if s.ready), slot)
            if not slot.ready and len(self.slots) == 1:
                self.background.run_here(slot)
            if not slot.ready:
                finished = self._wait_for_one()
                if finished is None:
                    continue  # some failed while others may still end well
                slot = finished
            self._settle(slot)
            if slot.branch is not None:
                return slot
            self.slots.remove(slot)  # it could not be created

    def _wait_for_one(self) -> Slot | None:
        """Wait until a slot's background work ends; the slot (a good one first), or
        ``None`` when only failures ended and others are still under way."""
        busy = {s.pending: s for s in self.slots if s.pending is not None}
        if not busy:
            assert self._current is not None
            return self._current
        with self.counters.phase("wait for reset"):
            done, _ = wait(busy, return_when=FIRST_COMPLETED)
        finished = [busy[f] for f in busy if f in done]
        good = [s for s in finished if s.pending and s.pending.exception() is None]
        if not good and len(finished) < len(busy):
            for failed in finished:
                self._set_aside(failed)
            return None
        return (good or finished)[0]  # a failure reaches the test only as a last resort

    def _settle(self, slot: Slot) -> None:
        """Take the result of ``slot``'s finished background work."""
        pending, slot.pending = slot.pending, None
        if pending is not None and pending.result() and slot.branch is not None:
            slot.dirty = False
            slot.handed_out = False
            slot.failures = 0
            self.background.after_reset(slot.branch)

    def _set_aside(self, slot: Slot) -> None:
        """``slot``'s background reset failed while other branches may do: note it; it is
        retried at a later checkout, and after three failures in a row it is given up."""
        pending, slot.pending = slot.pending, None
        error = pending.exception() if pending is not None else None
        slot.failures += 1
        name = slot.branch.branch_id if slot.branch else "?"
        if slot.failures >= MAX_RESET_FAILURES and len(self.slots) > 1:
            log.warning("pytest-neon: giving up worker branch %s: %s", name, error)
            self.slots.remove(slot)
            if self._current is slot:
                self._current = self.slots[0]
        else:
            log.warning("pytest-neon: reset of worker branch %s failed: %s", name, error)

    # -- write checks ----------------------------------------------------------------------

    def write_position(self) -> str | None:
        """The checked-out branch's WAL position, read on the plugin's own connection.

        A position kept from the end of the last check serves when nothing can have been
        written since (it is never later than the branch's clean state: a check that
        starts there sees at least every write made after it).
        """
        self.start()
        self._grow()  # a test that may write: the next one may need another branch
        slot = self._current
        assert slot is not None
        assert slot.branch is not None
        if slot.probe is None:
            self.ops.wait_ready(slot.branch.branch_id)
            slot.probe = WriteProbe(slot.branch.connection_string, self.inspector_url)
        position = slot.take_position()
        if position is not None:
            return position
        with self.counters.phase("write check"):
            return slot.probe.position()

    def forget_position(self) -> None:
        """The last test may have left WAL on its branch that is not a change (work rolled
        back): the next write check must not start from a position kept before it."""
        if self._current is not None:
            self._current.take_position()

    def finish_test(self, before: str | None, *, force: bool = False) -> None:
        """After a readwrite test: reset its branch if it wrote (or ``force``).

        The write check is only sent here: the server answers it while pytest moves on.
        The answer is read before the next test (:meth:`between_tests`), which starts the
        reset in the background if there is one; the next test that needs the branch waits
        for what is left of it. An unknown position counts as written.
        """
        slot = self._current
        if slot is None or slot.branch is None:
            return
        if slot.dirty or slot.pending is not None:
            return  # a reset is needed or under way already (an integration asked for it)
        if force or slot.probe is None:
            self.mark_dirty()
            return
        slot.probe.start_check(before)

    def between_tests(self) -> None:
        """Before any test: read the last readwrite test's write check and start the reset
        it calls for in the background (the next test may not need the branch)."""
        if self._current is not None:
            self._conclude_check(self._current)

    def _conclude_check(self, slot: Slot) -> None:
        """Read the answer of ``slot``'s write check; if its test wrote, the branch is dirty
        and its reset starts in the background."""
        started_at = slot.probe.check_started_at if slot.probe is not None else None
        if slot.probe is None or started_at is None:
            return
        with self.counters.phase("write check"):
            wrote, after = slot.probe.finish_check()
        if not wrote:
            slot.keep_position(after, read_at=started_at)
            self.counters.add("resets_skipped")
            return
        if slot.probe.position_survives_reset:
            slot.keep_position(after, read_at=started_at)
        self._dirty(slot)

    def mark_dirty(self) -> None:
        """The last test may have written: reset its branch in the background.

        The next :meth:`checkout` waits for whatever is left of it, or takes another branch.
        """
        slot = self._current
        if slot is None or slot.branch is None:
            return
        if slot.probe is not None and slot.probe.check_started_at is not None:
            slot.probe.finish_check()  # reset anyway: its answer is moot
        self._dirty(slot)

    def _dirty(self, slot: Slot) -> None:
        """``slot``'s test may have written: its reset starts in the background (not at
        the end of the run: the branch is deleted)."""
        slot.dirty = True
        if slot.pending is None and not self._closing:
            slot.pending = self.background.submit(self._reset, slot)

    def _reset(self, slot: Slot) -> bool:
        """Restore ``slot``'s branch from the source (on a background thread, mostly)."""
        assert slot.branch is not None
        moves = slot.probe is not None and not slot.probe.position_survives_reset
        if moves and slot.probe is not None:
            slot.probe.close()  # it is connected to the branch: the reset would cut it
        self.ops.restore(slot.branch, self.source_id or self.ops.parent_id)
        self.counters.add("resets_done")  # a reset; bringing a new branch to the source is not
        if moves and slot.probe is not None:
            # the branch's new position, read now, off the next test's path
            slot.keep_position(slot.probe.position())
        return True

    def add_reset_listener(self, listener: Callable[[NeonBranch], None]) -> None:
        """Call ``listener(branch)`` after every reset of a worker branch.

        Integrations use it to drop pooled connections that the reset cut.
        """
        self.background.listeners.append(listener)

    def resetting(self) -> set[str]:
        """Ids of the branches whose background work is under way."""
        return {
            s.branch.branch_id
            for s in self.slots
            if s.branch is not None and s.pending is not None and not s.pending.done()
        }

    def parkable(self) -> tuple[NeonBranch, bool] | None:
        """After :meth:`shutdown`: the only branch, and whether it is still as the source
        left it (no test had it since its last reset: even a test whose transaction was
        rolled back moves sequences); ``None`` when there are others, or work on it."""
        if len(self.slots) != 1:
            return None
        slot = self.slots[0]
        if slot.branch is None or slot.pending is not None:
            return None
        return slot.branch, not (slot.dirty or slot.handed_out)

    def shutdown(self) -> None:
        """Wait for background work (its errors no longer matter); close connections."""
        self._closing = True
        for slot in self.slots:
            self._conclude_check(slot)
            pending, slot.pending = slot.pending, None
            if pending is not None:
                try:
                    if pending.result():  # a reset
                        slot.dirty = slot.handed_out = False
                except Exception as exc:
                    log.debug("background work failed at the end of the run: %s", exc)
        self.background.shutdown()
        for slot in self.slots:
            if slot.probe is not None:
                slot.probe.close()
                slot.probe = None
