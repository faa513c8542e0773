"""Branches: read one, count, list (search, sort, keyset pagination), update (name,
protection, expiry) and delete. Creating one is :mod:`.branch_create`, restoring one
:mod:`.restore`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pytest_neon.local.emulator import views
from pytest_neon.local.emulator.api_errors import (
    ApiError,
    bad_request,
    locked,
    unprocessable,
)
from pytest_neon.local.emulator.plane.context import PlaneContext
from pytest_neon.local.emulator.plane.operations import Operations
from pytest_neon.local.emulator.plane.params import (
    decode_cursor,
    encode_cursor,
    expiry,
    json_object,
    page_limit,
)
from pytest_neon.local.emulator.records import JSON, BranchRecord, OperationRecord
from pytest_neon.local.emulator.sql import metadata
from pytest_neon.local.emulator.sql.server import Connection
from pytest_neon.local.emulator.timestamps import parse_rfc3339, utcnow

log = logging.getLogger("pytest_neon.emulator")

SORT_FIELDS = ("name", "created_at", "updated_at")


class Branches:
    """The project's branches: reads, updates, deletes."""

    def __init__(self, ctx: PlaneContext, operations: Operations) -> None:
        self._ctx = ctx
        self._operations = operations

    # --- reads ---------------------------------------------------------------------------------

    def get_branch(self, branch_id: str) -> JSON:
        """``BranchResponse`` + ``AnnotationResponse``."""
        with self._ctx.lock:
            branch = self._ctx.branch(branch_id)
            return {
                "branch": views.branch_view(self._ctx.project_id, branch, utcnow()),
                "annotation": views.annotation_view(branch),
            }

    def count_branches(self, query: Mapping[str, str]) -> JSON:
        """``BranchesCountResponse``."""
        search = query.get("search", "").lower()
        with self._ctx.lock:
            count = sum(
                1
                for b in self._ctx.project.branches.values()
                if b.visible and search in b.name.lower()
            )
        return {"count": count}

    def list_branches(self, query: Mapping[str, str]) -> JSON:
        """Branches with search, sorting and real cursor (keyset) pagination."""
        limit = page_limit(query.get("limit"), 10000)
        sort_by, sort_order, after = _sort_and_start(query)
        search = query.get("search", "").lower()
        descending = sort_order == "desc"

        def key(b: BranchRecord) -> tuple[Any, str]:
            return (getattr(b, sort_by), b.id)

        now = utcnow()
        with self._ctx.lock:
            chosen = [
                b
                for b in self._ctx.project.branches.values()
                if b.visible and (search in b.name.lower() or search in b.id)
            ]
            chosen.sort(key=key, reverse=descending)
            if after is not None:
                mark = after
                chosen = [b for b in chosen if (key(b) < mark if descending else key(b) > mark)]
            page = chosen if limit is None else chosen[:limit]
            pagination: JSON = {"sort_by": sort_by, "sort_order": sort_order}
            if limit is not None and len(chosen) > limit:
                pagination["next"] = _cursor_after(page[-1], sort_by, sort_order)
            return {
                "branches": [views.branch_view(self._ctx.project_id, b, now) for b in page],
                "annotations": {b.id: views.annotation_view(b) for b in page},
                "pagination": pagination,
            }

    # --- update --------------------------------------------------------------------------------

    def update_branch(self, branch_id: str, body: JSON) -> JSON:
        """Rename, (un)protect, or set/clear the expiry of a branch (``BranchOperations``)."""
        spec = json_object(body.get("branch"), "branch")
        now = utcnow()
        ctx = self._ctx
        with ctx.lock:
            branch = ctx.branch(branch_id)
            name = spec.get("name", branch.name)
            if not isinstance(name, str) or not 1 <= len(name) <= 256:
                raise bad_request("branch.name must be a string of 1 to 256 characters")
            if name != branch.name and any(b.name == name for b in ctx.project.branches.values()):
                raise ApiError(409, "branch already exists")
            protected = spec.get("protected", branch.protected)
            if not isinstance(protected, bool):
                raise bad_request("branch.protected must be a boolean")
            expires_at, ttl = self._new_expiry(branch, spec, now)
            if expires_at is not None and protected:
                raise bad_request("a protected branch cannot have an expiration time")
            if branch.busy(now):
                raise locked()
            branch.name, branch.protected = name, protected
            branch.expires_at, branch.ttl_seconds = expires_at, ttl
            branch.updated_at = now
            ctx.metadata.persist(lambda conn: metadata.update_branch(conn, ctx.project_id, branch))
            return {"branch": views.branch_view(ctx.project_id, branch, now), "operations": []}

    def _new_expiry(
        self, branch: BranchRecord, spec: JSON, now: datetime
    ) -> tuple[datetime | None, int | None]:
        """The expiry and time to live ``spec`` gives ``branch`` (unchanged without one)."""
        if "expires_at" not in spec:
            return branch.expires_at, branch.ttl_seconds
        if spec["expires_at"] is None:
            return None, None
        expires_at = expiry(spec["expires_at"], now, "branch.expires_at")
        ttl = round((expires_at - now).total_seconds())
        if branch.default:
            raise bad_request("the default branch cannot have an expiration time")
        if self._ctx.project.children(branch.id):
            raise unprocessable(
                f"branch {branch.id} has children:"
                " a branch with children cannot have an expiration time"
            )
        return expires_at, ttl

    # --- delete --------------------------------------------------------------------------------

    def delete_branch(self, branch_id: str) -> JSON | None:
        """Delete a branch and drop its databases; ``None`` when it is already gone (204)."""
        now = utcnow()
        ctx = self._ctx
        with ctx.lock:
            branch = ctx.project.branches.get(branch_id)
            if branch is None or not branch.visible:
                return None
            if branch.default:
                raise unprocessable("cannot delete default branch")
            if branch.protected:
                raise unprocessable("cannot delete protected branch")
            if ctx.project.children(branch.id):
                raise unprocessable(
                    f"cannot delete branch {branch.id}: it has child branches, delete them first"
                )
            if branch.busy(now) or branch.pins:
                raise locked()
            branch.inflight = True
        ops = self.remove(branch)
        log.info("deleted branch %s (%s)", branch.id, branch.name)
        done = utcnow()
        return {
            "branch": views.branch_view(ctx.project_id, branch, done),
            "operations": self._operations.views_of(ops, done),
        }

    def remove(self, branch: BranchRecord) -> list[OperationRecord]:
        """Drop the (in-flight) branch's databases and forget it."""
        ctx = self._ctx
        try:
            ctx.spares.discard_branch(branch.id)
            for db in branch.databases:
                ctx.databases.drop(db.real_name)
                ctx.databases.drop_derived(db.real_name)
        except BaseException:
            with ctx.lock:
                branch.inflight = False
            raise
        with ctx.lock:
            now = utcnow()
            ops = self._operations.start(
                branch, [("suspend_compute", True), ("delete_timeline", False)], now
            )

            def change(conn: Connection) -> None:
                metadata.delete_branch(conn, ctx.project_id, branch.id)
                metadata.insert_operations(conn, ctx.project_id, ops)

            ctx.metadata.persist(change)
            ctx.project.branches.pop(branch.id, None)
            for ep in branch.endpoints:
                ctx.endpoint_gone(ep.id)
            return ops

    # --- the default branch --------------------------------------------------------------------

    def set_as_default(self, branch_id: str) -> JSON:
        """Make ``branch_id`` the project's default branch (``BranchOperations``); the
        previous default branch is one no longer."""
        now = utcnow()
        ctx = self._ctx
        with ctx.lock:
            branch = ctx.branch(branch_id)
            if branch.expires_at is not None:
                raise bad_request(
                    "a branch that expires cannot be the default branch: clear its expires_at"
                )
            if branch.busy(now):
                raise locked()
            previous = ctx.project.default_branch()
            if previous.id != branch.id:
                previous.default, branch.default = False, True
                previous.updated_at = branch.updated_at = now

                def change(conn: Connection) -> None:
                    metadata.update_branch(conn, ctx.project_id, previous)
                    metadata.update_branch(conn, ctx.project_id, branch)

                ctx.metadata.persist(change)
            return {"branch": views.branch_view(ctx.project_id, branch, now), "operations": []}


