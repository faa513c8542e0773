"""Starting this process's part of the run: choose the backend, start the local one if
needed, make the ``NeonSession``, create the worker branch."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pytest_neon import worker_count
from pytest_neon.config import Settings
from pytest_neon.errors import NeonConfigError, NeonError
from pytest_neon.plugin_state import Backend, PluginState, Role
from pytest_neon.redact import redact, register_secret
from pytest_neon.worker_count import WorkerBranches
from pytest_neon.xdist import (
    Handoff,
    claim_coordination_dir,
    coordination_path,
    new_run_id,
    read_handoff,
    remove_coordination_dir,
    sweep_coordination_dirs,
    worker_id,
)

if TYPE_CHECKING:
    from pytest_neon.api import NeonClient
    from pytest_neon.api.transport import HttpSession
    from pytest_neon.local.lazy_start import Reservation
    from pytest_neon.local.shared_server import KeptServer, SharedServer
    from pytest_neon.local.space import Room
    from pytest_neon.neon_branch import NeonBranch
    from pytest_neon.neon_session import NeonSession

_deferred_lock = threading.Lock()
log = logging.getLogger("pytest_neon")

CONTROLLER_PLACEHOLDER = "postgresql://pytest-neon-xdist-controller.invalid/no-database-here"
NO_CREDENTIALS = (
    "pytest-neon: no Neon credentials: set NEON_API_KEY and NEON_PROJECT_ID "
    "(or --neon-api-key / --neon-project-id)"
)
NOTHING_AVAILABLE = (
    NO_CREDENTIALS + ", or make a local PostgreSQL available for --neon-backend local: "
    'pip install "pytest-neon[local]", install a PostgreSQL server package, '
    "or set NEON_LOCAL_POSTGRES_URL / --neon-local-postgres-url"
)


def start_process(
    settings: Settings,
    *,
    xdist_controller: bool,
    workers: int = 1,
    project_dir: Path | None = None,
) -> PluginState:
    """Decide this process's role and backend; start what it needs (may raise NeonError).

    ``workers``: the processes that will run tests; ``project_dir``: pytest's rootdir (a
    local server's branches go to RAM or disk from what its earlier runs held).
    """
    handoff = read_handoff()
    if handoff is not None:
        state = PluginState(
            settings=settings, run_id=handoff.run_id, role=Role.WORKER, workers=_worker_count()
        )
        state.parent_id = handoff.parent_id
        state.reserved = handoff.branches
        if handoff.worker_branches is not None:
            state.turns = WorkerBranches(handoff.worker_branches, "from the controller")
        if handoff.api_host:
            state.backend, state.backend_reason = Backend.LOCAL, "from the controller"
            if handoff.inspector_url:
                register_secret(urlsplit(handoff.inspector_url).password)
            _use(
                state,
                _make_session(
                    state,
                    api_host=handoff.api_host,
                    project_id=handoff.project_id or "",
                    api_key=handoff.api_key or "",
                    local=True,
                    inspector_url=handoff.inspector_url,
                    cache_url=handoff.cache_url,
                    worker=worker_id() or "main",
                ),
            )
        else:
            _choose_neon(state)
        return state
    role = Role.CONTROLLER if xdist_controller else Role.STANDALONE
    state = PluginState(
        settings=settings,
        run_id=new_run_id(),
        role=role,
        replaced_env=os.environ.get(settings.env_var) is not None,
        workers=workers,
        project_dir=project_dir,
    )
    sweep_coordination_dirs()  # those of runs killed long ago
    claim_coordination_dir(state.run_id)  # so that no later run takes this one for dead
    try:
        _choose(state)
        if state.backend is Backend.LOCAL and not _defer_local(state):
            _start_local(state)
        if role is Role.CONTROLLER:
            _start_controller(state)
    except BaseException:
        if state.local is not None:  # nothing else was created yet
            state.local.stop()
            state.local = None
        remove_coordination_dir(state.run_id)
        raise
    return state


def _start_controller(state: PluginState) -> None:
    """Hand the run over to the xdist workers; check Neon once before they start."""
    local = state.local
    session = _own_session(state, "controller")
    _use(state, session)
    branches = None
    if session is not None and state.backend is Backend.NEON:
        # One early check, so a refused key or unknown project fails once, here.
        state.turns = session.check_project(sweep_after=state.settings.sweep_after)
        # Every worker's branch and a migration branch, all or none: runs sharing a
        # project never hold part of what they need while waiting for the rest.
        branches = session.reserve_for_workers([f"gw{n}" for n in range(state.workers)])
    Handoff(
        branches=branches,
        worker_branches=state.turns.count if state.turns is not None else None,
        controller_pid=os.getpid(),
        run_id=state.run_id,
        parent_id=session.parent_id if session is not None else None,
        **(
            {
                "api_host": local.api_host,
                "project_id": local.project_id,
                "api_key": local.api_key,
                "inspector_url": local.inspector_url,
                "cache_url": local.cache_url,
            }
            if local
            else {}
        ),
    ).publish()


def _choose(state: PluginState) -> None:
    settings = state.settings
    if settings.backend == "neon":
        _choose_neon(state)
    elif settings.backend == "local":
        state.backend = Backend.LOCAL
        state.backend_reason = f"{settings.describe('backend')} is local"
    elif settings.has_credentials:
        state.backend = Backend.NEON
        state.backend_reason = "auto: NEON_API_KEY and NEON_PROJECT_ID are set"
    elif _kept_server_running(settings):  # (no search for binaries: it has them)
        state.backend = Backend.LOCAL
        state.backend_reason = "auto: no Neon credentials; the kept local PostgreSQL runs"
    else:
        from pytest_neon.local.availability import local_postgres_available

        ok, why = local_postgres_available(
            settings.local_postgres_url, settings.local_postgres_source
        )
        if ok:
            state.backend = Backend.LOCAL
            state.backend_reason = f"auto: no Neon credentials; {why}"
        else:
            state.unavailable = f"{NOTHING_AVAILABLE} ({why})"
            state.backend_reason = "auto: no Neon credentials and no local PostgreSQL"


def _choose_neon(state: PluginState) -> None:
    settings = state.settings
    state.backend = Backend.NEON
    state.backend_reason = f"{settings.describe('backend')} is neon"
    if not settings.has_credentials:
        state.unavailable = NO_CREDENTIALS
        state.backend = Backend.NONE


def _kept(settings: Settings) -> KeptServer | None:
    from pytest_neon.local.shared_server import KeptServer
    from pytest_neon.local.user_dirs import shared_server_dir

    if not settings.reuse_local_server(os.environ):
        return None
    return KeptServer(shared_server_dir(settings.local_dir), settings.local_idle_timeout)


def _kept_server_running(settings: Settings) -> bool:
    from pytest_neon.local.shared_server import running_kept_port

    if settings.local_postgres_source != "auto":  # binaries asked for: look for them
        return False
    kept = _kept(settings)
    return kept is not None and running_kept_port(kept.root) is not None


def _defer_local(state: PluginState) -> bool:
    """Promise a plain run its branch on the kept server (made before conftest.py is
    imported, by :func:`create_worker_branch`, unless a parked project holds it); the
    emulator and the session wait for a test that needs them (:func:`start_deferred`).
    A server that does not run is started first. ``False`` when the run must start as
    usual (no kept server here)."""
    from pytest_neon.local.lazy_start import reserve
    from pytest_neon.naming import branch_name

    kept = _kept(state.settings)
    if state.role is not Role.STANDALONE or kept is None:
        return False
    place = None
    if state.project_dir is not None:
        from pytest_neon.local.parking import place_of

        settings = state.settings
        place = place_of(state.project_dir, settings.database, settings.role)

    def reserved() -> Reservation | None:
        name = branch_name(state.run_id, "main")
        return reserve(
            kept.root, run_id=state.run_id, branch_name=name, place=place, in_ram=placement[0]
        )

    placement = _kept_placement(state, kept)

    state.reservation = reserved()
    how = "running"
    if state.reservation is None:
        started = _start_kept(state, kept)
        if started is None:
            return False
        placement = _kept_placement(state, kept)  # (its RAM tablespace made now)
        state.reservation = reserved()
        if state.reservation is None:
            return False
        how = f"{'reused' if started.reused else 'started'}; {started.source}"
    parked = "; the project parked by the last run here, taken over"
    state.backend_reason += (
        f" [kept local PostgreSQL in {kept.root} ({how})"
        f"{parked if state.reservation.claim is not None else ''}"
        f"{placement[1]}]"
    )
    return True


def _start_kept(state: PluginState, kept: KeptServer) -> SharedServer | None:
    """Start (or make again) the kept server; ``None`` when there can be none here (the
    run then falls back on a throwaway cluster, saying why, without trying again)."""
    from pytest_neon.local.shared_server import SharedServerUnavailable, ensure_shared_server

    try:
        return ensure_shared_server(
            kept.root, source=state.settings.local_postgres_source, idle_timeout=kept.idle_timeout
        )
    except SharedServerUnavailable as exc:
        state.not_kept = exc.message
        return None


def _kept_placement(state: PluginState, kept: KeptServer) -> tuple[bool, str]:
    """Whether a deferred run's branches go to RAM (else disk), and what the header
    says of it."""
    from pytest_neon.local.shared_server import ram_dir_of
    from pytest_neon.local.space import kept_placement

    room = _room(state)
    return kept_placement(ram_dir_of(kept.root), room.estimate() if room else None)


def start_deferred(state: PluginState) -> None:
    """Make the session of the branch promised at start, if there is none yet
    (thread-safe): the branch itself, unless a parked project holds it; the emulator too,
    unless the project was parked.

    A failure is kept in ``state.startup_error``: the tests that need the branch fail
    with it.
    """
    with _deferred_lock:
        reservation = state.reservation
        if reservation is None or state.session is not None or state.startup_error:
            return
        try:
            _start_local(state)
            if reservation.claim is not None:  # a parked project: its branches are ready
                state.parent_id = reservation.claim.parked.parent_id
            _use(state, _own_session(state, "main"))
            assert state.session is not None
            if reservation.claim is not None:
                worker, migration = _parked_branches(reservation, state.settings)
                state.session.attach_parked(worker, migration, reservation.claim.parked.cache_key)
                branch = worker
            else:
                branch = state.session.create_worker_branch()
            if branch.connection_string != reservation.dsn:
                raise NeonConfigError(
                    "pytest-neon: the kept local PostgreSQL gave the branch another "
                    f"connection string than {state.settings.env_var} holds; run again, or "
                    "set --neon-local-reuse=false"
                )
        except NeonError as exc:
            state.startup_error = str(exc)
            _stop_local(state)
        except Exception as exc:  # the server misbehaved: the tests say so, not pytest
            log.warning("the local backend did not start", exc_info=True)
            state.startup_error = (
                f"the local backend did not start: {type(exc).__name__}: {redact(str(exc))}"
            )
            _stop_local(state)


def _parked_branches(reservation: Reservation, settings: Settings) -> tuple[NeonBranch, NeonBranch]:
    """A claimed parked project's worker and migration branches, as its record and the
    reservation say (no API call: the emulator starts only when one is needed)."""
    from pytest_neon.neon_branch import NeonBranch

    assert reservation.claim is not None
    parked = reservation.claim.parked

    def branch(branch_id: str, endpoint_id: str, database: str) -> NeonBranch:
        return NeonBranch(
            branch_id=branch_id,
            project_id=parked.project_id,
            connection_string=reservation.dsn_of(database),
            host="127.0.0.1",
            parent_id=parked.parent_id,
            endpoint_id=endpoint_id,
            database_name=settings.database,
            role_name=settings.role,
        )

    return (
        branch(parked.worker_branch_id, parked.worker_endpoint_id, parked.database),
        branch(parked.migration_branch_id, parked.migration_endpoint_id, parked.migration_database),
    )


def _stop_local(state: PluginState) -> None:
    session, state.session, state.migrations = state.session, None, None
    if session is not None:
        with contextlib.suppress(Exception):
            session.shutdown()
    if state.local is not None:
        local, state.local = state.local, None
        with contextlib.suppress(Exception):  # (after a failed start: the error says it)
            local.stop()


def _start_local(state: PluginState) -> None:
    from pytest_neon.local.backend import LocalBackend

    settings = state.settings
    state.local = LocalBackend.start(
        settings.local_postgres_url,
        settings.local_postgres_source,
        leftovers=[coordination_path(state.run_id)],
        kept=None if state.not_kept else _kept(settings),
        not_kept=state.not_kept,
        reservation=state.reservation,
        room=_room(state),
    )
    if state.reservation is None:
        state.backend_reason += f" [{state.local.description}]"


def _room(state: PluginState) -> Room | None:
    from pytest_neon.local.space import Room, copies_needed

    if state.project_dir is None:
        return None
    turns = worker_count.local(state.settings).count
    return Room(state.project_dir, copies_needed(state.workers, turns))


def _client(
    settings: Settings,
    api_host: str,
    api_key: str,
    *,
    local: bool = False,
    session: HttpSession | None = None,
) -> NeonClient:
    source = "the local backend" if local else settings.describe("api_key")
    if source == "default":
        source = "NEON_API_KEY"
    from pytest_neon.api import NeonClient, client_limits

    timeout, retry = client_limits(settings.api_timeout)
    return NeonClient(
        api_key,
        api_host=api_host,
        key_source=source,
        timeout=timeout,
        retry=retry,
        session=session,
    )


def _local_settings(settings: Settings, project_id: str) -> Settings:
    """Settings for the run's own emulated project.

    No migration cache on branches: each local run has a project of its own, so a later
    run could never find a cache branch (the kept server caches databases instead).
    """
    return settings._replace(project_id=project_id, parent_branch=None, migration_cache=False)


def _make_session(
    state: PluginState,
    *,
    api_host: str,
    project_id: str,
    api_key: str,
    local: bool,
    worker: str,
    inspector_url: str | None = None,
    cache_url: str | None = None,
    login: tuple[str, str] | None = None,
    session: Callable[[], HttpSession] | None = None,
) -> NeonSession:
    """``session``: makes the HTTP session of the client (the local emulator's, called
    in-process); a local run's client is made when first needed (a run that took over a
    parked project may never call the API: nothing of it is loaded then)."""
    settings = _local_settings(state.settings, project_id) if local else state.settings

    def client() -> NeonClient:
        http = session() if session is not None else None
        return _client(settings, api_host, api_key, local=local, session=http)

    from pytest_neon.neon_session import NeonSession

    if local:
        state.turns = worker_count.local(settings)
    made = NeonSession(
        client if local else client(),
        settings,
        run_id=state.run_id,
        worker=worker,
        parent_id=state.parent_id,
        workers=state.workers,
        inspector_url=inspector_url,
        cache_url=cache_url if state.settings.migration_cache else None,
        login=login,
    )
    if state.turns is not None:
        made.use_worker_branches(state.turns.count)
    return made


def _use(state: PluginState, session: NeonSession | None) -> None:
    """Make ``session`` this process's (with the migrations it runs or adopts)."""
    from pytest_neon.migrations import Migrations

    state.session = session
    state.migrations = Migrations(session) if session is not None else None
    if session is not None:
        for callback in state.when_ready:
            callback(session)


