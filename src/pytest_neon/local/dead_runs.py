"""Dropping what runs killed without cleaning up left on a server that outlives them.

A run's emulator holds its project's advisory lock on a connection of its own for as long
as it runs (:func:`~pytest_neon.local.emulator.sql.ownership.try_lock_project`), so the
server knows which projects are alive: one whose lock is free belongs to a run that is
gone, and its databases and metadata are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from pytest_neon.local.emulator.sql.metadata import SCHEMA, comment_for, try_lock_project
from pytest_neon.local.server_link import connected

if TYPE_CHECKING:
    from pytest_neon.local.emulator.sql.server import Connection

log = logging.getLogger("pytest_neon.local")

_COMMENT_PREFIX = comment_for("")


def project_ids(conn: Connection) -> set[str]:
    """Every project with metadata or databases on the server (a superuser connection)."""
    rows = conn.execute(
        "SELECT substr(d, %s) FROM (SELECT pg_catalog.shobj_description(oid, 'pg_database')"
        " AS d FROM pg_database) s WHERE d LIKE %s",
        (len(_COMMENT_PREFIX) + 1, _COMMENT_PREFIX.replace("_", r"\_") + "%"),
    ).fetchall()
    found = {row[0] for row in rows}
    exists = conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.projects",)).fetchone()
    if exists and exists[0] is not None:
        found |= {row[0] for row in conn.execute(f"SELECT id FROM {SCHEMA}.projects")}
    return found


def dead_projects(
    url: str, kept: Callable[[], set[str]] = set, conn: Connection | None = None
) -> list[str]:
    """The projects on the server whose run is gone (nobody holds their lock), but those
    ``kept()`` names (parked for the next run, or claimed by one).

    ``kept()`` is asked before the locks are tried (a parked project's lock is never
    taken here: the run claiming it takes it) and after (a project parked meanwhile).
    ``conn``: an autocommit superuser connection to the server, to use instead of a new
    one."""
    dead = []
    with connected(url, conn) as c:
        skip = kept()
        try:
            for project_id in sorted(project_ids(c) - skip):
                if try_lock_project(c, project_id):
                    dead.append(project_id)
        finally:
            c.execute("SELECT pg_advisory_unlock_all()")
    skip = kept()
    return [project_id for project_id in dead if project_id not in skip]


def drop_dead_projects(
    url: str, kept: Callable[[], set[str]] = set, conn: Connection | None = None
) -> int:
    """Drop every project of a dead run from the server at ``url``; how many were dropped.

    A project that comes alive meanwhile (its lock taken again) is left alone, and so are
    those ``kept()`` names (see :func:`dead_projects`). ``conn``: an autocommit superuser
    connection to look with (a dead project is dropped over connections of its own).
    """
    from pytest_neon.local.reaper import drop_project

    dropped = 0
    for project_id in dead_projects(url, kept, conn):
        try:
            drop_project(url, project_id, patience=0.0)
        except Exception as exc:  # taken by a live run meanwhile, or a server hiccup
            log.debug("project %s not dropped: %s", project_id, exc)
            continue
        log.info("dropped project %s of a run that is gone", project_id)
        dropped += 1
    _drop_orphan_logins(url, conn)
    return dropped


def _drop_orphan_logins(url: str, conn: Connection | None) -> None:
    """Drop login roles (the kept server's) whose run's project is gone."""
    from pytest_neon.local.lazy_start import LOGIN_PREFIX, drop_role

    with connected(url, conn) as c:
        rows = c.execute(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (LOGIN_PREFIX,)
        ).fetchall()
        # after the roles: a run makes its project before its login role
        live = project_ids(c)
        for (name,) in rows:
            if name[len(LOGIN_PREFIX) :] not in live:
                drop_role(c, name)
