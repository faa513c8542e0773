"""The user-facing fixtures. Thin: the work happens in ``NeonSession`` and ``Migrations``;
:mod:`pytest_neon.integration` holds what they share with the integrations."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from pytest_neon.errors import NeonError
from pytest_neon.integration import (
    checkout,
    current_session,
    fail_on_neon_error,
    finish_test,
    on_clean_branch,
    plugin_state,
    write_start,
)
from pytest_neon.neon_branch import NeonBranch, sqlalchemy_url
from pytest_neon.plugin_state import env_var

if TYPE_CHECKING:
    from pytest_neon.migrations import Migrations
    from pytest_neon.neon_session import NeonSession

_WRITING_FIXTURES = frozenset({"neon_branch_readwrite", "neon_branch"})


@pytest.fixture(scope="session")
def neon_apply_migrations() -> None:
    """Override to migrate the schema once per run, on ``neon_migration_branch``.

    The default does nothing and spends no branch: tests run on copies of the parent.
    """
    return None


@pytest.fixture(scope="session")
def neon_migration_fingerprint() -> str | None:
    """Override to return a fingerprint of your migration inputs (e.g. a hash of the files).

    When it returns a string, the migrated branch is cached across runs under that
    fingerprint, and a run whose migrations did not change runs none.
    """
    return None


def _migrations(config: pytest.Config) -> Migrations:
    __tracebackhide__ = True
    current_session(config)  # skips or fails as the state says
    migrations = plugin_state(config).migrations
    assert migrations is not None
    return migrations


@pytest.fixture(scope="session")
def neon_migration_branch(pytestconfig: pytest.Config) -> NeonBranch:
    """The branch ``neon_apply_migrations`` migrates, once per run.

    Request it from your ``neon_apply_migrations`` override: it is created on first use
    (a run that migrates nothing spends no branch on it), and the env var
    (``DATABASE_URL``) points at it while the migrations run. Every test branch then
    starts from its state.
    """
    try:
        branch = _migrations(pytestconfig).branch()
    except NeonError as exc:
        fail_on_neon_error(pytestconfig, "could not create the migration branch", exc)
    plugin_state(pytestconfig).point_env_at(branch.connection_string)
    return branch


@pytest.fixture(scope="session")
def _neon_migration_branch(neon_migration_branch: NeonBranch) -> NeonBranch:
    """The earlier name of ``neon_migration_branch`` (pytest-neon 2.x), still working."""
    return neon_migration_branch


@pytest.fixture(scope="session")
def _neon_test_branch(neon_migration_branch: NeonBranch) -> NeonBranch:
    """What pytest-neon 3.x's ``neon_apply_migrations`` took: the migration branch now."""
    warnings.warn(
        "_neon_test_branch (pytest-neon 3.x) is deprecated: request neon_migration_branch "
        "in neon_apply_migrations (the branch every test branch then starts from)",
        DeprecationWarning,
        stacklevel=2,
    )
    return neon_migration_branch


def _describe_failure(exc: BaseException) -> str:
    what = str(exc) if isinstance(exc, pytest.fail.Exception | NeonError) else None
    return f"pytest-neon: neon_apply_migrations failed: {what or f'{type(exc).__name__}: {exc}'}"


@pytest.fixture(scope="session")
def _neon_source(request: pytest.FixtureRequest, pytestconfig: pytest.Config) -> str:
    """Run migrations once per run (whichever process comes first) and adopt their result.

    Returns the id of the branch that every reset restores from.
    """
    __tracebackhide__ = True
    from pytest_neon.migrations import MigratedElsewhereError

    state = plugin_state(pytestconfig)
    migrations = _migrations(pytestconfig)
    use_cache = migrations.session.caches_migrations

    def fingerprint() -> str | None:
        return request.getfixturevalue("neon_migration_fingerprint") if use_cache else None

    try:
        source = migrations.prepare(
            apply=lambda: request.getfixturevalue("neon_apply_migrations"),
            fingerprint=fingerprint,
            describe=_describe_failure,
        )
    except MigratedElsewhereError:
        state.migration_failed = (
            "pytest-neon: neon_apply_migrations failed in another worker; see its error"
        )
        request.session.shouldstop = "neon_apply_migrations failed"
        pytest.fail(state.migration_failed, pytrace=False)
    except BaseException as exc:
        state.migration_failed = _describe_failure(exc) + " (see the first error of this run)"
        request.session.shouldstop = "neon_apply_migrations failed"
        if isinstance(exc, NeonError):
            pytest.fail(str(exc), pytrace=False)
        raise
    try:
        migrations.adopt(source)
    except NeonError as exc:
        fail_on_neon_error(pytestconfig, "could not prepare this worker's branch", exc)
    worker = migrations.session.worker_branch
    if worker is not None:
        state.point_env_at(worker.connection_string)
    return source.branch_id


