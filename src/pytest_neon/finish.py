"""The end of this process's part of the run: branches deleted (or kept and listed), the
local backend stopped, the env var and the run's directory put back in order."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from pytest_neon.config import Settings
from pytest_neon.errors import NeonError
from pytest_neon.plugin_state import PluginState, Role
from pytest_neon.redact import redact
from pytest_neon.summary import merge_summary
from pytest_neon.xdist import HANDOFF_ENV, remove_coordination_dir

#: modules whose presence means code of the run may have connected to the env var itself
DATABASE_DRIVERS = ("psycopg", "psycopg2", "asyncpg", "pg8000")


def driver_loaded() -> bool:
    """Whether code of this process may have connected to the branch on its own (also
    without a pytest-neon fixture)."""
    return any(driver in sys.modules for driver in DATABASE_DRIVERS)


def finish(state: PluginState, say: Callable[[str], None]) -> None:
    """Delete branches, stop the local backend, restore the env var. Safe to call twice.

    ``say`` shows a line to the user (warnings about what could not be cleaned up).
    """

    def warn(text: str) -> None:
        say(redact(text))

    session = state.session
    park = None
    if session is not None:
        session.shutdown()
        local = state.local
        if local is not None and local.reservation is not None and not state.settings.keep_branches:
            park = session.park_plan()  # the project may wait for the next run
            if park is not None and park.fresh and driver_loaded():
                park = park._replace(fresh=False)  # written through the env var, maybe
        if state.settings.keep_branches:
            created = session.ops.created
            if created:
                kept = ", ".join(f"{name} ({bid})" for bid, name in created.items())
                warn(f"pytest-neon: kept branches in project {session.ops.project_id}: {kept}")
        elif state.local is None or not state.local.hands_over:
            try:
                failures = session.delete_branches(whole_run=state.role is not Role.WORKER)
            except NeonError as exc:
                failures = [("(cleanup)", str(exc))]
            for branch_id, error in failures:
                warn(f"pytest-neon: WARNING: could not delete branch {branch_id}: {error}")
            if failures:
                warn(left_behind(state.settings))
        merge_summary(state.summary, session.summary())
        session.close_client()
        state.session = None
        state.migrations = None
    if state.local is not None:
        local, state.local = state.local, None
        try:
            local.stop(park)
        except Exception as exc:
            warn(f"pytest-neon: WARNING: could not stop the local backend: {exc}")
    elif state.reservation is not None and state.reservation.claim is not None:
        claim = state.reservation.claim  # no test needed the parked project
        fresh = claim.parked.fresh and not driver_loaded()
        claim.park_again(claim.parked._replace(fresh=fresh, locked_out=False))
    if state.role is not Role.WORKER:
        remove_coordination_dir(state.run_id)
        os.environ.pop(HANDOFF_ENV, None)  # it may hold the local backend's credentials
    state.restore_env()


def left_behind(settings: Settings) -> str:
    """What happens to branches that could not be deleted, and what to do."""
    head = "pytest-neon: branches left behind"
    if settings.branch_expiry:
        later = "; the next run sweeps them once expired" if settings.sweep_after else ""
        return (
            f"{head} expire {settings.branch_expiry} s after their creation or last reset "
            f"(--neon-branch-expiry){later}"
        )
    if settings.sweep_after:
        return (
            f"{head} have no expiry: the next run sweeps them after {settings.sweep_after} s "
            "(--neon-sweep-after), or delete them in the Neon console"
        )
    return f"{head} have no expiry: delete them in the Neon console"
