# mypy: disable-error-code="import-untyped"
"""The Django integration's fixtures (registered as a plugin by
:mod:`pytest_neon.contrib.django`, after pytest-django's, so that they override them)."""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, cast

import pytest

from pytest_neon.contrib import _pytest_django as private
from pytest_neon.contrib._django_databases import (
    ALL_ALIASES,
    DjangoState,
    close_connections,
    django_state,
)
from pytest_neon.contrib._hashing import hash_files
from pytest_neon.integration import (
    CHECKOUT_FIRST,
    add_reset_listener,
    checkout,
    finish_test,
    forget_rolled_back_work,
    on_clean_branch,
    write_start,
)
from pytest_neon.neon_branch import NeonBranch

if TYPE_CHECKING:
    from pytest_django import DjangoDbBlocker

    from pytest_neon.neon_session import NeonSession

_WRITING_FIXTURES = frozenset({"neon_branch_readwrite", "neon_branch"})


# -- checkouts and write checks ---------------------------------------------------------------


def _checkout(config: pytest.Config) -> tuple[NeonSession, NeonBranch]:
    """The worker branch in the migrated state; Django's connections fresh after a reset."""
    __tracebackhide__ = True
    session, branch = checkout(config)
    state = django_state(config)
    if state.pointed is not None and state.pointed != branch.connection_string:
        state.point(branch.connection_string)  # another of the worker's branches
    return session, branch


def _on_branch(request: pytest.FixtureRequest, commits: bool) -> Iterator[None]:
    """A Django test on the branch: checked out before it; its write check after it, if it
    ``commits``."""
    session, _ = _checkout(request.config)
    django_state(request.config).wrote = False
    before = write_start(request, session) if commits else None
    yield
    _after_test(request, session, before, commits)


def _after_test(
    request: pytest.FixtureRequest, session: NeonSession, before: str | None, commits: bool
) -> None:
    """A test that committed: its write check (the reset follows only if it wrote).

    A test whose work was rolled back needs no reset, but its work is in the WAL: the
    next check must not start from a position read before it.
    """
    state = django_state(request.config)
    wrote, state.wrote = state.wrote, False
    if not commits:
        forget_rolled_back_work(session)
        return
    if wrote:
        close_connections()
        finish_test(request, session, before)


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
        if django_state(self._config).ready:
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


# -- fixtures ---------------------------------------------------------------------------------


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
    from pytest_neon.contrib.django import migrations_done

    config = request.config
    migrations_done(config)  # (``_neon_source`` holds the migrated state)
    if not private.settings_configured():
        pytest.skip("no Django settings (set DJANGO_SETTINGS_MODULE or --ds)")
    state = django_state(config)
    session, branch = _checkout(config)
    if config.getvalue("nomigrations"):
        _disable_migrations()
    state.point(branch.connection_string)
    # Listeners run inside the checkout, on this thread: the connections a reset cut are
    # closed before it returns. Once: this fixture is session scoped.
    add_reset_listener(session, lambda _branch: close_connections())
    patch = pytest.MonkeyPatch()
    private.patch_flush(patch, lambda: set(state.aliases()), state.note_write)
    try:
        with _test_databases_off_the_branch(request, state, django_db_blocker):
            state.ready = True
            yield
    finally:
        state.ready = False
        patch.undo()
        close_connections()


class _test_databases_off_the_branch:
    """pytest-django's usual test databases for the aliases tests use that are not on the
    branch; torn down at the end (unless ``--reuse-db``)."""

    def __init__(
        self, request: pytest.FixtureRequest, state: DjangoState, blocker: DjangoDbBlocker
    ) -> None:
        config = request.config
        self._request = request
        self._blocker = blocker
        self._others = set().union(
            *(private.databases_of(i, ALL_ALIASES) for i in request.session.items)
        ) - set(state.aliases())
        self._ready = state.aliases()
        self._keepdb = bool(config.getvalue("reuse_db")) and not config.getvalue("create_db")
        self._verbosity = config.option.verbose
        self._created: Any = None

    def __enter__(self) -> None:
        if not self._others:
            return
        from django.test.utils import setup_databases

        _drop_dependencies_on(self._ready, self._others)
        with self._blocker.unblock():
            self._created = setup_databases(
                verbosity=self._verbosity,
                interactive=False,
                aliases=self._others,
                keepdb=self._keepdb,
            )

    def __exit__(self, *exc_info: object) -> None:
        if self._created is None or self._keepdb:
            return
        from django.test.utils import teardown_databases

        with self._blocker.unblock():
            try:
                teardown_databases(self._created, verbosity=self._verbosity)
            except Exception as exc:
                self._request.node.warn(
                    pytest.PytestWarning(f"could not tear down test databases: {exc!r}")
                )


