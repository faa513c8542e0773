# mypy: disable-error-code="import-untyped"
"""Django integration: pytest-django runs its whole suite on the Neon branch.

Enable it with one line in the root ``conftest.py``::

    pytest_plugins = ["pytest_neon.contrib.django"]

(or ``-p pytest_neon.contrib.django`` in ``addopts``). It needs pytest-django
(``pip install "pytest-neon[django]"``).

What it does, per test process (a plain run or each xdist worker):

- ``settings.DATABASES`` entries named by the ini key ``neon_django_databases``
  (default ``default``) are rewritten from the branch's connection string, with
  ``TEST["NAME"]`` set to the branch's own database: Django never creates ``test_<name>``.
- ``neon_apply_migrations`` runs ``migrate`` once per run on the migration branch
  (ini ``neon_django_migrate = false`` turns it off; a conftest override replaces it).
  While any override runs, Django points at the migration branch and may use the database.
- ``db`` keeps rolling back; a test with committed data (``transactional_db``,
  ``django_db(transaction=True)``, ``live_server``, Django's ``TransactionTestCase``) is
  not flushed: the branch is reset after it instead.

PYTEST_DONT_REWRITE (a plugin module that ``conftest.py`` may also import from).
"""

from __future__ import annotations

import importlib.util
import unittest
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_neon.config import to_bool
from pytest_neon.contrib import _django_fixtures
from pytest_neon.contrib import _pytest_django as private
from pytest_neon.contrib._django_databases import (
    ALL_ALIASES,
    DJANGO_STATE,
    INI_DATABASES,
    DjangoState,
    close_connections,
    database_settings,
    django_state,
    point_databases,
)
from pytest_neon.contrib._django_fixtures import migration_fingerprint
from pytest_neon.errors import NeonConfigError
from pytest_neon.ini import add_ini, read_ini, read_list
from pytest_neon.integration import checkout_first, current_session
from pytest_neon.neon_branch import NeonBranch

if TYPE_CHECKING:
    from pytest_django import DjangoDbBlocker

__all__ = ["database_settings", "migration_fingerprint", "point_databases"]

INI_MIGRATE = "neon_django_migrate"
_FIXTURES_PLUGIN = "pytest_neon_django_fixtures"
_MIGRATIONS_PLUGIN = "pytest_neon_django_migrations"
_INSTALL = 'pip install "pytest-neon[django]"'


# -- hooks -----------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """The integration's ini keys."""
    add_ini(
        parser,
        INI_DATABASES,
        "pytest-neon: DATABASES aliases to point at the Neon branch (__all__ = every alias)",
        "args",
        default=["default"],
    )
    add_ini(
        parser,
        INI_MIGRATE,
        "pytest-neon: run Django's migrate once per run on the migration branch",
        "bool",
        default=True,
    )


