"""pytest11 entry point of pytest-neon: options, start-up, report header, summary, cleanup.

Thin: each hook hands over to the module that does the work (``startup``, ``header``,
``finish``, ``summary``, the fixtures in ``fixtures``).

PYTEST_DONT_REWRITE: loaded as a library (see ``pytest_neon/__init__.py``).
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import Generator
from types import FrameType
from typing import Any

import pytest

from pytest_neon import clock  # noqa: F401  (its anchor taken before any test moves time)
from pytest_neon.config import OPTIONS, Settings, resolve
from pytest_neon.errors import NeonError
from pytest_neon.failed_tests import after_report
from pytest_neon.finish import driver_loaded, finish
from pytest_neon.fixtures import (
    _neon_checkout_first,
    _neon_migration_branch,
    _neon_source,
    _neon_test_branch,
    neon_apply_migrations,
    neon_branch,
    neon_branch_readonly,
    neon_branch_readwrite,
    neon_branch_shared,
    neon_connection,
    neon_connection_psycopg,
    neon_engine,
    neon_migration_branch,
    neon_migration_fingerprint,
)
from pytest_neon.header import header_lines
from pytest_neon.ini import Kind, add_ini, read_ini
from pytest_neon.integration import checkout_first, uses_worker_branch
from pytest_neon.logs import route_to_pytest
from pytest_neon.plugin_state import STATE, PluginState, Role
from pytest_neon.redact import redact
from pytest_neon.startup import create_worker_branch, start_deferred, start_process
from pytest_neon.summary import merge_summary, summary_lines

__all__ = [
    "STATE",
    "_neon_checkout_first",
    "_neon_migration_branch",
    "_neon_source",
    "_neon_test_branch",
    "neon_apply_migrations",
    "neon_branch",
    "neon_branch_readonly",
    "neon_branch_readwrite",
    "neon_branch_shared",
    "neon_connection",
    "neon_connection_psycopg",
    "neon_engine",
    "neon_migration_branch",
    "neon_migration_fingerprint",
]

_FALSE_WORDS = ("false", "0", "no", "off")
API_KEY_IN_INI = (
    "pytest-neon: the API key is read from the ini key neon_api_key (as pytest-neon 3.x "
    "did), but a key does not belong in a file under version control: set NEON_API_KEY "
    "in the environment (a CI secret) and remove neon_api_key"
)
_INI_KINDS: dict[str, Kind] = {"bool": "bool", "int": "int", "branches": "int", "float": "float"}


#: what the env var holds while ``--neon-local-stop`` imports conftest.py (no database)
LOCAL_STOP_PLACEHOLDER = "postgresql://pytest-neon-local-stop.invalid/no-database-here"


class _LocalStopFirst:
    """``--neon-local-stop`` acts in ``pytest_cmdline_main``, after pytest imported
    conftest.py (and pytest-django the settings): code that reads the env var as it is
    imported (``env.db("DATABASE_URL")``) finds a connection string that reaches no
    database, as an xdist controller's does, instead of failing the command."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_load_initial_conftests(
        self, early_config: pytest.Config
    ) -> Generator[None, None, None]:
        if getattr(early_config.known_args_namespace, "neon_local_stop", False):
            try:
                env_var = _settings(early_config).env_var
            except NeonError:  # (the command says what is wrong with the settings)
                env_var = "DATABASE_URL"
            os.environ.setdefault(env_var, LOCAL_STOP_PLACEHOLDER)
        yield


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """Register every row of the settings table as a flag and (mostly) an ini key."""
    pluginmanager.register(_LocalStopFirst(), "pytest_neon_local_stop_first")
    group = parser.getgroup("neon", "pytest-neon: a Neon branch (or local emulator) per test")
    for opt in OPTIONS:
        dest = f"neon_{opt.name}"
        if opt.kind == "bool":
            group.addoption(
                opt.flag,
                action="store_const",
                const=True,
                default=None,
                dest=dest,
                help=f"{opt.help} [env {opt.env}]",
            )
            # --flag=false / --flag=true (argparse matches the whole word first)
            for const, words in ((True, ("true", "1", "yes", "on")), (False, _FALSE_WORDS)):
                group.addoption(
                    *(f"{opt.flag}={word}" for word in words),
                    action="store_const",
                    const=const,
                    dest=dest,
                    help=argparse.SUPPRESS,
                )
        elif opt.kind == "count":  # --flag alone, or --flag=N (as pytest-cov's --cov[=PATH])
            group.addoption(
                opt.flag,
                nargs="?",
                const="true",
                default=None,
                dest=dest,
                metavar="N",
                help=f"{opt.help} [env {opt.env}]",
            )
        else:
            group.addoption(
                opt.flag,
                default=None,
                dest=dest,
                metavar=opt.name.upper(),
                help=f"{opt.help} [env {opt.env}]",
            )
        if opt.ini:
            kind = _INI_KINDS.get(opt.kind, "string")
            add_ini(parser, opt.ini, f"{opt.help} (pytest-neon)", kind)
    group.addoption(
        "--neon-local-stop",
        action="store_true",
        default=False,
        dest="neon_local_stop",
        help="Stop the kept local PostgreSQL, remove its data, and exit.",
    )


