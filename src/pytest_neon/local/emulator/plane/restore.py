"""Restoring a branch from another (``POST /branches/{id}/restore``): the branch's databases
become copies of the source's, under the same real names, so that its DSN stays valid.

A copy is made under a temporary name (or a spare made earlier is taken) and swapped into
place; the old copy is dropped off the critical path. Spares of the source are then made in
the background for the next restore.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from pytest_neon.local.emulator import ids, views
from pytest_neon.local.emulator.api_errors import bad_request, locked, unprocessable
from pytest_neon.local.emulator.plane.cloning import CloneJob, clone_all
from pytest_neon.local.emulator.plane.context import PlaneContext
from pytest_neon.local.emulator.plane.operations import Operations
from pytest_neon.local.emulator.plane.preserve import hang_from, preserve
from pytest_neon.local.emulator.records import JSON, BranchRecord, DatabaseRecord
from pytest_neon.local.emulator.sql import metadata
from pytest_neon.local.emulator.sql.server import Connection
from pytest_neon.local.emulator.sql.swap import StaleCopyError
from pytest_neon.local.emulator.timestamps import utcnow

log = logging.getLogger("pytest_neon.emulator")

#: a spare's source database and its activity snapshot when the spare was made
Expectation = tuple[str, tuple[int, ...]]


@dataclass
class _Plan:
    """A restore under way: the branch, its source, what to copy and what to drop."""

    branch: BranchRecord
    source: BranchRecord
    current: dict[str, DatabaseRecord]  # the branch's databases before, by logical name
    clones: list[CloneJob]
    leftovers: list[str]  # real databases of the branch that the source does not have


class BranchRestore:
    """``POST /branches/{branch_id}/restore``."""

    def __init__(self, ctx: PlaneContext, operations: Operations) -> None:
        self._ctx = ctx
        self._operations = operations

    def restore_branch(self, branch_id: str, body: JSON) -> JSON:
        """Reset ``branch_id`` to the current state of ``source_branch_id`` (same DSN);
        with ``preserve_under_name``, its state before is kept as a new branch."""
        source_id = _source_id(body)
        keep_as = _preserve_under(body)
        plan = self._begin(branch_id, source_id, preserving=keep_as is not None)
        if not isinstance(plan, _Plan):
            return plan  # its operation fails (an injected fault): nothing was done
        backup = None
        try:
            if keep_as is not None:
                try:
                    backup = preserve(self._ctx, plan.branch, keep_as)
                except BaseException:
                    with self._ctx.lock:
                        plan.source.pins -= 1
                    raise
            self._copy_in(plan)
            self._tidy_up(plan)
        except BaseException:
            with self._ctx.lock:
                plan.branch.inflight = False
            raise
        if backup is not None:
            with self._ctx.lock:
                hang_from(self._ctx, backup, plan.branch)
        return self._finish(plan)

    def _begin(self, branch_id: str, source_id: str, *, preserving: bool) -> _Plan | JSON:
        """Check the branches, then mark the branch in flight and pin the source; or, when
        the operation is to fail, answer at once."""
        ctx = self._ctx
        now = utcnow()
        with ctx.lock:
            branch = ctx.branch(branch_id)
            if source_id == branch.id:
                raise bad_request(
                    "restoring a branch to its own history needs source_lsn or"
                    " source_timestamp, which the emulator does not support"
                )
            source = ctx.branch(source_id, "source branch")
            if branch.protected:
                raise unprocessable("cannot reset protected branch")
            if ctx.project.children(branch.id) and not preserving:
                raise bad_request(
                    f"branch {branch.id} has children: restoring it needs preserve_under_name"
                )
            if branch.busy(now) or branch.pins or source.busy(now):
                raise locked()
            if ctx.faults.operation_fails():
                self._operations.mark_busy(branch, "resetting", now)
                steps = [("suspend_compute", True), ("create_timeline", False)]
                ops = self._operations.start_failing(branch, steps, now)
                return {
                    "branch": views.branch_view(ctx.project_id, branch, now),
                    "operations": self._operations.views_of(ops, now),
                }
            plan = _plan(branch, source)
            branch.inflight = True
            source.pins += 1
            return plan

    def _copy_in(self, plan: _Plan) -> None:
        """Put a copy of each source database in place (unpinning the source after); a
        copy not yet in place when this fails is dropped."""
        pending: list[str] = []  # copies made or taken for this restore, not yet in place
        try:
            try:
                self._copy_all(plan, pending)
            finally:
                with self._ctx.lock:
                    plan.source.pins -= 1
        except BaseException:
            for name in pending:  # never leave an orphan copy behind
                self._ctx.spares.drop_later(name)
            raise

    def _copy_all(self, plan: _Plan, pending: list[str]) -> None:
        """Take a spare for each clone where there is one, clone the others, then put each
        in place."""
        spares = self._ctx.spares
        fresh = []
        expect: dict[str, Expectation] = {}
        for clone in plan.clones:
            spare = spares.take((clone.template, plan.branch.id, clone.name))
            if spare is None:
                fresh.append(clone)
            else:
                clone.temp = spare.real_name
                expect[clone.name] = (clone.template, spare.snapshot)
                pending.append(spare.real_name)
        clone_all(self._ctx, fresh, plan.branch.id)
        pending.extend(clone.temp for clone in fresh)
        for clone in plan.clones:
            self._put_in_place(clone, plan.branch.id, plan.current, expect.get(clone.name), pending)

    def _put_in_place(
        self,
        clone: CloneJob,
        branch_id: str,
        current: Mapping[str, DatabaseRecord],
        expect: Expectation | None,
        pending: list[str],
    ) -> None:
        """Move ``clone.temp`` to ``clone.target``; a stale spare is replaced by a fresh copy.

        The branch's sessions on the old copy are cut; it is dropped off the critical path.
        """
        ctx = self._ctx
        try:
            if clone.name in current:
                ctx.spares.drop_later(ctx.swapper.swap_in(clone.target, clone.temp, expect=expect))
            else:
                if expect is not None and ctx.swapper.activity_snapshot(expect[0]) != expect[1]:
                    raise StaleCopyError(expect[0])
                ctx.databases.rename(clone.temp, clone.target)
        except StaleCopyError:
            pending.remove(clone.temp)
            ctx.spares.drop_later(clone.temp)
            clone.temp = ids.real_database_name()
            clone_all(ctx, [clone], branch_id)
            pending.append(clone.temp)
            self._put_in_place(clone, branch_id, current, None, pending)
            return
        pending.remove(clone.temp)

    def _tidy_up(self, plan: _Plan) -> None:
        """Drop the databases the source does not have; make spares for the next restore."""
        for real in plan.leftovers:
            self._ctx.databases.drop(real)
        for clone in plan.clones:
            self._ctx.spares.prepare((clone.template, plan.branch.id, clone.name), clone.owner)

    def _finish(self, plan: _Plan) -> JSON:
        """Record the branch's new databases and its operations; answer."""
        ctx = self._ctx
        branch, current, clones = plan.branch, plan.current, plan.clones
        with ctx.lock:
            done = utcnow()
            branch.databases = [
                DatabaseRecord(
                    c.name,
                    c.owner,
                    c.target,
                    current[c.name].created_at if c.name in current else done,
                    done,
                )
                for c in clones
            ]
            branch.updated_at = branch.last_reset_at = done
            if branch.ttl_seconds is not None:
                branch.expires_at = done + timedelta(seconds=branch.ttl_seconds)
            self._operations.mark_busy(branch, "resetting", done)
            ops = self._operations.start(
                branch,
                [("suspend_compute", True), ("create_timeline", False), ("start_compute", True)],
                done,
            )

            def change(conn: Connection) -> None:
                metadata.update_branch(conn, ctx.project_id, branch)
                metadata.insert_operations(conn, ctx.project_id, ops)

            # When every database kept its real name, only timestamps and operations change:
            # those are written behind the response.
            same = not plan.leftovers and all(c.name in current for c in clones)
            ctx.metadata.persist(change, wait=not same)
            branch.inflight = False
            log.info("restored branch %s from %s", branch.id, plan.source.id)
            return {
                "branch": views.branch_view(ctx.project_id, branch, done),
                "operations": self._operations.views_of(ops, done),
            }