def pytest_configure(config: pytest.Config) -> None:
    """Check the requirements and register the fixtures (after pytest-django's)."""
    if config.option.help or config.option.version:
        return
    plugins = config.pluginmanager
    if importlib.util.find_spec("django") is None or not (
        plugins.hasplugin("django") or plugins.hasplugin("pytest_django.plugin")  # entry point, -p
    ):
        raise pytest.UsageError(
            f"pytest_neon.contrib.django needs Django and pytest-django: {_INSTALL}"
        )
    if not (plugins.hasplugin("neon") or plugins.hasplugin("pytest_neon.plugin")):
        raise pytest.UsageError(
            "pytest_neon.contrib.django needs the pytest-neon plugin, which is disabled "
            "(-p no:neon)"
        )
    try:
        migrate = to_bool(read_ini(config, INI_MIGRATE), f"ini key {INI_MIGRATE}")
    except NeonConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[DJANGO_STATE] = DjangoState(
        requested=tuple(read_list(config, INI_DATABASES, "args")) or ("default",),
        migrate=migrate,
    )
    if not config.pluginmanager.has_plugin(_FIXTURES_PLUGIN):
        # Registered now, so that these fixtures override pytest-django's and pytest-neon's
        # whichever way this module was loaded (-p loads it before both).
        config.pluginmanager.register(_django_fixtures, _FIXTURES_PLUGIN)
    if not config.pluginmanager.has_plugin(_MIGRATIONS_PLUGIN):
        config.pluginmanager.register(MigrationsOnTheBranch(), _MIGRATIONS_PLUGIN)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which aliases follow the branch, and what the migration step does."""
    state = config.stash.get(DJANGO_STATE, None)
    if state is None:
        return []
    if not state.migrate:
        migrations = "no migrations (neon_django_migrate = false)"
    elif config.getvalue("nomigrations"):
        migrations = "tables from models once per run (--no-migrations)"
    else:
        migrations = "migrate once per run"
    aliases = ", ".join(state.requested)
    mirrors = _mirrors(state)
    if mirrors:
        aliases += f" ({', '.join(mirrors)}: test mirror{'s' if len(mirrors) > 1 else ''})"
    line = f"neon-django: DATABASES {aliases} on the branch; {migrations}"
    if config.getvalue("reuse_db") or config.getvalue("create_db"):
        line += "; --reuse-db/--create-db: no effect, every run starts from a new branch"
    return [line]


def _mirrors(state: DjangoState) -> list[str]:
    """The aliases that follow the requested ones as their test mirrors."""
    if not private.settings_configured() or ALL_ALIASES in state.requested:
        return []
    try:
        return [a for a in state.aliases() if a not in state.requested]
    except pytest.UsageError:
        return []  # an unknown alias: the run stops with that error when it starts


#: autouse fixtures that only Django's ``TestCase`` classes need
_UNITTEST_FIXTURES = ("_neon_django_unittest_class", "_neon_django_unittest")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``django_db`` check the branch out before any other fixture too;
    other tests than ``unittest`` cases skip the fixtures only those need (each fixture
    costs every test its setup)."""
    for item in items:
        cls = getattr(item, "cls", None)
        if cls is not None and issubclass(cls, unittest.TestCase):
            continue  # Django's test cases: checked out before setUpClass instead
        names = getattr(item, "fixturenames", None)
        if isinstance(names, list):
            names[:] = [name for name in names if name not in _UNITTEST_FIXTURES]
        if item.get_closest_marker("django_db") is not None:
            checkout_first(item)


class MigrationsOnTheBranch:
    """Gives ``neon_apply_migrations`` (ours or the user's) Django on the migration branch.

    While it runs, database access is allowed and the branch aliases point at
    ``neon_migration_branch``; afterwards the connections are closed (the migration
    branch is the source every reset copies) and the aliases point at the worker branch.
    A plugin of its own, unregistered once the run's tests have the migrated state
    (:func:`migrations_done`): its hook would otherwise wrap every fixture setup.
    """

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> Generator[None, object, object]:
        """Django on the migration branch while the migrations run (see the class)."""
        name = fixturedef.argname
        if name not in ("neon_apply_migrations", "neon_migration_branch"):
            return (yield)
        if not private.settings_configured():
            return (yield)
        state = django_state(request.config)
        if name == "neon_migration_branch":
            branch = yield
            if state.migrating and isinstance(branch, NeonBranch):
                state.point(branch.connection_string)
            return branch
        blocker: DjangoDbBlocker = request.getfixturevalue("django_db_blocker")
        state.migrating = True
        try:
            if {"neon_migration_branch", "_neon_migration_branch"} & set(fixturedef.argnames):
                # an argument of the override: set up already, before this hook
                branch = request.getfixturevalue("neon_migration_branch")
                state.point(branch.connection_string)
            with blocker.unblock():
                return (yield)
        finally:
            state.migrating = False
            worker = current_session(request.config).worker_branch
            if worker is not None:
                state.point(worker.connection_string)
            else:  # a process taken for an xdist controller that runs tests (--dist without -n)
                close_connections()


def migrations_done(config: pytest.Config) -> None:
    """The migrated state is there: unregister :class:`MigrationsOnTheBranch`."""
    plugin = config.pluginmanager.get_plugin(_MIGRATIONS_PLUGIN)
    if plugin is not None:
        config.pluginmanager.unregister(plugin)
