"""The project: created (with its default role and branch) or resumed when the control plane
opens, read back, and dropped with everything in it."""

from __future__ import annotations

import logging
from datetime import datetime

from pytest_neon.local.emulator import ids, views
from pytest_neon.local.emulator.plane.context import PlaneContext
from pytest_neon.local.emulator.records import (
    JSON,
    BranchRecord,
    DatabaseRecord,
    EndpointRecord,
    ProjectRecord,
    RoleRecord,
)
from pytest_neon.local.emulator.sql import metadata
from pytest_neon.local.emulator.timestamps import utcnow
from pytest_neon.redact import register_secret

log = logging.getLogger("pytest_neon.emulator")

DEFAULT_BRANCH = "main"
DEFAULT_DATABASE = "neondb"
DEFAULT_ROLE = "neondb_owner"


class Projects:
    """The project itself: open (create or resume), read, drop."""

    def __init__(self, ctx: PlaneContext) -> None:
        self._ctx = ctx

    def open(self) -> None:
        """Connect, take the project lock, then resume the project or create it."""
        project = self._ctx.metadata.open()
        if project is None:
            project = self._create_project()
        else:
            self._resume(project)
        for role in project.roles.values():
            register_secret(role.password)
        self._ctx.set_project(project)

    def get_project(self) -> JSON:
        """``ProjectResponse``."""
        ctx = self._ctx
        with ctx.lock:
            return {
                "project": views.project_view(
                    ctx.project,
                    host=ctx.server.endpoint_host,
                    pg_version=ctx.server.server_version,
                    max_branches=ctx.settings.max_branches,
                    now=utcnow(),
                )
            }

    # --- create or resume ----------------------------------------------------------------------

    def _create_project(self) -> ProjectRecord:
        now = utcnow()
        project = ProjectRecord(id=self._ctx.project_id, created_at=now, updated_at=now)
        self._create_default_role(project, now)
        branch = self._create_default_branch(now)
        project.branches[branch.id] = branch
        log.info("created project %s (default branch %s)", project.id, branch.id)
        return project

    def _create_default_role(self, project: ProjectRecord, now: datetime) -> None:
        """Give the project its owner role (the password another project of the server
        already uses for it, if any: a role is cluster-wide) and store the project."""
        with self._ctx.metadata.transaction() as conn:
            metadata.lock_role_names(conn)
            shared = metadata.shared_role_password(conn, DEFAULT_ROLE)
            password = shared or ids.password()
            register_secret(password)
            if self._ctx.roles.ensure(DEFAULT_ROLE, password):
                metadata.remember_created_role(conn, DEFAULT_ROLE)
            elif shared != password:
                log.warning("role %s already existed: its password was reset", DEFAULT_ROLE)
            project.roles[DEFAULT_ROLE] = RoleRecord(DEFAULT_ROLE, password, now)
            metadata.insert_project(conn, project)

    def _create_default_branch(self, now: datetime) -> BranchRecord:
        """The default branch with its endpoint and an empty database (the project is
        forgotten again if that fails)."""
        ctx = self._ctx
        branch = BranchRecord.starting(ids.branch_id(), DEFAULT_BRANCH, None, now, default=True)
        branch.endpoints.append(EndpointRecord(ids.endpoint_id(), branch.id, now, now))
        real = ids.real_database_name()
        branch.databases.append(DatabaseRecord(DEFAULT_DATABASE, DEFAULT_ROLE, real, now, now))
        try:
            ctx.databases.create(real, DEFAULT_ROLE, ctx.comment)
            with ctx.metadata.transaction() as conn:
                metadata.insert_branch(conn, ctx.project_id, branch)
        except BaseException:
            ctx.databases.drop(real)
            with ctx.metadata.transaction() as conn:
                metadata.delete_project(conn, ctx.project_id)
            raise
        return branch

    def _resume(self, project: ProjectRecord) -> None:
        ctx = self._ctx
        with ctx.metadata.transaction() as conn:
            metadata.lock_role_names(conn)  # roles are the server's: one emulator at a time
            for role in project.roles.values():
                ctx.roles.ensure(role.name, role.password)
        mapped = {db.real_name for b in project.branches.values() for db in b.databases}
        existing = ctx.databases.all_names()
        for b in project.branches.values():
            for db in b.databases:
                if db.real_name not in existing:
                    log.warning(
                        "branch %s: database %s (%s) is missing on the server",
                        b.id,
                        db.name,
                        db.real_name,
                    )
        for stray in set(ctx.databases.commented(ctx.comment)) - mapped:
            log.info("dropping stray database %s of project %s", stray, project.id)
            ctx.databases.drop(stray)
        log.info("resumed project %s (%d branches)", project.id, len(project.branches))

    # --- drop ----------------------------------------------------------------------------------

    def drop_everything(self) -> None:
        """Drop every real database of the project, its metadata and unused roles."""
        ctx = self._ctx
        ctx.spares.close()
        with ctx.lock:
            project = ctx.project
            reals = [db.real_name for b in project.branches.values() for db in b.databases]
        ctx.databases.drop_all(reals)
        for real in reals:
            ctx.databases.drop_derived(real)
        ctx.databases.drop_all(ctx.databases.commented(ctx.comment))
        ctx.metadata.flush()  # after the changes still being written
        with ctx.lock, ctx.metadata.transaction() as conn:
            metadata.lock_role_names(conn)
            metadata.delete_project(conn, ctx.project_id)
            for name in project.roles:
                if metadata.role_in_use_elsewhere(conn, name, ctx.project_id):
                    continue
                if metadata.created_role(conn, name):
                    self._drop_made_by(name)
                    if ctx.roles.drop(name):
                        metadata.forget_created_role(conn, name)
            project.branches.clear()

    def _drop_made_by(self, role: str) -> None:
        """Drop the databases and roles that ``role`` (about to go, used by no other
        project) created through a branch's connections."""
        for database in self._ctx.databases.owned_by(role):
            log.info("dropping database %s, made by role %s", database, role)
            self._ctx.databases.drop_quietly(database)
        for made in self._ctx.roles.created_by(role):
            log.info("dropping role %s, made by role %s", made, role)
            self._ctx.roles.drop(made)
