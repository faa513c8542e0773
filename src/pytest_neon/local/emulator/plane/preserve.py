"""A restore's ``preserve_under_name``: the branch's state before the restore is kept as a
new branch of that name (a copy of each of its databases, no compute), which the restored
branch and its children then hang from."""

from __future__ import annotations

from pytest_neon.local.emulator import ids
from pytest_neon.local.emulator.plane.cloning import CloneJob, clone_all
from pytest_neon.local.emulator.plane.context import PlaneContext
from pytest_neon.local.emulator.records import BranchRecord, DatabaseRecord
from pytest_neon.local.emulator.sql import metadata
from pytest_neon.local.emulator.sql.server import Connection
from pytest_neon.local.emulator.timestamps import utcnow


def preserve(ctx: PlaneContext, branch: BranchRecord, name: str) -> BranchRecord:
    """Copy ``branch`` (in flight: nobody else changes it) into a new branch ``name``."""
    now = utcnow()
    with ctx.lock:
        backup_id = ctx.new_branch_id(name)
        backup = BranchRecord(
            id=backup_id,
            name=name,
            parent_id=branch.parent_id,
            default=False,
            protected=False,
            created_at=now,
            updated_at=now,
            busy_since=now,
            busy_until=now,
            busy_state="init",
            visible=False,
            inflight=True,
        )
        clones = []
        for db in branch.databases:
            real = ids.real_database_name()
            clones.append(CloneJob(db.real_name, db.name, db.owner_name, real, real))
            backup.databases.append(DatabaseRecord(db.name, db.owner_name, real, now, now))
        ctx.project.branches[backup.id] = backup
    try:
        ctx.databases.close_sessions([db.real_name for db in branch.databases])
        clone_all(ctx, clones, backup.id)
        with ctx.lock:
            ctx.metadata.persist(lambda conn: metadata.insert_branch(conn, ctx.project_id, backup))
            backup.visible, backup.inflight = True, False
    except BaseException:
        with ctx.lock:
            ctx.project.branches.pop(backup.id, None)
        for clone in clones:
            ctx.databases.drop_quietly(clone.target)
        raise
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