@pytest.fixture
def _django_db_helper(
    _neon_checkout_first: None, django_db_setup: None, _django_db_helper: None
) -> None:
    """pytest-django's helper, after the branch checkout (and before its write check):
    ``_neon_checkout_first`` is a test's first fixture already, but for a test of a
    ``neon_branch_shared`` module. (``django_db_setup`` named here too: pytest before 8
    leaves the arguments of the helper this overrides out of a test's fixture names.)"""
    return None


@pytest.fixture(scope="session")
def neon_apply_migrations(request: pytest.FixtureRequest) -> None:
    """``migrate`` once per run on the migration branch (ini ``neon_django_migrate``).

    With pytest-django's ``--no-migrations`` the tables come from the models instead.
    """
    state = django_state(request.config)
    if not state.migrate or not private.settings_configured():
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
    state = django_state(request.config)
    if (
        not state.migrate
        or not private.settings_configured()
        or request.config.getvalue("nomigrations")
    ):
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
    yield from _on_branch(request, private.commits(request))


@pytest.fixture
def _neon_checkout_first(request: pytest.FixtureRequest) -> Iterator[None]:
    """pytest-neon's first fixture: Django's test environment first, for Django tests.

    A pytest-style Django test is checked out here, before pytest-django opens its
    transaction, and its write check (if it commits) is sent as this fixture, the last,
    is torn down: after pytest-django's teardown and the test's other fixtures'. (One
    fixture for all of it: every fixture costs every test its setup.)
    """
    names = request.fixturenames
    django_test = private.settings_configured() and (
        "django_db_setup" in names
        or request.node.get_closest_marker("django_db") is not None
        or CHECKOUT_FIRST not in names  # asked for by pytest-django's helper as it is set up
    )
    if django_test:
        request.getfixturevalue("django_db_setup")
    commits = private.commits(request) if django_test else False
    check = commits or bool(_WRITING_FIXTURES & set(request.fixturenames))
    if not django_test or private.is_django_test_case(request):
        yield from on_clean_branch(request, check_writes=check)
        return
    on_branch = on_clean_branch(request, check_writes=check)
    next(on_branch)  # checked out, the env var set
    try:
        yield from _on_branch(request, commits)  # Django's connections follow the branch
    finally:
        next(on_branch, None)  # the env var put back


# -- helpers ----------------------------------------------------------------------------------


def migration_fingerprint() -> str:
    """A hash of the Django version and every installed app's migration files.

    The packages are found, not imported, and neither is Django's migration loader: a run
    whose migrations are cached loads none of them."""
    import django
    from django.apps import apps

    digest = hashlib.sha256(repr(django.VERSION).encode())
    for app in sorted(apps.get_app_configs(), key=lambda a: a.label):
        for directory in _migration_directories(app.label, app.name):
            hash_files(digest, Path(directory), "*.py", _in_app(app.label))
    return digest.hexdigest()


def _migration_directories(label: str, package: str) -> list[str]:
    """Where the migrations of the app ``label`` (its package ``package``) are, as Django's
    loader looks for them: ``MIGRATION_MODULES`` (``None``: none), else ``migrations``."""
    from django.conf import settings

    modules = settings.MIGRATION_MODULES
    # `in` and `[]`, as Django's loader asks: objects that disable migrations (pytest-django's
    # --no-migrations) answer those, not `get`
    name = modules[label] if label in modules else f"{package}.migrations"  # noqa: SIM401
    if name is None:
        return []
    try:
        spec = importlib.util.find_spec(name)
    except ImportError:  # (a parent package that is not there)
        return []
    return list(spec.submodule_search_locations or []) if spec is not None else []


def _in_app(label: str) -> Callable[[PurePath], str]:
    """How :func:`migration_fingerprint` names a migration file: ``label/relative path``."""
    return lambda relative: f"{label}/{relative}"


def _uses_branch_as_unittest(request: pytest.FixtureRequest) -> bool:
    if not private.settings_configured():
        return False
    return private.is_django_test_case(request) and bool(getattr(request.cls, "databases", None))


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
