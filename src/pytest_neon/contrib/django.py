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

import contextlib
import importlib.util
import unittest
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path, PurePath
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import pytest
from psycopg.conninfo import conninfo_to_dict

from pytest_neon.branch import NeonBranch
from pytest_neon.config import to_bool
from pytest_neon.contrib._hashing import hash_files
from pytest_neon.errors import NeonConfigError
from pytest_neon.fixtures import (
    checkout,
    checkout_first,
    current_run,
    finish_test,
    on_clean_branch,
    write_start,
)
from pytest_neon.ini import add_ini, read_ini, read_list

if TYPE_CHECKING:
    from pytest_django import DjangoDbBlocker

    from pytest_neon.branches import NeonRun

__all__ = ["database_settings", "point_databases"]

INI_DATABASES = "neon_django_databases"
INI_MIGRATE = "neon_django_migrate"
POSTGRES_ENGINE = "django.db.backends.postgresql"
ALL_ALIASES = "__all__"
_FIXTURES_PLUGIN = "pytest_neon_django_fixtures"
_INSTALL = 'pip install "pytest-neon[django]"'

# Parameters that send a connection somewhere else than the branch: dropped from OPTIONS
# unless the branch's connection string sets them itself.
_RETARGETING = ("service", "passfile", "hostaddr", "sslmode")
_CONNECTION_KEYS = ("host", "port", "dbname", "user", "password")


