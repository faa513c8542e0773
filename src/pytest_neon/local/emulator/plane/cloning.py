"""Copying a branch's databases: the real databases a create or restore clones from their
templates, made all or none (a 423 when a template stays in use); a new branch made of
such copies, stored and shown once they are all made."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pytest_neon.local.emulator import ids
from pytest_neon.local.emulator.api_errors import ApiError
from pytest_neon.local.emulator.plane.context import PlaneContext
from pytest_neon.local.emulator.records import BranchRecord, DatabaseRecord, OperationRecord
from pytest_neon.local.emulator.sql import metadata
from pytest_neon.local.emulator.sql.real_databases import TemplateBusyError
from pytest_neon.local.emulator.sql.server import Connection


@dataclass
class CloneJob:
    """One real database to create from a template during create or restore."""

    template: str
    name: str  # logical database name
    owner: str
    target: str  # the real name the branch ends up with
    temp: str  # where the clone is made first (== target when creating)


def clone_all(ctx: PlaneContext, clones: list[CloneJob], branch_id: str) -> None:
    """Make every clone (at its ``temp`` name); on failure drop the ones made."""
    made: list[str] = []
    try:
        for clone in clones:
            ctx.databases.clone(
                clone.template,
                clone.temp,
                clone.owner,
                ctx.comment,
                ctx.settings.clone_wait,
                evict_after=ctx.settings.evict_after,
            )
            made.append(clone.temp)
    except BaseException as exc:
        for name in made:
            ctx.databases.drop_quietly(name)
        if isinstance(exc, TemplateBusyError):
            raise ApiError(
                423,
                f"cannot copy the data for branch {branch_id}: {exc} (PostgreSQL cannot"
                " clone a database while sessions are connected to it; close them and"
                " retry)",
            ) from exc
        raise


def plan_copies(
    branch: BranchRecord,
    source: BranchRecord,
    now: datetime,
    *,
    real_name: str | None = None,
    template: str | None = None,
) -> list[CloneJob]:
    """A copy of each of ``source``'s databases for the new ``branch`` (its records get
    them). For a source with one database, ``real_name`` names the copy and ``template``
    is copied instead of the source's database."""
    only = len(source.databases) == 1
    clones = []
    for db in source.databases:
        real = real_name if real_name and only else ids.real_database_name()
        copied = template if template and only else db.real_name
        clones.append(CloneJob(copied, db.name, db.owner_name, real, real))
        branch.databases.append(DatabaseRecord(db.name, db.owner_name, real, now, now))
    return clones


def copy_in(
    ctx: PlaneContext,
    branch: BranchRecord,
    clones: list[CloneJob],
    *,
    before: Callable[[], None] | None = None,
    finish: Callable[[], list[OperationRecord]] | None = None,
) -> list[OperationRecord]:
    """Make the new ``branch`` (hidden, in the project already) of ``clones``: ``before``
    them, then under the lock ``finish`` (the branch's operations), store the branch
    with them and show it. On failure the branch and its operations are forgotten and
    the copies dropped."""
    try:
        if before is not None:
            before()
        clone_all(ctx, clones, branch.id)
        with ctx.lock:
            ops = finish() if finish is not None else []

            def change(conn: Connection) -> None:
                metadata.insert_branch(conn, ctx.project_id, branch)
                metadata.insert_operations(conn, ctx.project_id, ops)

            ctx.metadata.persist(change)
            branch.visible, branch.inflight = True, False
    except BaseException:
        with ctx.lock:
            project = ctx.project
            project.branches.pop(branch.id, None)
            for op in [o for o in project.operations.values() if o.branch_id == branch.id]:
                del project.operations[op.id]
        for clone in clones:
            ctx.databases.drop_quietly(clone.target)
        raise
    return ops
