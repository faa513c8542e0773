"""``--neon-keep-failed`` on the pytest side: which tests qualify, the failure's report
section, the summary's list. The copy itself is :mod:`pytest_neon.keep_failed`'s.

A test qualifies when its writes are checked (``neon_branch_readwrite``, a Django test
that commits, SQLAlchemy's fixtures on the worker branch): its branch is noted at
checkout. Its data is kept when its setup or call fails, as the report is made: before
its teardown, so before any reset. Locally the copy is made once the teardown is over
(copying a database ends its sessions, which fixtures may still use as they tear down).
A failing teardown keeps nothing (it ran after the data that failed the test).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pytest_neon.neon_branch import NeonBranch
from pytest_neon.plugin_state import STATE, Backend, PluginState
from pytest_neon.summary import merge_summary

if TYPE_CHECKING:
    from pytest_neon.keep_failed import FailureKeeper, Kept, LocalPlace

SECTION = "pytest-neon: the failing test's data"
_BRANCH = pytest.StashKey[NeonBranch]()
_KEEPER: pytest.StashKey[FailureKeeper] = pytest.StashKey()
_PLANNED: pytest.StashKey[Kept] = pytest.StashKey()


def note_checkout(item: pytest.Item, branch: NeonBranch) -> None:
    """``item`` runs (and may write) on ``branch``: keep it if the test fails."""
    state = item.config.stash.get(STATE, None)
    if state is not None and state.settings.keep_failed:
        item.stash[_BRANCH] = branch


def after_report(item: pytest.Item, report: pytest.TestReport) -> None:
    """A failed setup or call of a noted test: keep its data; say so in its report. (A
    local copy is made once the test's teardown is over: see ``FailureKeeper.finish``.)"""
    if report.when == "teardown":
        _finish_local_copy(item)
        return
    if not report.failed:
        return
    branch = item.stash.get(_BRANCH, None)
    state = item.config.stash.get(STATE, None)
    if branch is None or state is None or state.session is None:
        return
    del item.stash[_BRANCH]  # once per test
    keeper = item.config.stash.get(_KEEPER, None)
    if keeper is None:
        from pytest_neon.keep_failed import FailureKeeper  # (only once a test failed)

        keeper = FailureKeeper(
            run_id=state.run_id,
            cap=state.settings.keep_failed,
            expiry=state.settings.keep_failed_expiry,
            local=_local_place(state),
        )
        item.config.stash[_KEEPER] = keeper
    kept = keeper.keep(item.nodeid, branch, state.session.ops)
    report.sections.append((SECTION, "\n".join(kept.lines)))
    if kept.make is not None:
        item.stash[_PLANNED] = kept
    elif kept.kept:
        merge_summary(state.summary, {"kept_failed": [kept.summary_line]})
    elif keeper.capped:
        capped = {"kept_failed_capped": 1, "kept_failed_cap": str(keeper.quota.cap)}
        merge_summary(state.summary, capped)


def _finish_local_copy(item: pytest.Item) -> None:
    """After the teardown of a failed test on the local backend: make its copy (which
    ends the sessions on its database: its branch is reset before the next test)."""
    planned = item.stash.get(_PLANNED, None)
    keeper = item.config.stash.get(_KEEPER, None)
    state = item.config.stash.get(STATE, None)
    if planned is None or keeper is None or state is None:
        return
    del item.stash[_PLANNED]
    done = keeper.finish(planned)
    if state.session is not None:
        from pytest_neon.integration import mark_written

        mark_written(state.session)
    line = done.summary_line if done.kept else f"{done.test}: {' '.join(done.lines)}"
    merge_summary(state.summary, {"kept_failed": [line]})


def _local_place(state: PluginState) -> LocalPlace | None:
    """Where the local backend keeps a database (``None`` on Neon)."""
    from pytest_neon.keep_failed import LocalPlace

    if state.backend is not Backend.LOCAL:
        return None
    settings = state.settings
    test_password = f"the test's own, as in {settings.env_var} while it ran"
    given = settings.local_postgres_url
    if given:
        return LocalPlace("given", given, settings.describe("local_postgres_url"))
    local = state.local
    if local is not None:
        if local.shared is not None:
            return LocalPlace("kept", local.shared.url)
        if local.postgres is not None:
            return LocalPlace("throwaway", local.postgres.url, test_password)
    from pytest_neon.xdist import read_handoff  # an xdist worker: the controller's server

    handoff = read_handoff()
    if handoff is not None and handoff.cache_url:
        return LocalPlace("kept", handoff.cache_url)
    if handoff is not None and handoff.inspector_url:
        return LocalPlace("throwaway", handoff.inspector_url, test_password)
    return LocalPlace("unknown", "")
