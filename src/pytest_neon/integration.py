"""What integrations build on: ``pytest_neon.contrib`` uses only this, and so may you.

A fixture of an integration gets this process's :class:`~pytest_neon.neon_session.NeonSession`
and a worker branch in the migrated state with :func:`checkout`; a test that may have
written starts its write check with :func:`write_start` and sends it with
:func:`finish_test`; an integration that knows its test wrote (or rolled back) says so with
:func:`mark_written` (or :func:`forget_rolled_back_work`); pooled connections are dropped
after resets with :func:`add_reset_listener`. :data:`CHECKOUT_FIRST` is the fixture every
test on the worker branch sets up first; an integration may override it (same name) with
its own that calls :func:`on_clean_branch`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NoReturn

import pytest

from pytest_neon.errors import NeonBranchGoneError, NeonError, api_unavailable
from pytest_neon.failed_tests import note_checkout
from pytest_neon.neon_branch import NeonBranch, sqlalchemy_url
from pytest_neon.plugin_state import STATE, PluginState, env_var

if TYPE_CHECKING:
    from pytest_neon.neon_session import NeonSession

__all__ = [
    "CHECKOUT_FIRST",
    "MIGRATED_STATE",
    "add_reset_listener",
    "checkout",
    "checkout_first",
    "current_session",
    "fail_on_neon_error",
    "finish_test",
    "forget_rolled_back_work",
    "mark_written",
    "on_clean_branch",
    "plugin_state",
    "sqlalchemy_url",
    "uses_worker_branch",
    "when_session_ready",
    "write_start",
]

#: the session fixture that runs the migrations once per run and brings this process's
#: branches to their result (it returns the id of the branch resets restore from): request
#: it by this name from a fixture that needs the migrated state
MIGRATED_STATE = "_neon_source"
#: the fixture every test on the worker branch sets up first (see :func:`checkout_first`)
CHECKOUT_FIRST = "_neon_checkout_first"
_WRITE_START = pytest.StashKey[tuple[str | None]]()


def plugin_state(config: pytest.Config) -> PluginState:
    """The plugin's state of this process; skips the calling test when it did not start."""
    __tracebackhide__ = True
    state = config.stash.get(STATE, None)
    if state is None:
        pytest.skip("pytest-neon did not start (pytest --help or --version?)")
    return state


def current_session(config: pytest.Config) -> NeonSession:
    """This process's ``NeonSession``; skips or fails the calling test when there is none
    (no backend, a worker whose branch could not be made, failed migrations)."""
    __tracebackhide__ = True
    state = plugin_state(config)
    if state.reservation is not None and state.session is None:
        from pytest_neon.startup import start_deferred

        start_deferred(state)
    if state.unavailable:
        pytest.skip(state.unavailable)
    if state.startup_error:
        pytest.fail(
            f"pytest-neon could not create this worker's branch: {state.startup_error}",
            pytrace=False,
        )
    if state.migration_failed:
        pytest.fail(state.migration_failed, pytrace=False)
    if state.session is None:
        pytest.skip("pytest-neon: no branch for this process")
    return state.session


def fail_on_neon_error(config: pytest.Config, what: str, exc: NeonError) -> NoReturn:
    """Fail the test that needed ``what``; stop the run when no later test could have it.

    An unavailable API or a branch deleted under the run would fail every later test
    after the same wait: the run stops after this one, with one error.
    """
    __tracebackhide__ = True
    if api_unavailable(exc):
        plugin_state(config).stop_reason = "pytest-neon: stopping: the Neon API is unavailable"
    elif isinstance(exc, NeonBranchGoneError):
        plugin_state(config).stop_reason = "pytest-neon: stopping: a branch this run uses is gone"
    # One line: the NeonError under it says the same, with no more to act on.
    raise pytest.fail.Exception(f"pytest-neon: {what}: {exc}", pytrace=False) from None


