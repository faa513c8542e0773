"""The embedded default: a local PostgreSQL with the Neon emulator in front of it."""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from pytest_neon.local.lazy_start import Reservation, create_login, lock_out
from pytest_neon.local.shared_server import (
    KeptServer,
    SharedServer,
    SharedServerUnavailable,
    attach_shared_server,
    ensure_shared_server,
    hand_over_cleanup,
)
from pytest_neon.local.space import Room, branches_on_kept_server, note_largest_database
from pytest_neon.local.unavailable import PostgresUnavailableError
from pytest_neon.redact import redact, register_secret

# What only a new emulator, a given server or a throwaway cluster needs loads with it: a
# run that takes over a parked project needs none of it.
if TYPE_CHECKING:
    from pytest_neon.api.transport import HttpSession
    from pytest_neon.local.cluster import RunningPostgres
    from pytest_neon.local.emulator import Emulator
    from pytest_neon.local.reaper import Reaper
    from pytest_neon.neon_session import ParkPlan

log = logging.getLogger("pytest_neon.local")


#: the API base URL of an emulator started only when the run first calls it: the calls go
#: to it in-process, never over HTTP (see :meth:`LocalBackend.session`)
IN_PROCESS_API = "http://in-process.invalid/api/v2"


class LocalBackend:
    """The run's emulator (started at once, or on the first API call: see ``later``) and
    the throwaway PostgreSQL it owns, if any."""

    def __init__(
        self,
        started: Emulator | None,
        postgres: RunningPostgres | None,
        description: str,
        inspector_url: str | None = None,
        *,
        shared: SharedServer | None = None,
        room: Room | None = None,
        reservation: Reservation | None = None,
        api_key: str = "",
        later: Callable[[], Emulator] | None = None,
    ) -> None:
        self.started = started  # the emulator, once started
        self.postgres = postgres
        self.description = description
        self.inspector_url = inspector_url
        self.reaper: Reaper | None = None
        self.shared = shared
        self.room = room
        self.reservation = reservation  # the kept server's promise to a plain run
        self.api_key = api_key  # the emulator's (random per run)
        #: starts the emulator on first use: a run that took over a parked project may
        #: never call the API (no import, no start)
        self.later = later
        self._starting = threading.Lock()

    @property
    def emulator(self) -> Emulator:
        """The emulator, started now if it was not."""
        with self._starting:
            if self.started is None:
                assert self.later is not None
                self.started = self.later()
            return self.started

    @property
    def cache_url(self) -> str | None:
        """The kept server's superuser DSN (no password), where migrations are cached."""
        return self.shared.url if self.shared is not None else None

    @property
    def api_host(self) -> str:
        """The emulator's API base URL (one that is never reached over HTTP when it starts
        on first use)."""
        return IN_PROCESS_API if self.later is not None else self.emulator.api_host

    @property
    def project_id(self) -> str:
        """The emulated project."""
        if self.started is None and self.reservation is not None:
            return self.reservation.project_id
        return self.emulator.project_id

    def _park(self, plan: ParkPlan) -> bool:
        """Park the project for the next run of the place; whether it is."""
        from pytest_neon import __version__
        from pytest_neon.local.parking import ParkedProject, park

        res = self.reservation
        if res is None or res.place is None:
            return False
        emulator = self.started
        try:
            if emulator is not None:
                from pytest_neon.local.emulator.plane.projects import DEFAULT_ROLE

                with emulator.server_connection() as conn:  # (one at hand)
                    lock_out(conn, self.project_id)
                migration_database = emulator.real_database(plan.migration_branch_id)
                owner = DEFAULT_ROLE
            else:  # as it was taken over, nothing made since: the watchdog locks it out
                assert res.claim is not None
                migration_database = res.claim.parked.migration_database
                owner = res.claim.parked.owner
        except Exception as exc:  # the project is dropped instead
            log.debug("not parked: %s", exc)
            return False
        record = ParkedProject(
            project_id=self.project_id,
            worker_branch_id=plan.worker_branch_id,
            worker_endpoint_id=plan.worker_endpoint_id,
            migration_branch_id=plan.migration_branch_id,
            migration_endpoint_id=plan.migration_endpoint_id,
            parent_id=plan.parent_id,
            database=res.database,
            migration_database=migration_database,
            owner=owner,
            cache_key=plan.cache_key,
            plugin=__version__,
            fresh=plan.fresh,
            locked_out=emulator is not None,
            # (a claimed project's databases stay where they were)
            in_ram=res.claim.parked.in_ram
            if res.claim is not None
            else self.shared is not None and self.shared.tablespace is not None,
        )
        if res.claim is not None:
            return res.claim.park_again(record)
        return park(res.root, res.place, record)

    def _note_size(self) -> None:
        """On a server of ours, note the run's largest database for the next run's choice
        of RAM or disk."""
        ours = self.shared or self.postgres
        if self.room is not None and ours is not None:
            from pytest_neon.local.emulator.sql.ownership import comment_for

            note_largest_database(ours.url, comment_for(self.project_id), self.room)

    def session(self) -> HttpSession:
        """An HTTP session for this process's client that calls the emulator in-process
        (starting it on the first call, if it is not yet)."""
        from pytest_neon.local.transport import in_process_session

        return in_process_session(self.api_host, lambda: self.emulator.api)

    @classmethod
    def start(
        cls,
        postgres_url: str | None = None,
        source: str = "auto",
        *,
        leftovers: Sequence[Path] = (),
        kept: KeptServer | None = None,
        reservation: Reservation | None = None,
        room: Room | None = None,
        not_kept: str | None = None,
    ) -> LocalBackend:
        """Start the emulator over ``postgres_url``, the kept server (``kept``), or a new
        throwaway cluster.

        ``source`` picks where the server's binaries come from (see ``start_postgres``).
        ``leftovers``: more paths the watchdog removes if this process is killed.
        ``reservation``: what the first branch was promised to be (on the kept server).
        ``room``: what the run's branches will hold (RAM or disk is chosen from it).
        ``not_kept``: why there can be no kept server here, found already.
        """
        server = _server(postgres_url, source, kept, reservation, room, not_kept)
        api_key = secrets.token_urlsafe(24)
        register_secret(api_key)
        if reservation is not None and reservation.claim is not None:
            # a parked project taken over (pg_walinspect installed by the run that made
            # it, its login given the run's password by the claim): the emulator starts
            # when the run first calls the API, if ever
            return cls(
                None,
                None,
                server.description,
                server.url,
                shared=server.shared,
                room=room,
                reservation=reservation,
                api_key=api_key,
                later=lambda: _start_emulator(server, reservation, api_key),
            )
        emulator = _start_emulator(server, reservation, api_key)
        # pg_walinspect lets the plugin tell which database a WAL record touched: installed
        # on our own servers; on a given one, created in a database of the run if it may.
        description = server.description
        if postgres_url:
            from pytest_neon.local.emulator.sql.ownership import comment_for
            from pytest_neon.local.write_checks import given_server_checks

            checks = given_server_checks(server.url, comment_for(emulator.project_id))
            inspector = checks.url
            if checks.note:
                description += f"; {checks.note}"
        else:
            from pytest_neon.probe import wal_inspector_available

            with emulator.server_connection() as conn:
                found = wal_inspector_available(server.url, install=True, conn=conn)
            inspector = server.url if found else None
        backend = cls(
            emulator,
            server.postgres,
            description,
            inspector,
            shared=server.shared,
            room=room,
            reservation=reservation,
            api_key=api_key,
        )
        if server.shared is not None:
            # the kept server's own watchdog drops the project once this run is gone
            # (killed or not): no process of the run's own competes with its start. (The
            # run's shared directory, if killed, goes with `sweep_coordination_dirs`.)
            return backend
        # after a kill -9 of this process, a watchdog cleans up what it would have
        postgres = server.postgres
        plan = postgres.cleanup_plan() if postgres is not None else None
        if plan is None:
            plan = {"kind": "project", "url": server.url, "project_id": emulator.project_id}
        plan["leftovers"] = [str(path) for path in leftovers]
        from pytest_neon.local.reaper import Reaper

        try:
            backend.reaper = Reaper(plan)
        except OSError as exc:  # a safety net only: the run itself still cleans up
            log.warning("pytest-neon: no cleanup watchdog for a killed run: %s", exc)
        return backend

    @property
    def hands_over(self) -> bool:
        """Whether :meth:`stop` leaves dropping the run's project to the kept server's
        watchdog (the run need not wait for it), so its branches need no deleting first."""
        return self.shared is not None

    def stop(self, park: ParkPlan | None = None) -> None:
        """Stop serving; drop the run's databases from a given server (on the kept server,
        its watchdog does that while this process exits), or remove the cluster.

        ``park``: what the project holds, when it may be parked for the next run of the
        place (see :mod:`pytest_neon.local.parking`)."""
        claim = self.reservation.claim if self.reservation is not None else None
        if park is None or claim is None or claim.parked.cache_key != park.cache_key:
            self._note_size()  # (a parked project in the same state: noted when parked)
        if self.shared is not None:
            parked = park is not None and self._park(park)
            # its lock goes: the watchdog may drop it (its spare copies too), if not parked
            if self.started is not None:
                self.started.stop(drop=False, abandon=True)
            if parked:
                return
            if claim is not None:
                claim.end()
            if not hand_over_cleanup(self.shared.root):
                from pytest_neon.local.reaper import drop_project

                drop_project(self.shared.url, self.project_id, patience=5.0)
            return
        try:
            self.emulator.stop(drop=self.postgres is None)
        finally:
            try:
                if self.postgres is not None:
                    self.postgres.stop()
            finally:
                # only now: if this process dies before, the watchdog still cleans up
                if self.reaper is not None:
                    self.reaper.dismiss()
                    self.reaper = None


