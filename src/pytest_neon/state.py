"""What the plugin knows about the current pytest process, kept on ``config.stash``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_neon.branches import NeonRun
from pytest_neon.config import Settings

if TYPE_CHECKING:
    from pytest_neon.local.backend import LocalBackend

_UNSET = object()


@dataclass
class PluginState:
    """The plugin's view of one pytest process (controller, worker or a plain run)."""

    settings: Settings
    run_id: str
    role: str  # "standalone", "controller" or "worker"
    backend: str = "none"  # "neon", "local" or "none"
    backend_reason: str = ""
    unavailable: str | None = None  # why database tests skip
    startup_error: str | None = None  # why database tests error (a worker's failed start)
    run: NeonRun | None = None
    local: LocalBackend | None = None
    migration_failed: str | None = None
    module_counter: int = 0
    saved_env: object = _UNSET
    summary: dict[str, Any] = field(default_factory=dict)

    def point_env_at(self, value: str) -> None:
        """Set the configured env var, remembering the value it had before the run."""
        name = self.settings.env_var
        if self.saved_env is _UNSET:
            self.saved_env = os.environ.get(name)
        os.environ[name] = value

    def restore_env(self) -> None:
        """Put the configured env var back as it was before the run."""
        if self.saved_env is _UNSET:
            return
        name = self.settings.env_var
        if self.saved_env is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = str(self.saved_env)
        self.saved_env = _UNSET


@contextmanager
def env_var(name: str, value: str) -> Iterator[None]:
    """Set ``name`` to ``value`` for the duration of the block, then restore it."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