def checkout(config: pytest.Config) -> tuple[NeonSession, NeonBranch]:
    """The session and a worker branch in the migrated state.

    Waits for (or makes) the reset a writing test left; on a Neon error the calling test
    fails, and the run stops when no later test could succeed either.
    """
    __tracebackhide__ = True
    session = current_session(config)
    try:
        return session, session.checkout()
    except NeonError as exc:
        fail_on_neon_error(config, "could not reset branch", exc)


def uses_worker_branch(item: pytest.Item) -> bool:
    """Whether ``item`` runs on the worker branch (a pytest-neon fixture in its closure)."""
    names = getattr(item, "fixturenames", ())
    return MIGRATED_STATE in names and "neon_branch_shared" not in names


def checkout_first(item: pytest.Item) -> None:
    """Make the worker branch's checkout the first fixture ``item`` sets up.

    Fixtures of any scope that the test sets up after it (a module fixture reading
    through the application's engine) then see the branch in the migrated state, never
    the rows a previous test left for a reset still under way.
    """
    names = getattr(item, "fixturenames", None)
    if not isinstance(names, list) or names[:1] == [CHECKOUT_FIRST]:
        return
    if CHECKOUT_FIRST in names:
        names.remove(CHECKOUT_FIRST)
    names.insert(0, CHECKOUT_FIRST)


def on_clean_branch(request: pytest.FixtureRequest, *, check_writes: bool) -> Iterator[None]:
    """The body of :data:`CHECKOUT_FIRST` (integrations override that fixture with it).

    Checks the worker branch out in the migrated state and points the env var at it for
    the rest of the test; ``check_writes``: the test's write check starts now.
    """
    __tracebackhide__ = True
    request.getfixturevalue(MIGRATED_STATE)
    session, branch = checkout(request.config)
    if check_writes:
        request.node.stash[_WRITE_START] = (session.pool.write_position(),)
        note_checkout(request.node, branch)  # kept if the test fails (--neon-keep-failed)
    with env_var(session.settings.env_var, branch.connection_string):
        yield


def write_start(request: pytest.FixtureRequest, session: NeonSession) -> str | None:
    """Where the test's write check starts: read by :data:`CHECKOUT_FIRST`, or now."""
    kept: tuple[str | None] | None = request.node.stash.get(_WRITE_START, None)
    if kept is not None:
        del request.node.stash[_WRITE_START]
        return kept[0]
    return session.pool.write_position()


def finish_test(request: pytest.FixtureRequest, session: NeonSession, before: str | None) -> None:
    """After a test that may have written: send its write check (the reset follows if it
    wrote). The ``neon_reset`` marker and ``neon_always_reset`` force the reset."""
    marked = request.node.get_closest_marker("neon_reset") is not None
    session.pool.finish_test(before, force=session.settings.always_reset or marked)


def mark_written(session: NeonSession) -> None:
    """The last test wrote: its branch is reset (in the background) before it is used again."""
    session.pool.mark_dirty()


def forget_rolled_back_work(session: NeonSession) -> None:
    """The last test's work was rolled back: no reset, but its WAL must not be taken for
    the next test's writes."""
    session.pool.forget_position()


def when_session_ready(config: pytest.Config, callback: Callable[[NeonSession], None]) -> None:
    """Call ``callback(session)`` with this process's ``NeonSession``: now if there is one,
    else once it is made (a plain run on the kept local server makes it when a test first
    needs it; a process with no backend never calls it)."""
    state = config.stash.get(STATE, None)
    if state is None:
        return
    if state.session is not None:
        callback(state.session)
    else:
        state.when_ready.append(callback)


def add_reset_listener(session: NeonSession, listener: Callable[[NeonBranch], None]) -> None:
    """Call ``listener(branch)`` after every reset of a worker branch (on the thread that
    hands the branch out), e.g. to drop pooled connections the reset cut."""
    session.pool.add_reset_listener(listener)
