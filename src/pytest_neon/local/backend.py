"""The embedded default: a local PostgreSQL with the Neon emulator in front of it."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from pytest_neon.local.binaries import find_pg_bindir
from pytest_neon.local.cluster import RunningPostgres
from pytest_neon.local.emulator import Emulator
from pytest_neon.local.given_server import check_postgres_url
from pytest_neon.local.launcher import start_postgres
from pytest_neon.local.pip_package import find_package
from pytest_neon.local.reaper import Reaper
from pytest_neon.local.shared_server import (
    SharedServer,
    SharedServerUnavailable,
    ensure_shared_server,
)
from pytest_neon.local.transport import in_process_session
from pytest_neon.probe import wal_inspector_available
from pytest_neon.redact import redact, register_secret

log = logging.getLogger("pytest_neon.local")


def local_postgres_available(postgres_url: str | None, source: str = "auto") -> tuple[bool, str]:
    """Whether the local backend can get a PostgreSQL, and a one-line reason."""
    if postgres_url:
        try:
            check_postgres_url(postgres_url)
        except Exception as exc:
            return False, str(exc)
        return True, f"PostgreSQL at {redact(postgres_url)}"
    bindir = find_pg_bindir() if source in ("auto", "system") else None
    if bindir is not None:
        return True, f"PostgreSQL binaries in {bindir}"
    if source == "system":
        return False, "no PostgreSQL server binaries found"
    package = find_package()
    if package is None:
        return False, "no PostgreSQL server binaries and no PostgreSQL package (local extra)"
    return True, package.label


@dataclass(frozen=True)
class KeptServer:
    """Where the kept local PostgreSQL lives and how long it waits unused."""

    root: Path
    idle_timeout: int


@dataclass
class LocalBackend:
    """A running emulator (and the throwaway PostgreSQL it owns, if any)."""

    emulator: Emulator
    postgres: RunningPostgres | None
    description: str
    inspector_url: str | None = None
    reaper: Reaper | None = None
    shared: SharedServer | None = None

    @property
    def cache_url(self) -> str | None:
        """The kept server's superuser DSN (no password), where migrations are cached."""
        return self.shared.url if self.shared is not None else None

    @property
    def api_host(self) -> str:
        """The emulator's API base URL."""
        return self.emulator.api_host

    @property
    def project_id(self) -> str:
        """The emulated project."""
        return self.emulator.project_id

    def session(self) -> requests.Session:
        """An HTTP session for this process's client that calls the emulator in-process."""
        return in_process_session(self.api_host, self.emulator.api)

    @property
    def api_key(self) -> str:
        """The emulator's API key (random per run)."""
        return self.emulator.api_key or ""

    @classmethod
    def start(
        cls,
        postgres_url: str | None = None,
        source: str = "auto",
        *,
        leftovers: Sequence[Path] = (),
        kept: KeptServer | None = None,
    ) -> LocalBackend:
        """Start the emulator over ``postgres_url``, the kept server (``kept``), or a new
        throwaway cluster.

        ``source`` picks where the server's binaries come from (see ``start_postgres``).
        ``leftovers``: more paths the watchdog removes if this process is killed.
        """
        postgres: RunningPostgres | None = None
        shared: SharedServer | None = None
        if postgres_url:
            check_postgres_url(postgres_url)
            url, description = postgres_url, f"PostgreSQL at {redact(postgres_url)}"
        else:
            fallback = ""
            if kept is not None:
                try:
                    shared = _kept_server(kept, source)
                except SharedServerUnavailable as exc:
                    fallback = f"; not kept: {exc.message}"
            if shared is not None:
                url, description = shared.url, shared.description
            else:
                postgres = start_postgres(prefer=source)
                url = postgres.url
                description = f"throwaway cluster ({postgres.source}){fallback}"
        api_key = secrets.token_urlsafe(24)
        register_secret(api_key)
        client_address = ("127.0.0.1", shared.port) if shared is not None else None
        try:
            emulator = Emulator(
                url,
                api_key=api_key,
                client_address=client_address,
                tablespace=shared.tablespace if shared is not None else None,
            )
            emulator.start()
        except BaseException:
            if postgres is not None:
                postgres.stop()
            raise
        # pg_walinspect lets the plugin tell which database a WAL record touched; it is
        # installed on a throwaway cluster and used on a given server if already there.
        ours = postgres is not None or shared is not None
        inspector = url if wal_inspector_available(url, install=ours) else None
        backend = cls(emulator, postgres, description, inspector, shared=shared)
        # after a kill -9 of this process, a watchdog cleans up what it would have
        plan = postgres.cleanup_plan() if postgres is not None else None
        if plan is None:
            plan = {"kind": "project", "url": url, "project_id": emulator.project_id}
        plan["leftovers"] = [str(path) for path in leftovers]
        try:
            backend.reaper = Reaper(plan)
        except OSError as exc:  # a safety net only: the run itself still cleans up
            log.warning("pytest-neon: no cleanup watchdog for a killed run: %s", exc)
        return backend

    def stop(self) -> None:
        """Stop serving; drop the run's databases from a given server, or remove the cluster."""
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


def _kept_server(kept: KeptServer, source: str) -> SharedServer:
    """The kept server, running, with what dead runs left on it dropped."""
    from pytest_neon.local.dead_runs import drop_dead_projects

    shared = ensure_shared_server(kept.root, source=source, idle_timeout=kept.idle_timeout)
    try:
        drop_dead_projects(shared.url)
    except Exception as exc:  # the watchdog tries again later
        log.debug("could not drop the projects of dead runs: %s", exc)
    return shared
