"""What the plugin knows about the current pytest process, kept on ``config.stash``."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_neon.config import Settings
from pytest_neon.worker_count import WorkerBranches

if TYPE_CHECKING:
    from pytest_neon.local.backend import LocalBackend
    from pytest_neon.local.lazy_start import Reservation
    from pytest_neon.migrations import Migrations
    from pytest_neon.neon_session import NeonSession


class Role(enum.Enum):
    """What this pytest process is in the run."""

    STANDALONE = "standalone"  # a run without xdist: it runs the tests
    CONTROLLER = "controller"  # xdist's controller: hands the run to workers, runs no test
    WORKER = "worker"  # an xdist worker


class Backend(enum.Enum):
    """Where branches come from."""

    NEON = "neon"
    LOCAL = "local"  # the embedded emulator over a local PostgreSQL
    NONE = "none"  # nowhere: database tests skip


class PluginState:
    """The plugin's view of one pytest process (controller, worker or a plain run).

    Attributes not given to the constructor start at the class's values."""

    backend: Backend = Backend.NONE
    backend_reason: str = ""
    unavailable: str | None = None  # why database tests skip
    startup_error: str | None = None  # why database tests error (a worker's failed start)
    session: NeonSession | None = None
    migrations: Migrations | None = None
    local: LocalBackend | None = None
    # the kept server's branch, promised in the env var and made when a test needs it
    reservation: Reservation | None = None
    # why there can be no kept server here (found as the run tried to start it)
    not_kept: str | None = None
    migration_failed: str | None = None
    stop_reason: str | None = None  # the run stops after the current test, saying this
    parent_id: str | None = None  # the parent branch, from the xdist controller
    reserved: dict[str, str] | None = None  # an xdist worker: branches its controller made
    turns: WorkerBranches | None = None  # branches per worker, and why (for the header)
    module_counter: int = 0

    def __init__(
        self,
        settings: Settings,
        run_id: str,
        role: Role,
        *,
        replaced_env: bool = False,
        workers: int = 1,
        project_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.run_id = run_id
        self.role = role
        self.replaced_env = replaced_env  # the env var had a value before the run
        self.workers = workers  # processes that run tests (xdist workers, else this one)
        self.project_dir = project_dir  # pytest's rootdir
        # called with the session once there is one (integrations' reset listeners)
        self.when_ready: list[Callable[[NeonSession], None]] = []
        self.summary: dict[str, Any] = {}
        self._env = pytest.MonkeyPatch()

    def point_env_at(self, value: str) -> None:
        """Set the configured env var, remembering the value it had before the run."""
        self._env.setenv(self.settings.env_var, value)

    def restore_env(self) -> None:
        """Put the configured env var back as it was before the run."""
        self._env.undo()


#: the plugin's state of this process, on ``config.stash``
STATE = pytest.StashKey[PluginState]()


@contextmanager
def env_var(name: str, value: str) -> Iterator[None]:
    """Set ``name`` to ``value`` for the duration of the block, then restore it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(name, value)
        yield
