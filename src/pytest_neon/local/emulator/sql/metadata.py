"""The emulator's metadata, kept in the PostgreSQL server itself so that it survives restarts.

Tables live in the schema ``neon_emulator`` of the database named in the superuser URL,
every row keyed by project id, so several emulators (different projects) share one server.
"""

from __future__ import annotations

import json
from typing import Any

from psycopg.types.json import Jsonb

from pytest_neon.local.emulator.records import (
    BranchRecord,
    DatabaseRecord,
    EndpointRecord,
    OperationRecord,
    ProjectRecord,
    RoleRecord,
)
from pytest_neon.local.emulator.sql.ownership import LOCK_CLASS
from pytest_neon.local.emulator.sql.ownership import comment_for as comment_for
from pytest_neon.local.emulator.sql.ownership import lock_role_names as lock_role_names
from pytest_neon.local.emulator.sql.ownership import try_lock_project as try_lock_project
from pytest_neon.local.emulator.sql.server import Connection

SCHEMA = "neon_emulator"

_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.projects (
    id text PRIMARY KEY,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.created_roles (
    name text PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.roles (
    project_id text NOT NULL REFERENCES {SCHEMA}.projects (id) ON DELETE CASCADE,
    name text NOT NULL,
    password text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (project_id, name)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.branches (
    project_id text NOT NULL REFERENCES {SCHEMA}.projects (id) ON DELETE CASCADE,
    id text NOT NULL,
    name text NOT NULL,
    parent_id text,
    is_default boolean NOT NULL,
    protected boolean NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    busy_since timestamptz NOT NULL,
    busy_until timestamptz NOT NULL,
    busy_state text NOT NULL,
    expires_at timestamptz,
    ttl_seconds integer,
    last_reset_at timestamptz,
    annotation jsonb NOT NULL DEFAULT '{{}}',
    annotation_created_at timestamptz,
    annotation_updated_at timestamptz,
    PRIMARY KEY (project_id, id),
    UNIQUE (project_id, name)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.endpoints (
    project_id text NOT NULL,
    id text NOT NULL,
    branch_id text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (project_id, id),
    FOREIGN KEY (project_id, branch_id)
        REFERENCES {SCHEMA}.branches (project_id, id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.databases (
    id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    project_id text NOT NULL,
    branch_id text NOT NULL,
    name text NOT NULL,
    owner_name text NOT NULL,
    real_name text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (project_id, branch_id, name),
    FOREIGN KEY (project_id, branch_id)
        REFERENCES {SCHEMA}.branches (project_id, id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.operations (
    id uuid PRIMARY KEY,
    project_id text NOT NULL REFERENCES {SCHEMA}.projects (id) ON DELETE CASCADE,
    branch_id text NOT NULL,
    endpoint_id text,
    action text NOT NULL,
    seq integer NOT NULL,
    created_at timestamptz NOT NULL,
    finish_at timestamptz NOT NULL,
    error text
);
CREATE INDEX IF NOT EXISTS operations_project_created
    ON {SCHEMA}.operations (project_id, created_at);
ALTER TABLE {SCHEMA}.endpoints ADD COLUMN IF NOT EXISTS type text NOT NULL DEFAULT 'read_write';
"""

_BRANCH_COLUMNS = (
    "id, name, parent_id, is_default, protected, created_at, updated_at, busy_since,"
    " busy_until, busy_state, expires_at, ttl_seconds, last_reset_at, annotation,"
    " annotation_created_at, annotation_updated_at"
)
_INSERT_BRANCH = (
    f"INSERT INTO {SCHEMA}.branches (project_id, {_BRANCH_COLUMNS})"
    f" VALUES ({', '.join(['%s'] * 17)})"
)
_BRANCH_ASSIGNMENTS = ", ".join(f"{col.strip()} = %s" for col in _BRANCH_COLUMNS.split(",")[1:])
_UPDATE_BRANCH = (
    f"UPDATE {SCHEMA}.branches SET {_BRANCH_ASSIGNMENTS} WHERE project_id = %s AND id = %s"
)
_INSERT_ENDPOINT = (
    f"INSERT INTO {SCHEMA}.endpoints (project_id, id, branch_id, created_at, updated_at, type)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)
_INSERT_DATABASE = (
    f"INSERT INTO {SCHEMA}.databases"
    " (project_id, branch_id, name, owner_name, real_name, created_at, updated_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id"
)
_INSERT_OPERATION = (
    f"INSERT INTO {SCHEMA}.operations (id, project_id, branch_id, endpoint_id, action,"
    " seq, created_at, finish_at, error) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def ensure_schema(conn: Connection) -> None:
    """Create the metadata schema and tables if missing (safe with concurrent emulators)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_CLASS,))
        conn.execute(_DDL)


def shared_role_password(conn: Connection, name: str) -> str | None:
    """The password another project already uses for the cluster-wide role ``name``."""
    row = conn.execute(
        f"SELECT password FROM {SCHEMA}.roles WHERE name = %s ORDER BY created_at LIMIT 1",
        (name,),
    ).fetchone()
    return str(row[0]) if row else None


def remember_created_role(conn: Connection, name: str) -> None:
    """Record that the emulator created the cluster role ``name`` (so it may drop it)."""
    conn.execute(
        f"INSERT INTO {SCHEMA}.created_roles (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,)
    )


def created_role(conn: Connection, name: str) -> bool:
    """Whether the emulator created the cluster role ``name``."""
    row = conn.execute(f"SELECT 1 FROM {SCHEMA}.created_roles WHERE name = %s", (name,))
    return row.fetchone() is not None


def forget_created_role(conn: Connection, name: str) -> None:
    """Forget a role the emulator created (after dropping it)."""
    conn.execute(f"DELETE FROM {SCHEMA}.created_roles WHERE name = %s", (name,))


def role_in_use_elsewhere(conn: Connection, name: str, project_id: str) -> bool:
    """Whether another project's metadata still names the role ``name``."""
    row = conn.execute(
        f"SELECT 1 FROM {SCHEMA}.roles WHERE name = %s AND project_id <> %s LIMIT 1",
        (name, project_id),
    ).fetchone()
    return row is not None


def insert_project(conn: Connection, project: ProjectRecord) -> None:
    """Store a new project with its roles (not its branches)."""
    conn.execute(
        f"INSERT INTO {SCHEMA}.projects (id, created_at, updated_at) VALUES (%s, %s, %s)",
        (project.id, project.created_at, project.updated_at),
    )
    for role in project.roles.values():
        insert_role(conn, project.id, role)


def insert_role(conn: Connection, project_id: str, role: RoleRecord) -> None:
    """Store a role of a project."""
    conn.execute(
        f"INSERT INTO {SCHEMA}.roles (project_id, name, password, created_at)"
        " VALUES (%s, %s, %s, %s)",
        (project_id, role.name, role.password, role.created_at),
    )


def delete_role(conn: Connection, project_id: str, name: str) -> None:
    """Forget a role of a project."""
    conn.execute(
        f"DELETE FROM {SCHEMA}.roles WHERE project_id = %s AND name = %s", (project_id, name)
    )


def delete_project(conn: Connection, project_id: str) -> None:
    """Forget a project and everything in it."""
    conn.execute(f"DELETE FROM {SCHEMA}.projects WHERE id = %s", (project_id,))


def _branch_values(project_id: str, b: BranchRecord) -> tuple[Any, ...]:
    return (
        project_id, b.id, b.name, b.parent_id, b.default, b.protected, b.created_at,
        b.updated_at, b.busy_since, b.busy_until, b.busy_state, b.expires_at, b.ttl_seconds,
        b.last_reset_at, Jsonb(b.annotation), b.annotation_created_at, b.annotation_updated_at,
    )  # fmt: skip


def insert_branch(conn: Connection, project_id: str, branch: BranchRecord) -> None:
    """Store a new branch with its endpoints and databases (sets the database ids)."""
    conn.execute(_INSERT_BRANCH, _branch_values(project_id, branch))
    for ep in branch.endpoints:
        insert_endpoint(conn, project_id, ep)
    _insert_databases(conn, project_id, branch.id, branch.databases)


def insert_endpoint(conn: Connection, project_id: str, ep: EndpointRecord) -> None:
    """Store an endpoint of a branch."""
    conn.execute(
        _INSERT_ENDPOINT, (project_id, ep.id, ep.branch_id, ep.created_at, ep.updated_at, ep.type)
    )


def move_endpoint(conn: Connection, project_id: str, ep: EndpointRecord) -> None:
    """Store that an endpoint belongs to another branch now."""
    conn.execute(
        f"UPDATE {SCHEMA}.endpoints SET branch_id = %s, updated_at = %s"
        " WHERE project_id = %s AND id = %s",
        (ep.branch_id, ep.updated_at, project_id, ep.id),
    )


def delete_endpoint(conn: Connection, project_id: str, endpoint_id: str) -> None:
    """Forget an endpoint."""
    conn.execute(
        f"DELETE FROM {SCHEMA}.endpoints WHERE project_id = %s AND id = %s",
        (project_id, endpoint_id),
    )


def _insert_databases(
    conn: Connection, project_id: str, branch_id: str, databases: list[DatabaseRecord]
) -> None:
    """Store ``databases`` of a branch and set their ids, in one round trip."""
    if not databases:
        return
    with conn.cursor() as cur:
        cur.executemany(
            _INSERT_DATABASE,
            [(project_id, branch_id, db.name, db.owner_name, db.real_name, db.created_at,
              db.updated_at) for db in databases],
            returning=True,
        )  # fmt: skip
        for db in databases:  # one result set per database, in order
            row = cur.fetchone()
            assert row is not None
            db.id = int(row[0])
            cur.nextset()


def update_branch(conn: Connection, project_id: str, branch: BranchRecord) -> None:
    """Store a changed branch; its databases are replaced by the current list."""
    conn.execute(_UPDATE_BRANCH, (*_branch_values(project_id, branch)[2:], project_id, branch.id))
    conn.execute(
        f"DELETE FROM {SCHEMA}.databases WHERE project_id = %s AND branch_id = %s",
        (project_id, branch.id),
    )
    _insert_databases(conn, project_id, branch.id, branch.databases)


def delete_branch(conn: Connection, project_id: str, branch_id: str) -> None:
    """Forget a branch (its endpoints and databases go with it)."""
    conn.execute(
        f"DELETE FROM {SCHEMA}.branches WHERE project_id = %s AND id = %s",
        (project_id, branch_id),
    )


def insert_operations(conn: Connection, project_id: str, operations: list[OperationRecord]) -> None:
    """Store new operations."""
    for op in operations:
        conn.execute(
            _INSERT_OPERATION,
            (op.id, project_id, op.branch_id, op.endpoint_id, op.action, op.seq, op.created_at,
             op.finish_at, op.error),
        )  # fmt: skip


def load_project(conn: Connection, project_id: str) -> ProjectRecord | None:
    """Read a whole project back, or ``None`` when the metadata has no such project."""
    row = conn.execute(
        f"SELECT created_at, updated_at FROM {SCHEMA}.projects WHERE id = %s", (project_id,)
    ).fetchone()
    if row is None:
        return None
    project = ProjectRecord(id=project_id, created_at=row[0], updated_at=row[1])
    _load_roles(conn, project)
    _load_branches(conn, project)
    _load_endpoints(conn, project)
    _load_databases(conn, project)
    _load_operations(conn, project)
    return project


def _load_roles(conn: Connection, project: ProjectRecord) -> None:
    for name, password, created_at in conn.execute(
        f"SELECT name, password, created_at FROM {SCHEMA}.roles WHERE project_id = %s"
        " ORDER BY created_at, name",
        (project.id,),
    ):
        project.roles[name] = RoleRecord(name=name, password=password, created_at=created_at)


def _load_branches(conn: Connection, project: ProjectRecord) -> None:
    for r in conn.execute(
        f"SELECT {_BRANCH_COLUMNS} FROM {SCHEMA}.branches WHERE project_id = %s"
        " ORDER BY created_at, id",
        (project.id,),
    ):
        annotation = r[13] if isinstance(r[13], dict) else json.loads(r[13] or "{}")
        project.branches[r[0]] = BranchRecord(
            id=r[0], name=r[1], parent_id=r[2], default=r[3], protected=r[4],
            created_at=r[5], updated_at=r[6], busy_since=r[7], busy_until=r[8],
            busy_state=r[9], expires_at=r[10], ttl_seconds=r[11], last_reset_at=r[12],
            annotation={str(k): str(v) for k, v in annotation.items()},
            annotation_created_at=r[14], annotation_updated_at=r[15],
        )  # fmt: skip


def _load_endpoints(conn: Connection, project: ProjectRecord) -> None:
    for ep_id, branch_id, created_at, updated_at, kind in conn.execute(
        f"SELECT id, branch_id, created_at, updated_at, type FROM {SCHEMA}.endpoints"
        " WHERE project_id = %s ORDER BY created_at, id",
        (project.id,),
    ):
        project.branches[branch_id].endpoints.append(
            EndpointRecord(
                id=ep_id,
                branch_id=branch_id,
                created_at=created_at,
                updated_at=updated_at,
                type=kind,
            )
        )


def _load_databases(conn: Connection, project: ProjectRecord) -> None:
    for db_id, branch_id, name, owner, real, created_at, updated_at in conn.execute(
        f"SELECT id, branch_id, name, owner_name, real_name, created_at, updated_at"
        f" FROM {SCHEMA}.databases WHERE project_id = %s ORDER BY id",
        (project.id,),
    ):
        project.branches[branch_id].databases.append(
            DatabaseRecord(
                id=db_id,
                name=name,
                owner_name=owner,
                real_name=real,
                created_at=created_at,
                updated_at=updated_at,
            )
        )


def _load_operations(conn: Connection, project: ProjectRecord) -> None:
    for r in conn.execute(
        f"SELECT id, branch_id, endpoint_id, action, seq, created_at, finish_at, error"
        f" FROM {SCHEMA}.operations WHERE project_id = %s ORDER BY created_at, seq",
        (project.id,),
    ):
        op = OperationRecord(
            id=str(r[0]), branch_id=r[1], endpoint_id=r[2], action=r[3], seq=r[4],
            created_at=r[5], finish_at=r[6], error=r[7],
        )  # fmt: skip
        project.operations[op.id] = op