def _own_session(state: PluginState, worker: str) -> NeonSession | None:
    """A session on this process's own backend: the local one it started, or Neon."""
    settings = state.settings
    if state.local is not None:
        session = _make_session(
            state,
            api_host=state.local.api_host,
            project_id=state.local.project_id,
            api_key=state.local.api_key,
            local=True,
            inspector_url=state.local.inspector_url,
            cache_url=state.local.cache_url,
            login=_login(state),
            worker=worker,
            session=state.local.session,  # this process runs the emulator
        )
        local = state.local
        session.seed_database = lambda branch, template: local.emulator.seed_database(
            branch, template
        )
        return session
    if state.backend is Backend.NEON and settings.project_id:
        return _make_session(
            state,
            api_host=settings.api_host,
            project_id=settings.project_id,
            api_key=settings.api_key or "",
            local=False,
            worker=worker,
        )
    return None


def _login(state: PluginState) -> tuple[str, str] | None:
    res = state.reservation
    return (res.login, res.password) if res is not None else None


def _worker_count() -> int:
    """An xdist worker: how many workers its run has (xdist says)."""
    try:
        return max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    except ValueError:
        return 1


def create_worker_branch(state: PluginState) -> None:
    """Create the branch this process's tests run on and point the env var at it.

    An xdist controller runs no test but imports ``conftest.py``: its env var points at a
    placeholder that can never reach a database (not at whatever it held before).
    """
    if state.unavailable:
        return
    if state.role is Role.CONTROLLER:
        state.point_env_at(CONTROLLER_PLACEHOLDER)
        return
    if state.reservation is not None:
        if state.reservation.claim is None:  # nothing parked here: the branch is made now
            start_deferred(state)
            if state.startup_error:
                error = state.startup_error
                raise NeonError(
                    error if error.startswith("pytest-neon") else f"pytest-neon: {error}"
                )
        state.point_env_at(state.reservation.dsn)  # (a parked branch is there already)
        return
    if state.session is None:
        _use(state, _own_session(state, worker_id() or "main"))
        if state.session is None:
            return
        if state.backend is Backend.NEON and state.role is Role.STANDALONE:
            state.turns = state.session.check_project(sweep_after=state.settings.sweep_after)
    session = state.session
    if state.turns is not None:
        session.use_worker_branches(state.turns.count)
    if state.reserved:
        session.attach_reserved(state.reserved)
    if state.backend is Backend.NEON and state.role is Role.STANDALONE:
        branch = session.admit()  # with a migration branch, all or none
    else:
        branch = session.create_worker_branch()
    state.point_env_at(branch.connection_string)