def _kept_server(
    kept: KeptServer, source: str, reservation: Reservation | None = None
) -> SharedServer:
    """The kept server, running (on the port ``reservation`` promised), with what dead
    runs left on it dropped (by its watchdog, beside the run's start)."""
    port = reservation.port if reservation is not None else None
    shared = None
    claimed = reservation is not None and reservation.claim is not None
    if source == "auto" and port is not None and claimed:
        # a parked project taken over: its thread has just worked on the server (binaries
        # asked for by name are checked, as ensure_shared_server does)
        shared = attach_shared_server(kept.root, port, idle_timeout=kept.idle_timeout)
    if shared is None:
        shared = ensure_shared_server(
            kept.root, source=source, idle_timeout=kept.idle_timeout, port=port
        )
    if port is not None and shared.port != port:
        raise PostgresUnavailableError(
            f"the kept local PostgreSQL in {kept.root} restarted on port {shared.port}, not "
            f"{port} as the env var says (the port was taken "
            "meanwhile): run again, or set --neon-local-reuse=false"
        )

    if not hand_over_cleanup(kept.root):  # (its watchdog is gone: this run sweeps)
        threading.Thread(
            target=_sweep, args=(shared.url, kept.root), name="pytest-neon-dead-runs", daemon=True
        ).start()
    return shared


