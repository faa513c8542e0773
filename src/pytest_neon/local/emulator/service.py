"""Neon's control-plane semantics over real databases: branches, restore, expiry, operations.

One :class:`ControlPlane` serves one project. In-memory state (guarded by one lock) is the
working copy; every change is written through to the metadata tables. Slow database work
(``CREATE DATABASE ... TEMPLATE``, ``DROP DATABASE``) runs outside the lock while the
branches involved are marked busy, so concurrent calls on other branches proceed.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pytest_neon.local.emulator import ids, views
from pytest_neon.local.emulator.api_errors import ApiError, locked
from pytest_neon.local.emulator.faults import Faults
from pytest_neon.local.emulator.records import (
    JSON,
    BranchRecord,
    DatabaseRecord,
    EndpointRecord,
    OperationRecord,
    ProjectRecord,
    RoleRecord,
)
from pytest_neon.local.emulator.sql import metadata
from pytest_neon.local.emulator.sql.databases import RealDatabases, TemplateBusyError
from pytest_neon.local.emulator.sql.roles import ClusterRoles
from pytest_neon.local.emulator.sql.server import Connection, SqlServer
from pytest_neon.local.emulator.sql.spares import SparePool
from pytest_neon.local.emulator.sql.swap import DatabaseSwapper, StaleCopyError
from pytest_neon.local.emulator.timestamps import parse_rfc3339, utcnow
from pytest_neon.redact import register_secret

log = logging.getLogger("pytest_neon.emulator")

DEFAULT_BRANCH = "main"
DEFAULT_DATABASE = "neondb"
DEFAULT_ROLE = "neondb_owner"
MAX_EXPIRY = timedelta(days=30)
FAILED_OPERATION = "operation failed (fault injected by the emulator): nothing was done"
SORT_FIELDS = ("name", "created_at", "updated_at")


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def _unprocessable(message: str, code: str = "") -> ApiError:
    return ApiError(422, message, code)


def _object(value: Any, what: str) -> JSON:
    if not isinstance(value, dict):
        raise _bad(f"{what} must be a JSON object")
    return value


def _expiry(value: Any, now: datetime) -> datetime:
    """Validate an ``expires_at`` as Neon does: RFC 3339, in the future, <= 30 days ahead."""
    if not isinstance(value, str):
        raise _bad("expires_at must be an RFC 3339 date-time string")
    try:
        moment = parse_rfc3339(value)
    except ValueError:
        raise _bad(f"expires_at {value!r} is not a valid RFC 3339 date-time") from None
    if moment <= now:
        raise _bad(f"expires_at {value} must be in the future")
    if moment > now + MAX_EXPIRY:
        raise _bad(f"expires_at {value} must be at most 30 days in the future")
    return moment


def _bool(value: str | None, name: str) -> bool:
    if value is None or value == "":
        return False
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise _bad(f"{name} must be true or false")


def _limit(value: str | None, maximum: int) -> int | None:
    if value is None or value == "":
        return None
    try:
        limit = int(value)
    except ValueError:
        raise _bad("limit must be an integer") from None
    if not 1 <= limit <= maximum:
        raise _bad(f"limit must be between 1 and {maximum}")
    return limit


def _encode_cursor(data: JSON) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> JSON:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        raise _bad("invalid cursor") from None
    if not isinstance(data, dict):
        raise _bad("invalid cursor")
    return data


@dataclass
class _Clone:
    """One real database to create from a template during create or restore."""

    template: str
    name: str  # logical database name
    owner: str
    target: str  # the real name the branch ends up with
    temp: str  # where the clone is made first (== target when creating)


class ControlPlane:
    """The emulated control plane of one project over one PostgreSQL server."""

    def __init__(
        self, pg: SqlServer, project_id: str, *, faults: Faults, max_branches: int = 500
    ) -> None:
        self.pg = pg
        self.project_id = project_id
        self.faults = faults
        self.max_branches = max_branches
        self.clone_wait = 3.0  # seconds to retry a clone whose template is in use
        # then sessions left on the template are cut (PostgreSQL cannot copy it otherwise)
        self.evict_after: float | None = 1.0
        self._lock = threading.RLock()
        self._meta: Connection | None = None
        self._meta_lock = threading.Lock()
        # Every metadata change is written by this one thread, in the order it was made.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="neon-emulator-store")
        self._project: ProjectRecord | None = None
        self._comment = metadata.comment_for(project_id)
        self.real_databases = RealDatabases(pg)
        self.swapper = DatabaseSwapper(pg)
        self.cluster_roles = ClusterRoles(pg)
        self.spares = SparePool(self.real_databases, self.swapper, self._comment)

    # --- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Connect, take the project lock, then resume the project or create it."""
        meta = self.pg.connect()
        self._meta = meta
        metadata.ensure_schema(meta)
        if not metadata.try_lock_project(meta, self.project_id):
            raise RuntimeError(f"project {self.project_id} is already served by another emulator")
        project = metadata.load_project(meta, self.project_id)
        if project is None:
            project = self._create_project()
        else:
            self._resume(project)
        for role in project.roles.values():
            register_secret(role.password)
        self._project = project

    def close(self) -> None:
        """Drop the spares; release the metadata connection (and with it the project lock)."""
        self.spares.close()
        self._writer.shutdown(wait=True)  # changes not yet written are written first
        with self._meta_lock:
            if self._meta is not None:
                self._meta.close()
                self._meta = None

    @property
    def project(self) -> ProjectRecord:
        """The project (after :meth:`open`)."""
        if self._project is None:
            raise RuntimeError("the control plane is not open")
        return self._project

    def _create_project(self) -> ProjectRecord:
        now = utcnow()
        project = ProjectRecord(id=self.project_id, created_at=now, updated_at=now)
        with self._transaction() as conn:
            metadata.lock_role_names(conn)
            shared = metadata.shared_role_password(conn, DEFAULT_ROLE)
            password = shared or ids.password()
            register_secret(password)
            if self.cluster_roles.ensure(DEFAULT_ROLE, password):
                metadata.remember_created_role(conn, DEFAULT_ROLE)
            elif shared != password:
                log.warning("role %s already existed: its password was reset", DEFAULT_ROLE)
            project.roles[DEFAULT_ROLE] = RoleRecord(DEFAULT_ROLE, password, now)
            metadata.insert_project(conn, project)
        branch = BranchRecord(
            id=ids.branch_id(),
            name=DEFAULT_BRANCH,
            parent_id=None,
            default=True,
            protected=False,
            created_at=now,
            updated_at=now,
            busy_since=now,
            busy_until=now,
            busy_state="init",
        )
        branch.endpoints.append(EndpointRecord(ids.endpoint_id(), branch.id, now, now))
        real = ids.real_database_name()
        branch.databases.append(DatabaseRecord(DEFAULT_DATABASE, DEFAULT_ROLE, real, now, now))
        try:
            self.real_databases.create(real, DEFAULT_ROLE, self._comment)
            with self._transaction() as conn:
                metadata.insert_branch(conn, self.project_id, branch)
        except BaseException:
            self.real_databases.drop(real)
            with self._transaction() as conn:
                metadata.delete_project(conn, self.project_id)
            raise
        project.branches[branch.id] = branch
        log.info("created project %s (default branch %s)", project.id, branch.id)
        return project

    def _resume(self, project: ProjectRecord) -> None:
        for role in project.roles.values():
            self.cluster_roles.ensure(role.name, role.password)
        mapped = {db.real_name for b in project.branches.values() for db in b.databases}
        existing = self.real_databases.all_names()
        for b in project.branches.values():
            for db in b.databases:
                if db.real_name not in existing:
                    log.warning(
                        "branch %s: database %s (%s) is missing on the server",
                        b.id,
                        db.name,
                        db.real_name,
                    )
        for stray in set(self.real_databases.commented(self._comment)) - mapped:
            log.info("dropping stray database %s of project %s", stray, project.id)
            self.real_databases.drop(stray)
        log.info("resumed project %s (%d branches)", project.id, len(project.branches))

    def drop_everything(self) -> None:
        """Drop every real database of the project, its metadata and unused roles."""
        self.spares.close()
        with self._lock:
            project = self.project
            reals = [db.real_name for b in project.branches.values() for db in b.databases]
        for real in reals:
            self.real_databases.drop(real)
            self.real_databases.drop_derived(real)
        for stray in self.real_databases.commented(self._comment):
            self.real_databases.drop(stray)
        self._writer.submit(lambda: None).result()  # after the changes still being written
        with self._lock, self._transaction() as conn:
            metadata.lock_role_names(conn)
            metadata.delete_project(conn, self.project_id)
            for name in project.roles:
                if metadata.role_in_use_elsewhere(conn, name, self.project_id):
                    continue
                if metadata.created_role(conn, name):
                    self._drop_made_by(name)
                    if self.cluster_roles.drop(name):
                        metadata.forget_created_role(conn, name)
            project.branches.clear()

    def _drop_made_by(self, role: str) -> None:
        """Drop the databases and roles that ``role`` (about to go, used by no other
        project) created through a branch's connections."""
        for database in self.real_databases.owned_by(role):
            log.info("dropping database %s, made by role %s", database, role)
            self.real_databases.drop_quietly(database)
        for made in self.cluster_roles.created_by(role):
            log.info("dropping role %s, made by role %s", made, role)
            self.cluster_roles.drop(made)

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """The metadata connection inside a transaction (reconnects once if it broke)."""
        with self._meta_lock:
            meta = self._meta
            if meta is None or meta.closed or meta.broken:
                if meta is not None:
                    meta.close()
                meta = self.pg.connect()
                if not metadata.try_lock_project(meta, self.project_id):
                    log.warning("could not re-take the lock of project %s", self.project_id)
                self._meta = meta
            # Pipelined: a whole change costs about one round trip to the server.
            with meta.pipeline(), meta.transaction():
                yield meta

    def _persist(self, change: Callable[[Connection], None], *, wait: bool = True) -> None:
        """Write ``change`` to the metadata store after every change made before it.

        ``wait=False`` returns at once (write-behind): for changes whose loss in a crash
        costs nothing but timestamps, such as a restore that kept every database's name.
        """
        future = self._writer.submit(self._write, change, raising=wait)
        if wait:
            future.result()

    def _write(self, change: Callable[[Connection], None], *, raising: bool) -> None:
        try:
            with self._transaction() as conn:
                change(conn)
        except Exception:
            if raising:
                raise
            log.exception("could not write a change to the metadata store")

    # --- lookups ---------------------------------------------------------------------------

    def _branch(self, branch_id: str, what: str = "branch") -> BranchRecord:
        branch = self.project.branches.get(branch_id)
        if branch is None or not branch.visible:
            raise ApiError(404, f"{what} not found")
        return branch

    def _role(self, name: str) -> RoleRecord:
        role = self.project.roles.get(name)
        if role is None:
            raise ApiError(404, "role not found")
        return role

    @property
    def default_branch_id(self) -> str:
        """The id of the project's default branch."""
        with self._lock:
            return self.project.default_branch().id

    def _operations(
        self, branch: BranchRecord, steps: list[tuple[str, bool]], now: datetime
    ) -> list[OperationRecord]:
        """New operations for ``branch``: ``(action, on_endpoint)``; all finish together."""
        finish = now + timedelta(seconds=self.faults.settings.operation_delay)
        endpoint = branch.endpoints[0].id if branch.endpoints else None
        ops: list[OperationRecord] = []
        for action, on_endpoint in steps:
            if on_endpoint and endpoint is None:
                continue
            ops.append(
                OperationRecord(
                    id=ids.operation_id(),
                    branch_id=branch.id,
                    endpoint_id=endpoint if on_endpoint else None,
                    action=action,
                    seq=len(ops),
                    created_at=now,
                    finish_at=finish,
                )
            )
        for op in ops:
            self.project.operations[op.id] = op
        return ops

    def _mark_busy(self, branch: BranchRecord, state: str, now: datetime) -> None:
        branch.busy_state = state
        branch.busy_since = now
        branch.busy_until = now + timedelta(seconds=self.faults.settings.operation_delay)

    def _op_views(self, ops: list[OperationRecord], now: datetime) -> list[JSON]:
        return [views.operation_view(self.project_id, op, now) for op in ops]

    # --- reads -------------------------------------------------------------------------------

    def get_project(self) -> JSON:
        """``ProjectResponse``."""
        with self._lock:
            return {
                "project": views.project_view(
                    self.project,
                    host=self.pg.endpoint_host,
                    pg_version=self.pg.server_version,
                    max_branches=self.max_branches,
                    now=utcnow(),
                )
            }

    def get_branch(self, branch_id: str) -> JSON:
        """``BranchResponse`` + ``AnnotationResponse``."""
        with self._lock:
            branch = self._branch(branch_id)
            return {
                "branch": views.branch_view(self.project_id, branch, utcnow()),
                "annotation": views.annotation_view(branch),
            }

    def count_branches(self, query: Mapping[str, str]) -> JSON:
        """``BranchesCountResponse``."""
        search = query.get("search", "").lower()
        with self._lock:
            count = sum(
                1 for b in self.project.branches.values() if b.visible and search in b.name.lower()
            )
        return {"count": count}

    def list_branches(self, query: Mapping[str, str]) -> JSON:
        """Branches with search, sorting and real cursor (keyset) pagination."""
        sort_by = query.get("sort_by") or "updated_at"
        sort_order = query.get("sort_order") or "desc"
        limit = _limit(query.get("limit"), 10000)
        after: tuple[Any, str] | None = None
        if query.get("cursor"):
            cursor = _decode_cursor(query["cursor"])
            sort_by, sort_order = str(cursor.get("by")), str(cursor.get("order"))
            if sort_by not in SORT_FIELDS or not isinstance(cursor.get("id"), str):
                raise _bad("invalid cursor")
            try:
                raw = cursor["key"]
                after = (raw if sort_by == "name" else datetime.fromisoformat(raw), cursor["id"])
            except (KeyError, TypeError, ValueError):
                raise _bad("invalid cursor") from None
        if sort_by not in SORT_FIELDS:
            raise _bad(f"sort_by must be one of {', '.join(SORT_FIELDS)}")
        if sort_order not in ("asc", "desc"):
            raise _bad("sort_order must be asc or desc")
        search = query.get("search", "").lower()
        descending = sort_order == "desc"

        def key(b: BranchRecord) -> tuple[Any, str]:
            return (getattr(b, sort_by), b.id)

        now = utcnow()
        with self._lock:
            chosen = [
                b
                for b in self.project.branches.values()
                if b.visible and (search in b.name.lower() or search in b.id)
            ]
            chosen.sort(key=key, reverse=descending)
            if after is not None:
                mark = after
                chosen = [b for b in chosen if (key(b) < mark if descending else key(b) > mark)]
            page = chosen if limit is None else chosen[:limit]
            pagination: JSON = {"sort_by": sort_by, "sort_order": sort_order}
            if limit is not None and len(chosen) > limit:
                last = page[-1]
                value = getattr(last, sort_by)
                pagination["next"] = _encode_cursor(
                    {
                        "by": sort_by,
                        "order": sort_order,
                        "key": value if sort_by == "name" else value.isoformat(),
                        "id": last.id,
                    }
                )
            return {
                "branches": [views.branch_view(self.project_id, b, now) for b in page],
                "annotations": {b.id: views.annotation_view(b) for b in page},
                "pagination": pagination,
            }

    def branch_endpoints(self, branch_id: str) -> JSON:
        """``EndpointsResponse`` of one branch."""
        now = utcnow()
        with self._lock:
            b = self._branch(branch_id)
            host = self.pg.endpoint_host
            return {
                "endpoints": [
                    views.endpoint_view(self.project_id, b, ep, host, now) for ep in b.endpoints
                ]
            }

    def project_endpoints(self) -> JSON:
        """``EndpointsResponse`` of the whole project."""
        now = utcnow()
        with self._lock:
            host = self.pg.endpoint_host
            return {
                "endpoints": [
                    views.endpoint_view(self.project_id, b, ep, host, now)
                    for b in self.project.branches.values()
                    if b.visible
                    for ep in b.endpoints
                ]
            }

    def get_endpoint(self, endpoint_id: str) -> JSON:
        """``EndpointResponse``."""
        now = utcnow()
        with self._lock:
            for b in self.project.branches.values():
                for ep in b.endpoints:
                    if ep.id == endpoint_id and b.visible:
                        return {
                            "endpoint": views.endpoint_view(
                                self.project_id, b, ep, self.pg.endpoint_host, now
                            )
                        }
        raise ApiError(404, "endpoint not found")

    def roles(self, branch_id: str) -> JSON:
        """``RolesResponse``."""
        with self._lock:
            b = self._branch(branch_id)
            return {"roles": [views.role_view(b.id, r) for r in self.project.roles.values()]}

    def role(self, branch_id: str, name: str) -> JSON:
        """``RoleResponse``."""
        with self._lock:
            b = self._branch(branch_id)
            return {"role": views.role_view(b.id, self._role(name))}

    def reveal_password(self, branch_id: str, name: str) -> JSON:
        """``RolePasswordResponse``."""
        with self._lock:
            self._branch(branch_id)
            return {"password": self._role(name).password}

    def databases(self, branch_id: str) -> JSON:
        """``DatabasesResponse``."""
        with self._lock:
            b = self._branch(branch_id)
            return {"databases": [views.database_view(b.id, db) for db in b.databases]}

    def database(self, branch_id: str, name: str) -> JSON:
        """``DatabaseResponse``."""
        with self._lock:
            b = self._branch(branch_id)
            db = b.database(name)
            if db is None:
                raise ApiError(404, "database not found")
            return {"database": views.database_view(b.id, db)}

    def connection_uri(self, query: Mapping[str, str]) -> JSON:
        """``ConnectionURIResponse``: a real DSN to the branch's real database.

        ``pooled=true`` returns the same DSN: there is no pooler in front of the emulator's
        PostgreSQL, so pooled and direct connections go to the same server.
        """
        database_name = query.get("database_name")
        role_name = query.get("role_name")
        if not database_name:
            raise _bad("database_name is required")
        if not role_name:
            raise _bad("role_name is required")
        _bool(query.get("pooled"), "pooled")
        with self._lock:
            branch_id = query.get("branch_id") or self.project.default_branch().id
            b = self._branch(branch_id)
            endpoint_id = query.get("endpoint_id")
            if not b.endpoints:
                raise ApiError(404, f"branch {b.id} has no read_write endpoint")
            if endpoint_id and endpoint_id not in {ep.id for ep in b.endpoints}:
                raise ApiError(404, "endpoint not found")
            db = b.database(database_name)
            if db is None:
                raise ApiError(404, "database not found")
            role = self._role(role_name)
            return {"uri": self.pg.dsn(role.name, role.password, db.real_name)}

    def get_operation(self, operation_id: str) -> JSON:
        """``OperationResponse``."""
        with self._lock:
            op = self.project.operations.get(operation_id)
            if op is None:
                raise ApiError(404, "operation not found")
            return {"operation": views.operation_view(self.project_id, op, utcnow())}

    def list_operations(self, query: Mapping[str, str]) -> JSON:
        """``OperationsResponse`` + ``PaginationResponse``, newest first."""
        limit = _limit(query.get("limit"), 1000)
        after: tuple[str, int, str] | None = None
        if query.get("cursor"):
            cursor = _decode_cursor(query["cursor"])
            try:
                after = (str(cursor["at"]), int(cursor["seq"]), str(cursor["id"]))
            except (KeyError, TypeError, ValueError):
                raise _bad("invalid cursor") from None
        now = utcnow()

        def key(op: OperationRecord) -> tuple[str, int, str]:
            return (op.created_at.astimezone(UTC).isoformat(), op.seq, op.id)

        with self._lock:
            ops = sorted(self.project.operations.values(), key=key, reverse=True)
            if after is not None:
                mark = after
                ops = [op for op in ops if key(op) < mark]
            page = ops if limit is None else ops[:limit]
            body: JSON = {"operations": self._op_views(page, now)}
            if page:
                at, seq, op_id = key(page[-1])
                body["pagination"] = {"cursor": _encode_cursor({"at": at, "seq": seq, "id": op_id})}
            return body

    # --- create ------------------------------------------------------------------------------

    def create_branch(self, body: JSON) -> JSON:
        """Create a branch: clone every database of the parent. Returns a ``CreatedBranch``."""
        now = utcnow()
        spec = _object(body.get("branch", {}), "branch")
        for unsupported in ("parent_lsn", "parent_timestamp"):
            if spec.get(unsupported) is not None:
                raise _bad(f"{unsupported} is not supported by the emulator (branch from head)")
        if spec.get("init_source") not in (None, "parent-data"):
            raise _bad("init_source must be parent-data (schema-only is not emulated)")
        if spec.get("archived"):
            raise _bad("archived branches are not supported by the emulator")
        name = spec.get("name")
        if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 256):
            raise _bad("branch name must be a string of 1 to 256 characters")
        protected = spec.get("protected", False)
        if not isinstance(protected, bool):
            raise _bad("protected must be a boolean")
        expires_at = _expiry(spec["expires_at"], now) if spec.get("expires_at") else None
        if expires_at is not None and protected:
            raise _bad("a protected branch cannot have an expiration time")
        endpoint_types = []
        for ep in body.get("endpoints") or []:
            ep_type = _object(ep, "endpoint").get("type")
            if ep_type not in ("read_write", "read_only"):
                raise _bad("endpoint type must be read_write or read_only")
            if ep_type == "read_only":
                raise _bad("read_only endpoints are not supported by the emulator")
            endpoint_types.append(ep_type)
        if len(endpoint_types) > 1:
            raise _bad("a branch can have only one read_write endpoint")
        annotation = self._annotation(body.get("annotation_value"))

        with self._lock:
            project = self.project
            parent_id = spec.get("parent_id") or project.default_branch().id
            if not isinstance(parent_id, str):
                raise _bad("parent_id must be a string")
            parent = self._branch(parent_id, "parent branch")
            if parent.expires_at is not None:
                raise _unprocessable(
                    f"cannot create a child of branch {parent.id}:"
                    " a branch with an expiration time cannot have children"
                )
            if name is not None and any(b.name == name for b in project.branches.values()):
                raise ApiError(409, "branch already exists")
            if len(project.branches) >= self.max_branches:
                raise _unprocessable(
                    f"branches limit exceeded: the project already has {len(project.branches)}"
                    f" branches (limit {self.max_branches})",
                    code="BRANCHES_LIMIT_EXCEEDED",
                )
            if parent.busy(now):
                raise locked()
            branch_id = ids.branch_id()
            while branch_id in project.branches:
                branch_id = ids.branch_id()
            branch = BranchRecord(
                id=branch_id,
                name=name or branch_id,
                parent_id=parent.id,
                default=False,
                protected=protected,
                created_at=now,
                updated_at=now,
                busy_since=now,
                busy_until=now,
                busy_state="init",
                expires_at=expires_at,
                ttl_seconds=round((expires_at - now).total_seconds()) if expires_at else None,
                annotation=annotation,
                annotation_created_at=now if annotation else None,
                annotation_updated_at=now if annotation else None,
                visible=False,
                inflight=True,
            )
            if endpoint_types:
                branch.endpoints.append(EndpointRecord(ids.endpoint_id(), branch_id, now, now))
            if self.faults.operation_fails():
                self._mark_busy(branch, "init", now)
                ops = self._failed_operations(branch, [("create_branch", False)], now)
                return self._created_view(branch, ops, now, roles=False)
            clones = []
            for db in parent.databases:
                real = ids.real_database_name()
                clones.append(_Clone(db.real_name, db.name, db.owner_name, real, real))
                branch.databases.append(DatabaseRecord(db.name, db.owner_name, real, now, now))
            project.branches[branch_id] = branch
            parent.pins += 1

        try:
            self._clone_all(clones, branch_id)
            with self._lock:
                done = utcnow()
                self._mark_busy(branch, "init", done)
                ops = self._operations(
                    branch, [("create_branch", False), ("start_compute", True)], done
                )

                def change(conn: Connection) -> None:
                    metadata.insert_branch(conn, self.project_id, branch)
                    metadata.insert_operations(conn, self.project_id, ops)

                self._persist(change)
                branch.visible = True
                branch.inflight = False
        except BaseException:
            with self._lock:
                project.branches.pop(branch_id, None)
                for op in [o for o in project.operations.values() if o.branch_id == branch_id]:
                    del project.operations[op.id]
            for clone in clones:
                self.real_databases.drop_quietly(clone.target)
            raise
        finally:
            with self._lock:
                parent.pins -= 1
        log.info("created branch %s (%s) from %s", branch.id, branch.name, parent.id)
        return self._created_view(branch, ops, done)

    def _annotation(self, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        value = _object(value, "annotation_value")
        if len(value) > 50 or not all(isinstance(v, str) for v in value.values()):
            raise _bad("annotation_value must map at most 50 keys to strings")
        return {str(k): v for k, v in value.items()}

    def _failed_operations(
        self, branch: BranchRecord, steps: list[tuple[str, bool]], now: datetime
    ) -> list[OperationRecord]:
        """Operations for ``steps``, the last one ending ``failed``; nothing else changes."""
        ops = self._operations(branch, steps, now)
        ops[-1].error = FAILED_OPERATION
        self._persist(lambda conn: metadata.insert_operations(conn, self.project_id, ops))
        log.info(
            "operation %s %s on %s will fail (injected)", ops[-1].action, ops[-1].id, branch.id
        )
        return ops

    def _created_view(
        self, branch: BranchRecord, ops: list[OperationRecord], now: datetime, *, roles: bool = True
    ) -> JSON:
        with self._lock:
            roles_ = list(self.project.roles.values()) if roles else []
            host = self.pg.endpoint_host
            body: JSON = {
                "branch": views.branch_view(self.project_id, branch, now),
                "endpoints": [
                    views.endpoint_view(self.project_id, branch, ep, host, now)
                    for ep in branch.endpoints
                ],
                "operations": self._op_views(ops, now),
                "roles": [views.role_view(branch.id, r) for r in roles_],
                "databases": [views.database_view(branch.id, db) for db in branch.databases],
            }
            if branch.endpoints and len(roles_) == 1 and len(branch.databases) == 1:
                role, db = roles_[0], branch.databases[0]
                body["connection_uris"] = [
                    {
                        "connection_uri": self.pg.dsn(role.name, role.password, db.real_name),
                        "connection_parameters": {
                            "database": db.real_name,
                            "password": role.password,
                            "role": role.name,
                            "host": host,
                            "pooler_host": host,
                        },
                    }
                ]
            return body

    def _put_in_place(
        self,
        clone: _Clone,
        branch_id: str,
        current: Mapping[str, DatabaseRecord],
        expect: tuple[str, tuple[int, ...]] | None,
        pending: list[str],
    ) -> None:
        """Move ``clone.temp`` to ``clone.target``; a stale spare is replaced by a fresh copy.

        The branch's sessions on the old copy are cut; it is dropped off the critical path.
        """
        try:
            if clone.name in current:
                self.spares.drop_later(
                    self.swapper.swap_in(clone.target, clone.temp, expect=expect)
                )
            else:
                if expect is not None and self.swapper.activity_snapshot(expect[0]) != expect[1]:
                    raise StaleCopyError(expect[0])
                self.real_databases.rename(clone.temp, clone.target)
        except StaleCopyError:
            pending.remove(clone.temp)
            self.spares.drop_later(clone.temp)
            clone.temp = ids.real_database_name()
            self._clone_all([clone], branch_id)
            pending.append(clone.temp)
            self._put_in_place(clone, branch_id, current, None, pending)
            return
        pending.remove(clone.temp)

    def _clone_all(self, clones: list[_Clone], branch_id: str) -> None:
        """Make every clone (at its ``temp`` name); on failure drop the ones made."""
        made: list[str] = []
        try:
            for clone in clones:
                self.real_databases.clone(
                    clone.template,
                    clone.temp,
                    clone.owner,
                    self._comment,
                    self.clone_wait,
                    evict_after=self.evict_after,
                )
                made.append(clone.temp)
        except BaseException as exc:
            for name in made:
                self.real_databases.drop_quietly(name)
            if isinstance(exc, TemplateBusyError):
                raise ApiError(
                    423,
                    f"cannot copy the data for branch {branch_id}: {exc} (PostgreSQL cannot"
                    " clone a database while sessions are connected to it; close them and"
                    " retry)",
                ) from exc
            raise

    # --- delete --------------------------------------------------------------------------------

    def delete_branch(self, branch_id: str) -> JSON | None:
        """Delete a branch and drop its databases; ``None`` when it is already gone (204)."""
        now = utcnow()
        with self._lock:
            branch = self.project.branches.get(branch_id)
            if branch is None or not branch.visible:
                return None
            if branch.default:
                raise _unprocessable("cannot delete default branch")
            if branch.protected:
                raise _unprocessable("cannot delete protected branch")
            if self.project.children(branch.id):
                raise _unprocessable(
                    f"cannot delete branch {branch.id}: it has child branches, delete them first"
                )
            if branch.busy(now) or branch.pins:
                raise locked()
            branch.inflight = True
        ops = self._remove(branch)
        log.info("deleted branch %s (%s)", branch.id, branch.name)
        done = utcnow()
        return {
            "branch": views.branch_view(self.project_id, branch, done),
            "operations": self._op_views(ops, done),
        }

    def _remove(self, branch: BranchRecord) -> list[OperationRecord]:
        """Drop the (in-flight) branch's databases and forget it."""
        try:
            self.spares.discard_branch(branch.id)
            for db in branch.databases:
                self.real_databases.drop(db.real_name)
                self.real_databases.drop_derived(db.real_name)
        except BaseException:
            with self._lock:
                branch.inflight = False
            raise
        with self._lock:
            now = utcnow()
            ops = self._operations(
                branch, [("suspend_compute", True), ("delete_timeline", False)], now
            )

            def change(conn: Connection) -> None:
                metadata.delete_branch(conn, self.project_id, branch.id)
                metadata.insert_operations(conn, self.project_id, ops)

            self._persist(change)
            self.project.branches.pop(branch.id, None)
            return ops

    # --- restore -------------------------------------------------------------------------------

    def restore_branch(self, branch_id: str, body: JSON) -> JSON:
        """Reset ``branch_id`` to the current state of ``source_branch_id`` (same DSN)."""
        source_id = body.get("source_branch_id")
        if not isinstance(source_id, str) or not source_id:
            raise _bad("source_branch_id is required")
        if body.get("preserve_under_name"):
            raise _bad("preserve_under_name is not supported by the emulator")
        if body.get("source_lsn") or body.get("source_timestamp"):
            raise _bad("source_lsn and source_timestamp are not supported by the emulator")
        now = utcnow()
        with self._lock:
            branch = self._branch(branch_id)
            if source_id == branch.id:
                raise _bad("restoring a branch to its own history needs source_lsn or"
                           " source_timestamp, which the emulator does not support")  # fmt: skip
            source = self._branch(source_id, "source branch")
            if branch.protected:
                raise _unprocessable("cannot reset protected branch")
            if self.project.children(branch.id):
                raise _bad(
                    f"branch {branch.id} has children: restoring it needs preserve_under_name,"
                    " which the emulator does not support"
                )
            if branch.busy(now) or branch.pins or source.busy(now):
                raise locked()
            if self.faults.operation_fails():
                self._mark_busy(branch, "resetting", now)
                steps = [("suspend_compute", True), ("create_timeline", False)]
                ops = self._failed_operations(branch, steps, now)
                return {
                    "branch": views.branch_view(self.project_id, branch, now),
                    "operations": self._op_views(ops, now),
                }
            current = {db.name: db for db in branch.databases}
            clones = []
            for db in source.databases:
                existing = current.get(db.name)
                target = existing.real_name if existing else ids.real_database_name()
                clones.append(
                    _Clone(db.real_name, db.name, db.owner_name, target, ids.real_database_name())
                )
            wanted = {db.name for db in source.databases}
            leftovers = [db.real_name for db in branch.databases if db.name not in wanted]
            branch.inflight = True
            source.pins += 1
        try:
            fresh = []
            pending: list[str] = []  # copies made or taken for this restore, not yet in place
            try:
                try:
                    expect: dict[str, tuple[str, tuple[int, ...]]] = {}
                    for clone in clones:
                        spare = self.spares.take((clone.template, branch.id, clone.name))
                        if spare is None:
                            fresh.append(clone)
                        else:
                            clone.temp = spare.real_name
                            expect[clone.name] = (clone.template, spare.snapshot)
                            pending.append(spare.real_name)
                    self._clone_all(fresh, branch.id)
                    pending.extend(clone.temp for clone in fresh)
                    for clone in clones:
                        self._put_in_place(
                            clone, branch.id, current, expect.get(clone.name), pending
                        )
                finally:
                    with self._lock:
                        source.pins -= 1
            except BaseException:
                for name in pending:  # never leave an orphan copy behind
                    self.spares.drop_later(name)
                raise
            for real in leftovers:
                self.real_databases.drop(real)
            for clone in clones:
                self.spares.prepare((clone.template, branch.id, clone.name), clone.owner)
        except BaseException:
            with self._lock:
                branch.inflight = False
            raise
        with self._lock:
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
            self._mark_busy(branch, "resetting", done)
            ops = self._operations(
                branch,
                [("suspend_compute", True), ("create_timeline", False), ("start_compute", True)],
                done,
            )

            def change(conn: Connection) -> None:
                metadata.update_branch(conn, self.project_id, branch)
                metadata.insert_operations(conn, self.project_id, ops)

            # When every database kept its real name, only timestamps and operations change:
            # those are written behind the response.
            same = not leftovers and all(c.name in current for c in clones)
            self._persist(change, wait=not same)
            branch.inflight = False
            log.info("restored branch %s from %s", branch.id, source.id)
            return {
                "branch": views.branch_view(self.project_id, branch, done),
                "operations": self._op_views(ops, done),
            }

    # --- update --------------------------------------------------------------------------------

    def update_branch(self, branch_id: str, body: JSON) -> JSON:
        """Rename, (un)protect, or set/clear the expiry of a branch (``BranchOperations``)."""
        spec = _object(body.get("branch"), "branch")
        now = utcnow()
        with self._lock:
            branch = self._branch(branch_id)
            name = spec.get("name", branch.name)
            if not isinstance(name, str) or not 1 <= len(name) <= 256:
                raise _bad("branch name must be a string of 1 to 256 characters")
            if name != branch.name and any(b.name == name for b in self.project.branches.values()):
                raise ApiError(409, "branch already exists")
            protected = spec.get("protected", branch.protected)
            if not isinstance(protected, bool):
                raise _bad("protected must be a boolean")
            expires_at, ttl = branch.expires_at, branch.ttl_seconds
            if "expires_at" in spec:
                if spec["expires_at"] is None:
                    expires_at = ttl = None
                else:
                    expires_at = _expiry(spec["expires_at"], now)
                    ttl = round((expires_at - now).total_seconds())
                    if branch.default:
                        raise _bad("the default branch cannot have an expiration time")
                    if self.project.children(branch.id):
                        raise _unprocessable(
                            f"branch {branch.id} has children:"
                            " a branch with children cannot have an expiration time"
                        )
            if expires_at is not None and protected:
                raise _bad("a protected branch cannot have an expiration time")
            if branch.busy(now):
                raise locked()
            branch.name, branch.protected = name, protected
            branch.expires_at, branch.ttl_seconds = expires_at, ttl
            branch.updated_at = now
            self._persist(lambda conn: metadata.update_branch(conn, self.project_id, branch))
            return {"branch": views.branch_view(self.project_id, branch, now), "operations": []}

    # --- expiry --------------------------------------------------------------------------------

    def _expired(self, now: datetime) -> list[BranchRecord]:
        return [
            b
            for b in self.project.branches.values()
            if b.visible
            and not b.default
            and b.expires_at is not None
            and b.expires_at <= now
            and not b.inflight
            and not b.pins
            and not self.project.children(b.id)
        ]

    def sweep(self) -> int:
        """Delete every expired branch, as Neon's background job does; returns how many."""
        with self._lock:
            if self._project is None:
                return 0
            due = self._expired(utcnow())
            for b in due:
                b.inflight = True
        for b in due:
            try:
                self._remove(b)
                log.info("branch %s (%s) expired and was deleted", b.id, b.name)
            except Exception:
                log.warning("could not delete expired branch %s", b.id, exc_info=True)
        return len(due)

    def sweep_if_due(self) -> None:
        """Run :meth:`sweep` (called on each request: cheap when no branch has expired)."""
        self.sweep()
