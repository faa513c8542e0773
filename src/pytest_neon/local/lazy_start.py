"""A run on the kept local server whose connection string is chosen before anything is
made, so that a run that takes over a parked project makes nothing at all.

``DATABASE_URL`` must name the test branch before ``conftest.py`` is imported. With the
kept server running, everything in that connection string can be chosen up front: the
server's port (from its ``postmaster.pid``), the name of the first branch's database (the
emulator is asked to use it), and a login role of the run's own with a new password. That
role logs in as the project's owner role (``SET role``), so everything it makes belongs to
the owner, as on Neon. A run that claims a parked project (see
:mod:`~pytest_neon.local.parking`) finds its branch there already: it takes the password
the server's watchdog gave the login (:mod:`~pytest_neon.local.watchdog_socket`), or gives it
one, and loads the emulator when a test first needs a reset or a new branch.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

from pytest_neon.local.shared_server import running_kept_port, touch_last_use
from pytest_neon.redact import register_secret, repr_without

if TYPE_CHECKING:
    from pytest_neon.local.parking import Claim

log = logging.getLogger(__name__)

LOGIN_PREFIX = "pytest_neon_login_"


def login_role(project_id: str) -> str:
    """The login role of the run whose project is ``project_id``."""
    return LOGIN_PREFIX + project_id


class Reservation(NamedTuple):
    """What the run's first branch will be, before it exists."""

    root: Path
    port: int
    project_id: str
    branch_name: str
    database: str
    password: str  # (not in the repr)
    #: the project parked by an earlier run of the place, taken over (its branch is the
    #: one promised)
    claim: Claim | None = None
    #: where the run comes from, for parking its project at its end
    place: str | None = None

    def __repr__(self) -> str:
        return repr_without(self, ("password",))

    @property
    def login(self) -> str:
        """The run's login role."""
        return login_role(self.project_id)

    @property
    def dsn(self) -> str:
        """The branch's connection string, as the env var gets it now."""
        return self.dsn_of(self.database)

    def dsn_of(self, database: str) -> str:
        """The run's login's connection string to ``database`` on the server."""
        return (
            f"postgresql://{quote(self.login, safe='')}:{quote(self.password, safe='')}"
            f"@127.0.0.1:{self.port}/{quote(database, safe='')}"
        )


def reserve(
    root: Path, *, run_id: str, branch_name: str, place: str | None = None, in_ram: bool = True
) -> Reservation | None:
    """A reservation on the kept server in ``root``; ``None`` when it is not running, or
    was made by another version (the run then starts it before conftest.py, as before).

    ``place``: where the run comes from (see :func:`~pytest_neon.local.parking.place_of`):
    the project parked there, if any, is claimed, and its branch is the one promised,
    unless its databases are not where the run's go (``in_ram``: the RAM tablespace; else
    on disk): it is dropped then."""
    port = running_kept_port(root)
    if port is None:
        return None
    touch_last_use(root)  # the watchdog does not stop it under this run
    taken = None
    if place is not None:
        from pytest_neon.local.parking import claim

        taken = claim(root, place)
    if taken is not None and taken.parked.in_ram != in_ram:  # (the database grew, say)
        taken.end()  # its project goes with the next sweep
        taken = None
    handed = None
    if taken is not None and taken.parked.handed and taken.parked.fresh:
        from pytest_neon.local.watchdog_socket import ask_password

        handed = ask_password(root, taken.parked.project_id)  # nothing to run on the server
    password = handed or secrets.token_urlsafe(24)
    register_secret(password)
    if taken is not None:
        reservation = Reservation(
            root=root,
            port=port,
            project_id=taken.parked.project_id,
            branch_name=branch_name,
            database=taken.parked.database,
            password=password,
            claim=taken,
            place=place,
        )
        if handed is not None:
            return reservation
        try:
            # before conftest.py is imported, which may connect to the branch at once
            _take_over(reservation, taken)
        except Exception as exc:  # the server's sweep drops it; this run makes its own
            log.debug("the parked project %s was not taken over: %s", taken.parked, exc)
            taken.end()
        else:
            return reservation
    return Reservation(
        root=root,
        port=port,
        project_id=f"pytest-neon-{run_id}",  # the run's own (ids are unique per run)
        branch_name=branch_name,
        database=f"pytest_neon_{run_id}",
        password=password,
        place=place,
    )