def database_settings(dsn: str, current: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A ``DATABASES`` entry for ``dsn``, keeping what else ``current`` sets.

    ``HOST``, ``PORT``, ``NAME``, ``USER``, ``PASSWORD`` and ``TEST["NAME"]`` come from
    the connection string; its other parameters (``sslmode``, ``options``…) go to
    ``OPTIONS``, replacing the same keys. ``OPTIONS`` that would reach another server
    (``service``, ``passfile``, ``hostaddr``, an ``sslmode`` the string does not set) are
    dropped; the rest (``isolation_level``, ``pool``…) are kept. A non-PostgreSQL
    ``ENGINE`` becomes ``django.db.backends.postgresql``.
    """
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    entry = dict(current or {})
    engine = str(entry.get("ENGINE") or "")
    if "postg" not in engine.lower():
        engine = POSTGRES_ENGINE
    options = {k: v for k, v in dict(entry.get("OPTIONS") or {}).items() if k not in _RETARGETING}
    options.update({k: v for k, v in params.items() if k not in _CONNECTION_KEYS})
    name = params.get("dbname", "")
    test = dict(entry.get("TEST") or {})
    test["NAME"] = name
    entry.update(
        ENGINE=engine,
        NAME=name,
        USER=params.get("user", ""),
        PASSWORD=params.get("password", ""),
        HOST=params.get("host", ""),
        PORT=params.get("port", ""),
        OPTIONS=options,
        TEST=test,
        # A reset cuts server connections: a persistent one is checked before reuse.
        CONN_HEALTH_CHECKS=True,
    )
    return entry


def point_databases(dsn: str, aliases: Iterable[str]) -> None:
    """Point Django's ``aliases`` at ``dsn`` (in place) and close this thread's connections."""
    from django.conf import settings
    from django.db import connections

    connections.close_all()
    for alias in aliases:
        entries = [settings.DATABASES.setdefault(alias, {})]
        configured = connections.settings.get(alias)
        if configured is not None and configured is not entries[0]:
            entries.append(configured)
        for entry in entries:
            engine = entry.get("ENGINE")
            entry.update(database_settings(dsn, entry))
            if engine != entry["ENGINE"]:
                with contextlib.suppress(AttributeError):
                    del connections[alias]  # the wrapper was built for another backend


# -- per-process state -----------------------------------------------------------------------


@dataclass
class _State:
    """What the integration knows in this process."""

    requested: tuple[str, ...]
    migrate: bool
    managed: tuple[str, ...] | None = None  # resolved once Django's settings are loaded
    migrating: bool = False
    wrote: bool = False  # a TransactionTestCase teardown ran on a managed alias
    ready: bool = False  # django_db_setup is done: the aliases point at the worker branch
    pointed: str | None = None  # the connection string the aliases point at

    def point(self, dsn: str) -> None:
        """Point the managed aliases at ``dsn`` (see :func:`point_databases`)."""
        point_databases(dsn, self.aliases())
        self.pointed = dsn

    def aliases(self) -> tuple[str, ...]:
        """The aliases on the branch: those asked for, plus their test mirrors."""
        if self.managed is None:
            from django.conf import settings

            known = list(settings.DATABASES)
            wanted = known if ALL_ALIASES in self.requested else list(self.requested)
            missing = [a for a in wanted if a not in known and a != "default"]
            if missing:
                raise pytest.UsageError(
                    f"pytest-neon: {INI_DATABASES} names {', '.join(missing)}, which "
                    f"settings.DATABASES does not define (it has: {', '.join(known) or 'none'})"
                )
            for alias in known:
                mirror = (settings.DATABASES[alias].get("TEST") or {}).get("MIRROR")
                if mirror in wanted and alias not in wanted:
                    wanted.append(alias)
            self.managed = tuple(dict.fromkeys(wanted))
        return self.managed


_STATE = pytest.StashKey[_State]()


def _state(config: pytest.Config) -> _State:
    return config.stash[_STATE]


def _django_ready() -> bool:
    from pytest_django.lazy_django import django_settings_is_configured

    return django_settings_is_configured()


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
    config.stash[_STATE] = _State(
        requested=tuple(read_list(config, INI_DATABASES, "args")) or ("default",),
        migrate=migrate,
    )
    if not config.pluginmanager.has_plugin(_FIXTURES_PLUGIN):
        # Registered now, so that these fixtures override pytest-django's and pytest-neon's
        # whichever way this module was loaded (-p loads it before both).
        config.pluginmanager.register(_fixtures_plugin(), _FIXTURES_PLUGIN)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which aliases follow the branch, and what the migration step does."""
    state = config.stash.get(_STATE, None)
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


def _mirrors(state: _State) -> list[str]:
    """The aliases that follow the requested ones as their test mirrors."""
    if not _django_ready() or ALL_ALIASES in state.requested:
        return []
    try:
        return [a for a in state.aliases() if a not in state.requested]
    except pytest.UsageError:
        return []  # an unknown alias: the run stops with that error when it starts


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``django_db`` check the branch out before any other fixture too."""
    for item in items:
        cls = getattr(item, "cls", None)
        if cls is not None and issubclass(cls, unittest.TestCase):
            continue  # Django's test cases: checked out before setUpClass instead
        if item.get_closest_marker("django_db") is not None:
            checkout_first(item)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    """Give ``neon_apply_migrations`` (ours or the user's) Django on the migration branch.

    While it runs, database access is allowed and the branch aliases point at
    ``neon_migration_branch``; afterwards the connections are closed (the migration
    branch is the source every reset copies) and the aliases point at the worker branch.
    """
    name = fixturedef.argname
    if name not in ("neon_apply_migrations", "neon_migration_branch") or not _django_ready():
        return (yield)
    state = _state(request.config)
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
        run = current_run(request.config)
        worker = run.worker_branch
        if worker is not None:
            state.point(worker.connection_string)
        else:  # a process taken for an xdist controller that runs tests (--dist without -n)
            _close_connections()


def migration_fingerprint() -> str:
    """A hash of the Django version and every installed app's migration files."""
    import hashlib
    import importlib

    import django
    from django.apps import apps
    from django.db.migrations.loader import MigrationLoader

    digest = hashlib.sha256(repr(django.VERSION).encode())
    for app in sorted(apps.get_app_configs(), key=lambda a: a.label):
        module_name, _explicit = MigrationLoader.migrations_module(app.label)
        if module_name is None:
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for directory in getattr(module, "__path__", []):
            hash_files(digest, Path(directory), "*.py", _in_app(app.label))
    return digest.hexdigest()


def _in_app(label: str) -> Callable[[PurePath], str]:
    """How :func:`migration_fingerprint` names a migration file: ``label/relative path``."""
    return lambda relative: f"{label}/{relative}"


def _close_connections() -> None:
    from django.db import connections

    connections.close_all()


# -- what a test with committed data leaves behind -------------------------------------------


def _fixture_teardown_without_flush(
    original: Callable[[Any], None], state: _State
) -> Callable[[Any], None]:
    """``TransactionTestCase._fixture_teardown`` that leaves the branch to a reset."""

    def _fixture_teardown(self: Any) -> None:
        names = set(self._databases_names(include_mirrors=False))
        managed = set(state.aliases())
        if names & managed:
            state.wrote = True
        if names - managed:
            original(self)  # flush the databases that are not on the branch

    return _fixture_teardown


def _checkout(config: pytest.Config) -> tuple[NeonRun, NeonBranch]:
    """The worker branch in the migrated state; Django's connections fresh after a reset."""
    __tracebackhide__ = True
    run, branch = checkout(config)
    state = _state(config)
    if state.pointed is not None and state.pointed != branch.connection_string:
        state.point(branch.connection_string)  # another of the worker's branches
    return run, branch


def _transactional(request: pytest.FixtureRequest) -> bool:
    """Whether the test commits its work (pytest-django's rule), instead of rolling it back.

    Django ``TransactionTestCase`` classes that are not ``TestCase``; pytest-style tests
    with ``transaction=True`` or ``reset_sequences=True``, ``transactional_db`` or
    ``live_server``.
    """
    from pytest_django.django_compat import is_django_unittest

    if is_django_unittest(request):
        from django.test import TestCase, TransactionTestCase

        cls = request.cls
        return issubclass(cls, TransactionTestCase) and not issubclass(cls, TestCase)
    from pytest_django.fixtures import validate_django_db

    marker = request.node.get_closest_marker("django_db")
    if marker is not None:
        transaction, reset_sequences = validate_django_db(marker)[:2]
        if transaction or reset_sequences:
            return True
    return bool({"transactional_db", "live_server"} & set(request.fixturenames))


def _after_test(
    request: pytest.FixtureRequest, run: NeonRun, before: str | None, transactional: bool
) -> None:
    """A test that committed: its write check (the reset follows only if it wrote).

    A test whose work was rolled back needs no reset, but its work is in the WAL: the
    next check must not start from a position read before it.
    """
    state = _state(request.config)
    wrote, state.wrote = state.wrote, False
    if not transactional:
        run.forget_position()
        return
    if wrote:
        _close_connections()
        finish_test(request, run, before)


def _on_branch(request: pytest.FixtureRequest) -> Iterator[None]:
    """A Django test on the branch: checked out before it; its write check after it, if it
    commits."""
    run, _ = _checkout(request.config)
    _state(request.config).wrote = False
    transactional = _transactional(request)
    before = write_start(request, run) if transactional else None
    yield
    _after_test(request, run, before, transactional)


def _databases_of(item: pytest.Item) -> set[str]:
    """The aliases a test uses, as pytest-django decides them."""
    from django.db import connections
    from pytest_django.django_compat import is_django_unittest
    from pytest_django.fixtures import validate_django_db

    databases: Any = None
    if is_django_unittest(item):
        databases = getattr(getattr(item, "cls", None), "databases", None) or ()
    else:
        marker = item.get_closest_marker("django_db")
        fixtures = getattr(item, "fixturenames", ())
        if marker is not None:
            databases = validate_django_db(marker)[2]
        elif not {"db", "transactional_db", "live_server"} & set(fixtures):
            return set()
    if databases is None:
        return {"default"}
    if databases == ALL_ALIASES:
        return set(connections)
    return set(databases)


class _CheckoutBlocker:
    """pytest-django's ``django_db_blocker`` whose ``unblock()`` first checks the branch out.

    A fixture that unblocks the database itself (pytest-django's recipe for data shared by
    several tests) then never sees the branch while a reset is still under way.
    """

    def __init__(self, blocker: DjangoDbBlocker, config: pytest.Config) -> None:
        self._blocker = blocker
        self._config = config

    def unblock(self) -> AbstractContextManager[None]:
        """Wait for (or make) the reset the last committing test left, then allow access."""
        if _state(self._config).ready:
            _checkout(self._config)
        return self._blocker.unblock()

    def block(self) -> AbstractContextManager[None]:
        """Disable access to the database."""
        return self._blocker.block()

    def restore(self) -> None:
        """Undo the last ``block()`` or ``unblock()``."""
        self._blocker.restore()

    @property
    def is_active(self) -> bool:
        """Whether a ``block()`` or ``unblock()`` is in effect."""
        return self._blocker.is_active


def _fixtures_plugin() -> ModuleType:
    """The integration's fixtures, as a plugin module registered in ``pytest_configure``."""

    @pytest.fixture(scope="session")
    def django_db_blocker(
        pytestconfig: pytest.Config, django_db_blocker: DjangoDbBlocker | None
    ) -> DjangoDbBlocker | None:
        """pytest-django's blocker; ``unblock()`` gives the branch in the migrated state."""
        if django_db_blocker is None:
            return None
        return cast("DjangoDbBlocker", _CheckoutBlocker(django_db_blocker, pytestconfig))

    @pytest.fixture(scope="session")
    def django_db_setup(
        request: pytest.FixtureRequest,
        django_test_environment: None,
        django_db_blocker: DjangoDbBlocker,
        django_db_modify_db_settings: None,
        _neon_source: str,
    ) -> Iterator[None]:
        """Use the worker branch as it is: migrated once per run, no test databases.

        Aliases that are not on the branch get pytest-django's usual test databases.
        """
        if not _django_ready():
            pytest.skip("no Django settings (set DJANGO_SETTINGS_MODULE or --ds)")
        from django.test import TransactionTestCase
        from django.test.utils import setup_databases, teardown_databases

        config = request.config
        state = _state(config)
        run, branch = _checkout(config)
        if config.getvalue("nomigrations"):
            _disable_migrations()
        state.point(branch.connection_string)
        # Listeners run inside run.checkout(), on this thread: the connections a reset cut
        # are closed before the checkout returns. Once: this fixture is session scoped.
        run.add_reset_listener(lambda _branch: _close_connections())
        patch = pytest.MonkeyPatch()
        patch.setattr(
            TransactionTestCase,
            "_fixture_teardown",
            _fixture_teardown_without_flush(TransactionTestCase._fixture_teardown, state),
        )
        others = set().union(*(_databases_of(i) for i in request.session.items))
        others -= set(state.aliases())
        keepdb = bool(config.getvalue("reuse_db")) and not config.getvalue("create_db")
        created = None
        verbosity = config.option.verbose
        try:
            if others:
                _drop_dependencies_on(state.aliases(), others)
                with django_db_blocker.unblock():
                    created = setup_databases(
                        verbosity=verbosity, interactive=False, aliases=others, keepdb=keepdb
                    )
            state.ready = True
            yield
        finally:
            state.ready = False
            patch.undo()
            if created is not None and not keepdb:
                with django_db_blocker.unblock():
                    try:
                        teardown_databases(created, verbosity=verbosity)
                    except Exception as exc:
                        request.node.warn(
                            pytest.PytestWarning(f"could not tear down test databases: {exc!r}")
                        )
            _close_connections()

    @pytest.fixture
    def _neon_django_checkout(
        request: pytest.FixtureRequest, django_db_setup: None
    ) -> Iterator[None]:
        """Before pytest-django opens the test's transaction: the branch, migrated."""
        from pytest_django.django_compat import is_django_unittest

        if is_django_unittest(request):
            yield
            return
        yield from _on_branch(request)

    @pytest.fixture
    def _django_db_helper(_neon_django_checkout: None, _django_db_helper: None) -> None:
        """pytest-django's helper, after the branch checkout (and before its reset)."""
        return None

    @pytest.fixture(scope="session")
    def neon_apply_migrations(request: pytest.FixtureRequest) -> None:
        """``migrate`` once per run on the migration branch (ini ``neon_django_migrate``).

        With pytest-django's ``--no-migrations`` the tables come from the models instead.
        """
        state = _state(request.config)
        if not state.migrate or not _django_ready():
            return
        request.getfixturevalue("neon_migration_branch")
        from django.core.management import call_command

        if request.config.getvalue("nomigrations"):
            _disable_migrations()
        for alias in state.aliases():
            call_command("migrate", database=alias, run_syncdb=True, interactive=False, verbosity=0)

    @pytest.fixture(scope="session")
    def neon_migration_fingerprint(request: pytest.FixtureRequest) -> str | None:
        """A hash of every installed app's migration files: keys the migration cache."""
        state = _state(request.config)
        if not state.migrate or not _django_ready() or request.config.getvalue("nomigrations"):
            return None
        return migration_fingerprint()

    @pytest.fixture(autouse=True, scope="class")
    def _neon_django_unittest_class(request: pytest.FixtureRequest) -> Iterator[None]:
        """Django ``TestCase`` classes: the branch checked out before ``setUpClass``."""
        if not _uses_branch_as_unittest(request):
            yield
            return
        request.getfixturevalue("django_db_setup")
        _checkout(request.config)
        yield

    @pytest.fixture(autouse=True)
    def _neon_django_unittest(request: pytest.FixtureRequest) -> Iterator[None]:
        """Django ``TransactionTestCase`` classes: reset after each test instead of a flush."""
        if not _uses_branch_as_unittest(request):
            yield
            return
        yield from _on_branch(request)

    @pytest.fixture
    def _neon_checkout_first(request: pytest.FixtureRequest) -> Iterator[None]:
        """pytest-neon's first fixture: Django's test environment first, for Django tests."""
        django_test = _django_ready() and (
            "django_db_setup" in request.fixturenames
            or request.node.get_closest_marker("django_db") is not None
        )
        if django_test:
            request.getfixturevalue("django_db_setup")
        check = _transactional(request) if django_test else False
        check = check or bool({"neon_branch_readwrite", "neon_branch"} & set(request.fixturenames))
        yield from on_clean_branch(request, check_writes=check)

    plugin = ModuleType(_FIXTURES_PLUGIN, "pytest-neon's Django fixtures")
    for name, fixture in {
        "django_db_blocker": django_db_blocker,
        "django_db_setup": django_db_setup,
        "_neon_django_checkout": _neon_django_checkout,
        "_django_db_helper": _django_db_helper,
        "neon_apply_migrations": neon_apply_migrations,
        "neon_migration_fingerprint": neon_migration_fingerprint,
        "_neon_django_unittest_class": _neon_django_unittest_class,
        "_neon_django_unittest": _neon_django_unittest,
        "_neon_checkout_first": _neon_checkout_first,
    }.items():
        setattr(plugin, name, fixture)
    return plugin


def _uses_branch_as_unittest(request: pytest.FixtureRequest) -> bool:
    if not _django_ready():
        return False
    from pytest_django.django_compat import is_django_unittest

    return is_django_unittest(request) and bool(getattr(request.cls, "databases", None))


def _drop_dependencies_on(ready: Iterable[str], aliases: Iterable[str]) -> None:
    """Aliases on the branch exist already: test databases of ``aliases`` need not wait."""
    from django.db import DEFAULT_DB_ALIAS, connections

    for alias in aliases:
        test = connections[alias].settings_dict.setdefault("TEST", {})
        depends = test.get("DEPENDENCIES", [DEFAULT_DB_ALIAS])
        test["DEPENDENCIES"] = [d for d in depends if d not in ready]


class _NoMigrations(dict[str, None]):
    """``MIGRATION_MODULES`` value for which no app has migrations (tables from models)."""

    def __contains__(self, item: object) -> bool:
        return True

    def __getitem__(self, item: str) -> None:
        return None


def _disable_migrations() -> None:
    from django.conf import settings

    settings.MIGRATION_MODULES = _NoMigrations()