def _sort_and_start(query: Mapping[str, str]) -> tuple[str, str, tuple[Any, str] | None]:
    """The sort field and order of a listing, and the key it starts after (from a cursor,
    which carries its own sort)."""
    sort_by = query.get("sort_by") or "updated_at"
    sort_order = query.get("sort_order") or "desc"
    after: tuple[Any, str] | None = None
    if query.get("cursor"):
        sort_by, sort_order, after = _from_cursor(query["cursor"])
    if sort_by not in SORT_FIELDS:
        raise bad_request(f"sort_by must be one of {', '.join(SORT_FIELDS)}")
    if sort_order not in ("asc", "desc"):
        raise bad_request("sort_order must be asc or desc")
    return sort_by, sort_order, after


def _from_cursor(text: str) -> tuple[str, str, tuple[Any, str]]:
    """The sort and start key of a cursor made by :func:`_cursor_after`; a 400 for any other,
    e.g. a forged key that cannot be compared with the branches' keys."""
    cursor = decode_cursor(text)
    sort_by, sort_order = cursor.get("by"), cursor.get("order")
    key, last_id = cursor.get("key"), cursor.get("id")
    if (
        sort_by not in SORT_FIELDS
        or sort_order not in ("asc", "desc")
        or not isinstance(key, str)
        or not isinstance(last_id, str)
    ):
        raise bad_request("invalid cursor")
    if sort_by == "name":
        return sort_by, sort_order, (key, last_id)
    try:  # an aware time, as the branches' times are (never a naive one)
        return sort_by, sort_order, (parse_rfc3339(key), last_id)
    except ValueError:
        raise bad_request("invalid cursor") from None


def _cursor_after(last: BranchRecord, sort_by: str, sort_order: str) -> str:
    """The cursor of the page that follows the one ending with ``last``."""
    value = getattr(last, sort_by)
    return encode_cursor(
        {
            "by": sort_by,
            "order": sort_order,
            "key": value if sort_by == "name" else value.isoformat(),
            "id": last.id,
        }
    )
