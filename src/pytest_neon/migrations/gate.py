"""The migration gate: exactly one process of a run migrates, the others wait for it.

A file lock and a state file in the run's shared directory; they hold branch ids and the
error message of failed migrations, never secrets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

from pytest_neon.file_lock import exclusive
from pytest_neon.xdist import coordination_dir


class MigrationState(NamedTuple):
    """The outcome of the run's migrations, as the first worker recorded it."""

    source_branch_id: str | None
    error: str | None = None
    expires: bool = False  # the source is the run's migration branch (it has an expiry)


class MigrationGate:
    """Lets exactly one process of a run apply migrations while the others wait."""

    def __init__(self, run_id: str) -> None:
        directory = coordination_dir(run_id)
        self._lock_path = directory / "migrations.lock"
        self._state = directory / "migrations.json"

    @contextmanager
    def hold(self) -> Iterator[MigrationState | None]:
        """Hold the lock; yield the recorded state, or ``None`` when nobody migrated yet."""
        with exclusive(self._lock_path):
            yield self._read()

    def _read(self) -> MigrationState | None:
        try:
            data = json.loads(self._state.read_text())
        except (OSError, ValueError):
            return None
        return MigrationState(
            data.get("source_branch_id"), data.get("error"), bool(data.get("expires"))
        )

    def record(self, state: MigrationState) -> None:
        """Write the outcome (call while holding the lock)."""
        tmp = self._state.with_suffix(".tmp")
        tmp.write_text(json.dumps(state._asdict()))
        tmp.replace(self._state)