@pytest.fixture
def _neon_checkout_first(request: pytest.FixtureRequest) -> Iterator[None]:
    """Before every other fixture of the test, of any scope: the branch, migrated.

    The write check of a readwrite test starts here too, so that writes made by the
    test's other fixtures count as the test's.
    """
    writes = bool(_WRITING_FIXTURES & set(request.fixturenames))
    yield from on_clean_branch(request, check_writes=writes)


def _checkout(request: pytest.FixtureRequest, name: str) -> tuple[NeonSession, NeonBranch]:
    """The session and a worker branch in the migrated state, for fixture ``name``."""
    __tracebackhide__ = True
    if "neon_branch_shared" in request.fixturenames:
        pytest.fail(
            f"pytest-neon: {request.node.nodeid} uses both {name} and neon_branch_shared; "
            "a test runs on one branch: use one of them",
            pytrace=False,
        )
    return checkout(request.config)


@pytest.fixture
def neon_branch_readwrite(
    request: pytest.FixtureRequest, _neon_source: str
) -> Iterator[NeonBranch]:
    """This worker's branch in the migrated state; reset before the next test that needs it."""
    session, branch = _checkout(request, "neon_branch_readwrite")
    before = write_start(request, session)
    with env_var(session.settings.env_var, branch.connection_string):
        try:
            yield branch
        finally:
            finish_test(request, session, before)


@pytest.fixture
def neon_branch_readonly(request: pytest.FixtureRequest, _neon_source: str) -> Iterator[NeonBranch]:
    """This worker's branch in the migrated state, with read-only sessions; never reset."""
    session, branch = _checkout(request, "neon_branch_readonly")
    branch = branch.as_read_only()
    with env_var(session.settings.env_var, branch.connection_string):
        yield branch


@pytest.fixture
def neon_branch(request: pytest.FixtureRequest) -> NeonBranch:
    """Deprecated alias of ``neon_branch_readwrite``."""
    warnings.warn(
        "the neon_branch fixture is deprecated: use neon_branch_readwrite (tests that write) "
        "or neon_branch_readonly (tests that only read)",
        DeprecationWarning,
        stacklevel=2,
    )
    branch: NeonBranch = request.getfixturevalue("neon_branch_readwrite")
    return branch


@pytest.fixture(scope="module")
def neon_branch_shared(
    request: pytest.FixtureRequest, _neon_source: str, pytestconfig: pytest.Config
) -> Iterator[NeonBranch]:
    """One branch for the whole test module, from the migrated state; never reset."""
    state = plugin_state(pytestconfig)
    session = current_session(pytestconfig)
    state.module_counter += 1
    try:
        branch = session.create_module_branch(f"{session.worker}-m{state.module_counter}")
    except NeonError as exc:
        fail_on_neon_error(pytestconfig, "could not create the module branch", exc)
    try:
        with env_var(session.settings.env_var, branch.connection_string):
            yield branch
    finally:
        if not session.settings.keep_branches:
            try:
                session.ops.delete(branch.branch_id)
            except NeonError as exc:
                warnings.warn(
                    f"pytest-neon: could not delete branch {branch.branch_id}: {exc}",
                    pytest.PytestWarning,
                    stacklevel=1,
                )


def _driver(module: str, extra: str) -> ModuleType:
    __tracebackhide__ = True
    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(
            f'pytest-neon: {module} is not installed: pip install "pytest-neon[{extra}]"',
            pytrace=False,
        )


def _connection(module: str, extra: str, branch: NeonBranch) -> Iterator[Any]:
    """A DB-API connection to ``branch``; rolled back and closed afterwards."""
    conn = _driver(module, extra).connect(branch.connection_string)
    try:
        yield conn
    finally:
        _rollback_and_close(conn)


@pytest.fixture
def neon_connection_psycopg(neon_branch_readwrite: NeonBranch) -> Iterator[Any]:
    """A psycopg 3 connection to the test's branch; rolled back and closed after the test."""
    yield from _connection("psycopg", "psycopg", neon_branch_readwrite)


@pytest.fixture
def neon_connection(neon_branch_readwrite: NeonBranch) -> Iterator[Any]:
    """A psycopg2 connection to the test's branch; rolled back and closed after the test."""
    yield from _connection("psycopg2", "psycopg2", neon_branch_readwrite)


@pytest.fixture
def neon_engine(neon_branch_readwrite: NeonBranch) -> Iterator[Any]:
    """A SQLAlchemy engine on the test's branch (``pool_pre_ping``); disposed after."""
    sqlalchemy = _driver("sqlalchemy", "sqlalchemy")
    engine = sqlalchemy.create_engine(
        sqlalchemy_url(neon_branch_readwrite.connection_string), pool_pre_ping=True
    )
    try:
        yield engine
    finally:
        engine.dispose()


def _rollback_and_close(conn: Any) -> None:
    try:
        if not conn.closed:
            conn.rollback()
    except Exception:  # noqa: S110 - the connection may have been dropped by a reset
        pass
    finally:
        conn.close()