def _take_over(reservation: Reservation, taken: Claim) -> None:
    """Make the claimed parked project ready for the run: its worker branch a new copy of
    the migrated state if a test had it, its login given the run's password."""
    parked = taken.parked
    # (a server whose RAM tablespace was lost, after a reboot, lost the parked databases)
    needed = (parked.database, parked.migration_database)
    statement = login_statement(reservation, parked.owner, needed)
    if parked.fresh:  # (made ready by the server's watchdog, most often)
        from pytest_neon.local.socket_statement import run_statement

        run_statement(reservation.root, reservation.port, statement)  # no driver loaded
        return
    from pytest_neon.local.emulator.sql.server import SqlServer
    from pytest_neon.local.parking import refresh
    from pytest_neon.local.shared_server import socket_url

    server = SqlServer(socket_url(reservation.root, reservation.port), pool_size=1)
    try:
        refresh(server, parked)
        with server.connection() as conn:
            conn.execute(statement)
    finally:
        server.close()


def create_login(conn: Any, reservation: Reservation, owner: str) -> None:
    """Create the run's login role through ``conn`` (an autocommit superuser connection
    to the server)."""
    conn.execute(login_statement(reservation, owner))


def login_statement(reservation: Reservation, owner: str, databases: tuple[str, ...] = ()) -> str:
    """The one statement (one round trip) that gives the run's login its password (see
    :func:`password_statement`)."""
    return password_statement(reservation.login, reservation.password, owner, databases)


def password_statement(
    login: str, password: str, owner: str, databases: tuple[str, ...] = ()
) -> str:
    """The one statement that gives role ``login`` the password ``password``: role
    changes serialized server-wide; an existing login given its new password, else a new
    login that acts as ``owner``. The password goes as its SCRAM verifier, never in
    clear. It fails, changing nothing, unless ``databases`` exist."""
    from pytest_neon.local.emulator.scram_keys import verifier
    from pytest_neon.local.emulator.sql.ownership import LOCK_CLASS
    from pytest_neon.local.socket_statement import quote_ident, quote_literal

    role = quote_ident(login)
    secret = quote_literal(verifier(password))
    names = ", ".join(quote_literal(name) for name in databases) or "NULL"
    body = (
        f"BEGIN IF (SELECT count(*) FROM pg_database WHERE datname IN ({names})) "
        f"< {len(databases)} THEN RAISE EXCEPTION 'a parked database is gone'; END IF; "
        f"PERFORM pg_advisory_xact_lock({LOCK_CLASS}, 1); "
        f"IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {quote_literal(login)})"
        f" THEN ALTER ROLE {role} LOGIN PASSWORD {secret}; "
        f"ELSE CREATE ROLE {role} LOGIN PASSWORD {secret} IN ROLE {quote_ident(owner)}; "
        f"ALTER ROLE {role} SET role = {quote_literal(owner)}; END IF; END"
    )
    tag = "$pytest_neon$"
    if tag in body:
        raise ValueError("a role name holds the statement's quoting tag")
    return f"DO {tag}{body}{tag}"


def lock_out(conn: Any, project_id: str) -> None:
    """The login role of ``project_id``'s run can log in no more (its project is parked:
    the next run that claims it gives it a password of its own)."""
    conn.execute(lock_out_statement(project_id))


def lock_out_statement(project_id: str) -> str:
    """What :func:`lock_out` runs."""
    from pytest_neon.local.socket_statement import quote_ident

    return f"ALTER ROLE {quote_ident(login_role(project_id))} NOLOGIN PASSWORD NULL"


def drop_login(url: str, project_id: str) -> None:
    """Drop the login role of ``project_id``'s run, if there is one."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        drop_role(conn, login_role(project_id))


def drop_role(conn: Any, name: str) -> None:
    """Drop role ``name`` if it exists, one role change on the server at a time."""
    from psycopg import sql

    from pytest_neon.local.emulator.sql.ownership import lock_role_names

    with conn.transaction():
        lock_role_names(conn)
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
