"""What the plugin knows about the current pytest process, kept on ``config.stash``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from pytest_neon.branches import NeonRun
from pytest_neon.config import Settings

if TYPE_CHECKING:
    from pytest_neon.local.backend import LocalBackend


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
    stop_reason: str | None = None  # the run stops after the current test, saying this
    parent_id: str | None = None  # the parent branch, from the xdist controller
    replaced_env: bool = False  # the env var had a value before the run
    module_counter: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    _env: pytest.MonkeyPatch = field(default_factory=pytest.MonkeyPatch, repr=False)

    def point_env_at(self, value: str) -> None:
        """Set the configured env var, remembering the value it had before the run."""
        self._env.setenv(self.settings.env_var, value)

    def restore_env(self) -> None:
        """Put the configured env var back as it was before the run."""
        self._env.undo()


@contextmanager
def env_var(name: str, value: str) -> Iterator[None]:
    """Set ``name`` to ``value`` for the duration of the block, then restore it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(name, value)
        yield
