"""Starting this process's part of the run: choose the backend, start the local one if
needed, make the ``NeonSession``, create the worker branch."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import requests

from pytest_neon.api import NeonClient, client_limits
from pytest_neon.config import Settings
from pytest_neon.migrations import Migrations
from pytest_neon.neon_session import NeonSession
from pytest_neon.plugin_state import Backend, PluginState, Role
from pytest_neon.redact import register_secret
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


def start_process(settings: Settings, *, xdist_controller: bool) -> PluginState:
    """Decide this process's role and backend; start what it needs (may raise NeonError)."""
    handoff = read_handoff()
    if handoff is not None:
        state = PluginState(settings=settings, run_id=handoff.run_id, role=Role.WORKER)
        state.parent_id = handoff.parent_id
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
    )
    sweep_coordination_dirs()  # those of runs killed long ago
    claim_coordination_dir(state.run_id)  # so that no later run takes this one for dead
    try:
        _choose(state)
        if state.backend is Backend.LOCAL:
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
    if session is not None and state.backend is Backend.NEON:
        # One early check, so a refused key or unknown project fails once, here.
        session.check_project(sweep_after=state.settings.sweep_after)
    Handoff(
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
    else:
        from pytest_neon.local.backend import local_postgres_available

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


def _start_local(state: PluginState) -> None:
    from pytest_neon.local.backend import KeptServer, LocalBackend
    from pytest_neon.local.user_dirs import shared_server_dir

    settings = state.settings
    kept = None
    if settings.reuse_local_server(os.environ):
        kept = KeptServer(shared_server_dir(settings.local_dir), settings.local_idle_timeout)
    state.local = LocalBackend.start(
        settings.local_postgres_url,
        settings.local_postgres_source,
        leftovers=[coordination_path(state.run_id)],
        kept=kept,
    )
    state.backend_reason += f" [{state.local.description}]"


def _client(
    settings: Settings,
    api_host: str,
    api_key: str,
    *,
    local: bool = False,
    session: requests.Session | None = None,
) -> NeonClient:
    source = "the local backend" if local else settings.describe("api_key")
    if source == "default":
        source = "NEON_API_KEY"
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
    from dataclasses import replace

    return replace(settings, project_id=project_id, parent_branch=None, migration_cache=False)


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
    session: requests.Session | None = None,
) -> NeonSession:
    settings = _local_settings(state.settings, project_id) if local else state.settings
    client = _client(settings, api_host, api_key, local=local, session=session)
    return NeonSession(
        client,
        settings,
        run_id=state.run_id,
        worker=worker,
        parent_id=state.parent_id,
        workers=_worker_count(),
        inspector_url=inspector_url,
        cache_url=cache_url if state.settings.migration_cache else None,
    )


def _use(state: PluginState, session: NeonSession | None) -> None:
    """Make ``session`` this process's (with the migrations it runs or adopts)."""
    state.session = session
    state.migrations = Migrations(session) if session is not None else None


def _own_session(state: PluginState, worker: str) -> NeonSession | None:
    """A session on this process's own backend: the local one it started, or Neon."""
    settings = state.settings
    if state.local is not None:
        return _make_session(
            state,
            api_host=state.local.api_host,
            project_id=state.local.project_id,
            api_key=state.local.api_key,
            local=True,
            inspector_url=state.local.inspector_url,
            cache_url=state.local.cache_url,
            worker=worker,
            session=state.local.session(),  # this process runs the emulator
        )
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


def _worker_count() -> int:
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
    if state.session is None:
        _use(state, _own_session(state, worker_id() or "main"))
        if state.session is None:
            return
        if state.backend is Backend.NEON and state.role is Role.STANDALONE:
            state.session.check_project(sweep_after=state.settings.sweep_after)
    branch = state.session.create_worker_branch()
    state.point_env_at(branch.connection_string)
