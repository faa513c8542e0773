"""The cluster-wide LOGIN roles that the projects' roles are: create, update, find, drop."""

from __future__ import annotations

import logging
from typing import Any

from psycopg import errors, sql

from pytest_neon.local.emulator.scram_keys import scram_matches
from pytest_neon.local.emulator.sql.server import SqlServer

log = logging.getLogger("pytest_neon.emulator")

# Rights of a Neon branch's owner role (on Neon it is a member of neon_superuser).
_OWNER_RIGHTS = sql.SQL(" CREATEDB CREATEROLE")


class ClusterRoles:
    """The roles of the server behind the emulator."""

    def __init__(self, server: SqlServer) -> None:
        self.server = server

    def ensure(self, name: str, password: str, *, login: bool = True) -> bool:
        """Give the role ``name`` the ``password`` (and LOGIN unless ``login`` is false);
        ``True`` if the role was created.

        Like a Neon branch's owner, the role may create databases and roles (pytest-django
        makes its test databases with them); where the server's own role may not grant
        that, the role goes without.
        """
        ident = sql.Identifier(name)
        can = sql.SQL("LOGIN" if login else "NOLOGIN")
        with self.server.connection() as conn:
            found = conn.execute(
                "SELECT rolcanlogin, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = %s",
                (name,),
            ).fetchone()
            exists = found is not None
            if found == (login, True, True) and _has_password(conn, name, password):
                return False  # as asked already (a run on the kept server: most often)
            # hashed here: the password itself never reaches the server's statement log
            secret = sql.Literal(
                conn.pgconn.encrypt_password(
                    password.encode(), name.encode(), b"scram-sha-256"
                ).decode()
            )
            for rights in (_OWNER_RIGHTS, sql.SQL("")):
                try:
                    if not exists:
                        conn.execute(
                            sql.SQL("CREATE ROLE {} WITH {}{} PASSWORD {}").format(
                                ident, can, rights, secret
                            )
                        )
                        return True
                    conn.execute(
                        sql.SQL("ALTER ROLE {} WITH {}{} PASSWORD {}").format(
                            ident, can, rights, secret
                        )
                    )
                    return False
                except errors.DuplicateObject:
                    exists = True  # created concurrently: ALTER it
                    continue
                except errors.InsufficientPrivilege:
                    log.debug("role %s: this server's role may not grant CREATEDB CREATEROLE", name)
            raise RuntimeError(f"could not create or update role {name}")  # pragma: no cover

    def created_by(self, name: str) -> list[str]:
        """Roles that role ``name`` created (PostgreSQL 16+ records them; earlier: none)."""
        if self.server.server_version < 160000:
            return []
        with self.server.connection() as conn:
            rows = conn.execute(
                "SELECT r.rolname FROM pg_auth_members m"
                " JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles c ON c.oid = m.member"
                " WHERE c.rolname = %s AND m.admin_option AND m.grantor = 10",
                (name,),
            ).fetchall()
        return [row[0] for row in rows]

    def drop(self, name: str) -> bool:
        """Drop role ``name``; keep it (``False``) while it still owns objects."""
        with self.server.connection() as conn:
            try:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
            except errors.DependentObjectsStillExist:
                log.debug("role %s still owns objects; kept", name)
                return False
        return True


def _has_password(conn: Any, name: str, password: str) -> bool:
    """Whether role ``name``'s SCRAM verifier is that of ``password`` (``False`` when it
    cannot be read: a server role that is no superuser)."""
    try:
        row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (name,))
        found = row.fetchone()
    except errors.InsufficientPrivilege:
        return False
    return bool(found and found[0]) and scram_matches(found[0], password)
