"""Copying a branch's databases: the real databases a create or restore clones from their
templates, made all or none (a 423 when a template stays in use)."""

from __future__ import annotations

from dataclasses import dataclass

from pytest_neon.local.emulator.api_errors import ApiError
from pytest_neon.local.emulator.plane.context import PlaneContext
from pytest_neon.local.emulator.sql.real_databases import TemplateBusyError


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