def _settings(config: pytest.Config) -> Settings:
    namespace = config.known_args_namespace
    cli = {opt.name: getattr(namespace, f"neon_{opt.name}", None) for opt in OPTIONS}
    ini = {opt.name: read_ini(config, opt.ini) if opt.ini else None for opt in OPTIONS}
    return resolve(cli, os.environ, ini)


def _is_xdist_controller(config: pytest.Config) -> bool:
    if not config.pluginmanager.hasplugin("xdist"):
        return False
    namespace = config.known_args_namespace
    n = getattr(namespace, "numprocesses", None)
    dist = getattr(namespace, "dist", "no")
    tx = getattr(namespace, "tx", None)
    return bool(n) or bool(tx) or dist not in (None, "no")


def _xdist_workers(config: pytest.Config) -> int:
    """How many xdist workers the run asks for (``auto``/``logical``: the CPUs)."""
    n = getattr(config.known_args_namespace, "numprocesses", None)
    if isinstance(n, int):
        return max(1, n)
    if n in ("auto", "logical"):
        try:
            return max(1, int(config.hook.pytest_xdist_auto_num_workers(config=config)))
        except Exception:  # (an older xdist, or a hook that fails this early)
            return os.cpu_count() or 1
    return 1


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Start the run before conftest and test modules import application code.

    The env var then already points at this process's test branch when an application
    builds its engine from ``DATABASE_URL`` at import time.
    """
    namespace = early_config.known_args_namespace
    if getattr(namespace, "help", False) or getattr(namespace, "version", False):
        return
    if getattr(namespace, "neon_local_stop", False):
        return  # pytest_cmdline_main does it, and nothing else
    # Before anything is created: a SIGTERM during start-up cleans up too.
    _install_sigterm_handler()
    # The plugin's (and its emulator's) records reach pytest's log handlers, never the
    # application's; undone last, after the run's cleanup has logged what it did.
    early_config.add_cleanup(route_to_pytest())
    try:
        settings = _settings(early_config)
        if settings.source("api_key") == "ini":
            early_config.issue_config_time_warning(pytest.PytestConfigWarning(API_KEY_IN_INI), 2)
        controller = _is_xdist_controller(early_config)
        state = start_process(
            settings,
            xdist_controller=controller,
            workers=_xdist_workers(early_config) if controller else 1,
            project_dir=early_config.rootpath,
        )
    except NeonError as exc:
        raise pytest.UsageError(str(exc)) from None
    early_config.stash[STATE] = state
    # Runs even when pytest stops before pytest_configure (a bad flag, a broken conftest):
    # unconfigure hooks would not, and the branch would be left behind.
    early_config.add_cleanup(lambda: _finish(state, None))
    try:
        create_worker_branch(state)
    except NeonError as exc:
        if state.role is Role.WORKER:
            state.startup_error = str(exc)
            return
        _finish(state, None)
        raise pytest.UsageError(str(exc)) from None
    except BaseException:
        _finish(state, None)
        raise


def _install_sigterm_handler() -> None:
    """Turn SIGTERM into KeyboardInterrupt so the run's cleanup still happens."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def _interrupt(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, _interrupt)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which backend was chosen and why, the project, and every non-default setting."""
    state = config.stash.get(STATE, None)
    return [] if state is None else header_lines(state, config)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Delete the run's branches (or say where they were kept) and hand counters over."""
    config = session.config
    state = config.stash.get(STATE, None)
    if state is None:
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    try:
        _finish(state, reporter)  # the summary counts the cleanup's calls too
    finally:
        workeroutput = getattr(config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput["pytest_neon"] = state.summary


def _finish(state: PluginState, reporter: Any) -> None:
    def say(text: str) -> None:
        if reporter is not None:
            reporter.write_line(redact(text), yellow=True)

    finish(state, say)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the worker branch check it out before any other fixture is set up."""
    for item in items:
        if uses_worker_branch(item):
            checkout_first(item)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Make the kept server's branch if a test will use it; count the modules that use
    ``neon_branch_shared`` (for the branch-limit message)."""
    state = session.config.stash.get(STATE, None)
    if state is None:
        return
    if (
        state.reservation is not None
        and not session.config.option.collectonly
        and session.items
        and (
            # the application loaded a database driver: it may connect on its own
            driver_loaded() or any(uses_worker_branch(item) for item in session.items)
        )
    ):
        start_deferred(state)  # a test will need the branch: make it now
    if state.session is None:
        return
    modules = {
        item.nodeid.split("::", 1)[0]
        for item in session.items
        if "neon_branch_shared" in getattr(item, "fixturenames", ())
    }
    state.session.note_shared_modules(len(modules))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, Any, Any]:
    """Keep a failing test's data (``--neon-keep-failed``), before its teardown; stop the
    run after a test that found the API unavailable or a branch gone.

    Set as soon as its setup or call is reported, so that pytest tears everything down
    with this test, as it does for ``-x``.
    """
    report = yield
    if isinstance(report, pytest.TestReport):
        after_report(item, report)
    state = item.config.stash.get(STATE, None)
    if state is not None and state.stop_reason and not item.session.shouldfail:
        item.session.shouldfail = state.stop_reason
    return report


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Start the reset the last test called for, and keep the run's branches from expiring
    under a long run (a call every third of it)."""
    state = item.config.stash.get(STATE, None)
    if state is not None and state.session is not None:  # (a controller runs no test)
        state.session.between_tests()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Last resort: clean up when the session never finished normally."""
    state = config.stash.get(STATE, None)
    if state is not None:
        _finish(state, None)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The run summary: branches, resets, API calls, time waiting on Neon."""
    state = config.stash.get(STATE, None)
    if state is None or not state.summary:
        return
    verbose = (config.getoption("verbose") or 0) > 0
    terminalreporter.write_sep("=", "pytest-neon")
    for line in summary_lines(state.summary, verbose=verbose):
        terminalreporter.line(line)  # (write_line would end the last test's line first)


class _XdistHooks:
    """Hooks that exist only when pytest-xdist is installed."""

    @staticmethod
    def pytest_testnodedown(node: Any, error: Any) -> None:
        state = node.config.stash.get(STATE, None)
        output = getattr(node, "workeroutput", None) or {}
        if state is not None and "pytest_neon" in output:
            merge_summary(state.summary, output["pytest_neon"])


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker, and the xdist hooks when xdist is there."""
    config.addinivalue_line(
        "markers",
        "neon_reset: reset the branch after this test even if its WAL position did not move "
        "(writes to unlogged or temporary tables)",
    )
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "pytest_neon_xdist_hooks")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """``--neon-local-stop``: stop the kept local PostgreSQL, remove its data, exit."""
    if not config.getoption("neon_local_stop", False):
        return None
    from pytest_neon.local.shared_server import stop_shared_server
    from pytest_neon.local.user_dirs import shared_server_dir

    try:
        root = shared_server_dir(_settings(config).local_dir)
        removed = stop_shared_server(root)
    except NeonError as exc:
        raise pytest.UsageError(str(exc)) from None
    what = "stopped it and removed" if removed else "nothing to remove:"
    print(f"pytest-neon: kept local PostgreSQL in {root}: {what} {root}")
    return 0