def _source_id(body: JSON) -> str:
    """The source branch of a restore request, which asks for nothing the emulator lacks."""
    source_id = body.get("source_branch_id")
    if not isinstance(source_id, str) or not source_id:
        raise bad_request("source_branch_id is required")
    for field in ("source_lsn", "source_timestamp"):  # (0 or false too: not silently dropped)
        if body.get(field) not in (None, ""):
            raise bad_request(
                f"{field} is not supported by the emulator (no point-in-time restore)"
            )
    return source_id


def _preserve_under(body: JSON) -> str | None:
    """The name to keep the branch's state under, if the request asks for it."""
    name = body.get("preserve_under_name")
    if name is None or name == "":
        return None
    if not isinstance(name, str) or len(name) > 256:
        raise bad_request("preserve_under_name must be a branch name (1 to 256 characters)")
    return name


def _plan(branch: BranchRecord, source: BranchRecord) -> _Plan:
    """A copy of each source database, to land on the real name the branch has for that
    database (a new one where it has none); the branch's databases the source lacks go."""
    current = {db.name: db for db in branch.databases}
    clones = []
    for db in source.databases:
        existing = current.get(db.name)
        target = existing.real_name if existing else ids.real_database_name()
        clones.append(
            CloneJob(db.real_name, db.name, db.owner_name, target, ids.real_database_name())
        )
    wanted = {db.name for db in source.databases}
    leftovers = [db.real_name for db in branch.databases if db.name not in wanted]
    return _Plan(branch, source, current, clones, leftovers)
