"""A restore's ``preserve_under_name``: the branch's state before the restore is kept as a
new branch of that name (a copy of each of its databases, no compute), which the restored
branch and its children then hang from."""

from __future__ import annotations

from pytest_neon.local.emulator.plane.cloning import copy_in, plan_copies
from pytest_neon.local.emulator.plane.context import PlaneContext
from pytest_neon.local.emulator.records import BranchRecord
from pytest_neon.local.emulator.sql import metadata
from pytest_neon.local.emulator.sql.server import Connection
from pytest_neon.local.emulator.timestamps import utcnow


def preserve(ctx: PlaneContext, branch: BranchRecord, name: str) -> BranchRecord:
    """Copy ``branch`` (in flight: nobody else changes it) into a new branch ``name``."""
    now = utcnow()
    with ctx.lock:
        backup = BranchRecord.starting(
            ctx.new_branch_id(name), name, branch.parent_id, now, visible=False, inflight=True
        )
        clones = plan_copies(backup, branch, now)
        ctx.project.branches[backup.id] = backup
    sessions = [db.real_name for db in branch.databases]
    copy_in(ctx, backup, clones, before=lambda: ctx.databases.close_sessions(sessions))
    return backup


def hang_from(ctx: PlaneContext, backup: BranchRecord, branch: BranchRecord) -> None:
    """``branch`` and its children now come from ``backup`` (the caller holds the lock)."""
    moved = [branch, *ctx.project.children(branch.id)]
    for b in moved:
        b.parent_id = backup.id

    def change(conn: Connection) -> None:
        for b in moved:
            metadata.update_branch(conn, ctx.project_id, b)

    ctx.metadata.persist(change)
