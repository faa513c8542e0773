"""What ties objects on the shared PostgreSQL server to an emulated project: the comment
on every real database of a project, and the advisory locks that make one emulator the
only server of a project and serialize role changes across emulators.

Light on purpose: runs that take over a parked project use these without loading the
emulator's metadata store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_neon.local.emulator.sql.server import Connection

#: advisory-lock namespace of the emulator ("NEON"); key 0 guards the metadata schema's
#: creation, key 1 role changes, ``hashtext(project id)`` a project's one server
LOCK_CLASS = 0x4E454F4E


def comment_for(project_id: str) -> str:
    """The comment put on every real database of ``project_id`` (finds strays after a crash)."""
    return f"pytest-neon-emulator project={project_id}"


def try_lock_project(conn: Connection, project_id: str) -> bool:
    """Take the session lock that makes this connection the only server of ``project_id``."""
    row = conn.execute(
        "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (LOCK_CLASS, project_id)
    ).fetchone()
    return bool(row and row[0])


def lock_role_names(conn: Connection) -> None:
    """Serialize role changes across emulators (inside a transaction).

    Waits until the lock is held, also on a pipelined connection (whose statements are
    otherwise only queued): the role changes that follow run on other connections.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s, 1)", (LOCK_CLASS,)).fetchone()