def _sweep(url: str, root: Path) -> None:
    """Drop what dead runs left (not what is parked), and failing tests' data kept past
    its expiry."""
    from pytest_neon.local.dead_runs import drop_dead_projects
    from pytest_neon.local.kept_failures import drop_expired_quietly
    from pytest_neon.local.parking import protected_projects

    try:
        drop_dead_projects(url, lambda: protected_projects(root))
    except Exception as exc:  # the next run or the watchdog tries again
        log.debug("could not drop the projects of dead runs: %s", exc)
    drop_expired_quietly(url)


class _Server(NamedTuple):
    """The PostgreSQL a run's emulator serves from, and what to say of it."""

    url: str
    description: str
    postgres: RunningPostgres | None = None  # a throwaway cluster of this run's
    shared: SharedServer | None = None  # the kept server


def _server(
    postgres_url: str | None,
    source: str,
    kept: KeptServer | None,
    reservation: Reservation | None,
    room: Room | None = None,
    not_kept: str | None = None,
) -> _Server:
    """The server given by URL, else the kept one, else a new throwaway cluster."""
    if postgres_url:
        from pytest_neon.local.given_server import check_postgres_url
        from pytest_neon.local.kept_failures import drop_expired_quietly

        check_postgres_url(postgres_url)
        drop_expired_quietly(postgres_url)  # failing tests' data kept by earlier runs
        return _Server(postgres_url, f"PostgreSQL at {redact(postgres_url)}")
    estimate = room.estimate() if room is not None else None
    fallback = f"; not kept: {not_kept}" if not_kept else ""
    if kept is not None:
        try:
            shared = _kept_server(kept, source, reservation)
            shared, note = branches_on_kept_server(shared, estimate)
            return _Server(shared.url, shared.description + note, shared=shared)
        except SharedServerUnavailable as exc:
            if reservation is not None:
                raise
            fallback = f"; not kept: {exc.message}"
    from pytest_neon.local.launcher import start_postgres
    from pytest_neon.local.space import throwaway_place

    base_dir, note = throwaway_place(estimate)
    postgres = start_postgres(prefer=source, base_dir=base_dir)
    return _Server(
        postgres.url,
        f"throwaway cluster ({postgres.source}){fallback}{note}",
        postgres=postgres,
    )


def _start_emulator(server: _Server, reservation: Reservation | None, api_key: str) -> Emulator:
    """The run's emulator over ``server`` (stopping a throwaway cluster if it fails)."""
    from pytest_neon.local.emulator import Emulator
    from pytest_neon.local.emulator.plane.projects import DEFAULT_ROLE

    shared = server.shared
    try:
        emulator = Emulator(
            server.url,
            project_id=reservation.project_id if reservation is not None else None,
            api_key=api_key,
            client_address=("127.0.0.1", shared.port) if shared is not None else None,
            tablespace=shared.tablespace if shared is not None else None,
            endpoint_proxy=False,  # the plugin connects by connection_uri, straight
        )
        emulator.start()
    except BaseException:
        if server.postgres is not None:
            server.postgres.stop()
        raise
    if reservation is not None and reservation.claim is None:
        try:
            emulator.name_database(reservation.branch_name, reservation.database)
            with emulator.server_connection() as conn:
                create_login(conn, reservation, DEFAULT_ROLE)
        except BaseException:
            emulator.stop(drop=True)
            raise
    return emulator
