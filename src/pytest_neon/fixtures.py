"""The user-facing fixtures. Thin: the work happens in ``branches.NeonRun``."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any, NoReturn

import pytest

from pytest_neon.branch import NeonBranch
from pytest_neon.branches import NeonRun
from pytest_neon.cache import cache_key, find_cached, save_cache
from pytest_neon.errors import NeonBranchGoneError, NeonError, api_unavailable
from pytest_neon.schema import schema_fingerprint
from pytest_neon.state import PluginState, env_var
from pytest_neon.xdist import MigrationGate, MigrationState


def _state(config: pytest.Config) -> PluginState:
    from pytest_neon.plugin import STATE

    state = config.stash.get(STATE, None)
    if state is None:
        pytest.skip("pytest-neon did not start (pytest --help or --version?)")
    return state


def current_run(config: pytest.Config) -> NeonRun:
    """This process's ``NeonRun``; skips or fails the calling test when there is none.

    For integrations (``pytest_neon.contrib``): call it from a fixture.
    """
    return _run(config)


def _run(config: pytest.Config) -> NeonRun:
    __tracebackhide__ = True
    state = _state(config)
    if state.unavailable:
        pytest.skip(state.unavailable)
    if state.startup_error:
        pytest.fail(
            f"pytest-neon could not create this worker's branch: {state.startup_error}",
            pytrace=False,
        )
    if state.migration_failed:
        pytest.fail(state.migration_failed, pytrace=False)
    if state.run is None:
        pytest.skip("pytest-neon: no branch for this process")
    return state.run


def _fail(request: pytest.FixtureRequest, what: str, exc: NeonError) -> NoReturn:
    __tracebackhide__ = True
    fail_on_neon_error(request.config, what, exc)


def fail_on_neon_error(config: pytest.Config, what: str, exc: NeonError) -> NoReturn:
    """Fail the test that needed ``what``; stop the run when no later test could have it.

    An unavailable API or a branch deleted under the run would fail every later test
    after the same wait: the run stops after this one, with one error.
    """
    __tracebackhide__ = True
    if api_unavailable(exc):
        _state(config).stop_reason = "pytest-neon: stopping: the Neon API is unavailable"
    elif isinstance(exc, NeonBranchGoneError):
        _state(config).stop_reason = "pytest-neon: stopping: a branch this run uses is gone"
    # One line: the NeonError under it says the same, with no more to act on.
    raise pytest.fail.Exception(f"pytest-neon: {what}: {exc}", pytrace=False) from None


def checkout(config: pytest.Config) -> tuple[NeonRun, NeonBranch]:
    """The run and this worker's branch in the migrated state, for integrations.

    Waits for (or makes) the reset a writing test left; on a Neon error the calling test
    fails, and the run stops when no later test could succeed either.
    """
    __tracebackhide__ = True
    run = _run(config)
    try:
        return run, run.checkout()
    except NeonError as exc:
        fail_on_neon_error(config, "could not reset branch", exc)


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


@pytest.fixture(scope="session")
def neon_migration_branch(
    request: pytest.FixtureRequest, pytestconfig: pytest.Config
) -> NeonBranch:
    """The branch ``neon_apply_migrations`` migrates, once per run.

    Request it from your ``neon_apply_migrations`` override: it is created on first use
    (a run that migrates nothing spends no branch on it), and the env var
    (``DATABASE_URL``) points at it while the migrations run. Every test branch then
    starts from its state.
    """
    run = _run(pytestconfig)
    try:
        branch = run.create_migration_branch()
        run.migration_fingerprint = schema_fingerprint(branch.connection_string)
    except NeonError as exc:
        _fail(request, "could not create the migration branch", exc)
    _state(pytestconfig).point_env_at(branch.connection_string)
    return branch


@pytest.fixture(scope="session")
def _neon_migration_branch(neon_migration_branch: NeonBranch) -> NeonBranch:
    """The earlier name of ``neon_migration_branch`` (pytest-neon 2.x), still working."""
    return neon_migration_branch


@pytest.fixture(scope="session")
def _neon_source(request: pytest.FixtureRequest, pytestconfig: pytest.Config) -> str:
    """Run migrations once per run (whichever process comes first) and adopt their result.

    Returns the id of the branch that every reset restores from.
    """
    __tracebackhide__ = True
    state = _state(pytestconfig)
    run = _run(pytestconfig)
    gate = MigrationGate(run.run_id)
    expires = False  # the source is the run's migration branch, which expires
    with gate.hold() as recorded:
        if recorded is None:
            try:
                source = _migrate(request, run)
            except BaseException as exc:
                what = (
                    str(exc)
                    if isinstance(exc, pytest.fail.Exception)
                    else f"{type(exc).__name__}: {exc}"
                )
                message = f"pytest-neon: neon_apply_migrations failed: {what}"
                gate.record(MigrationState(None, error=message))
                state.migration_failed = message + " (see the first error of this run)"
                request.session.shouldstop = "neon_apply_migrations failed"
                raise
            migration = run.migration_branch
            expires = migration is not None and source == migration.branch_id
            gate.record(MigrationState(source, expires=expires))
        elif recorded.error:
            state.migration_failed = (
                "pytest-neon: neon_apply_migrations failed in another worker; see its error"
            )
            request.session.shouldstop = "neon_apply_migrations failed"
            pytest.fail(state.migration_failed, pytrace=False)
        else:
            source = recorded.source_branch_id or run.parent_id
            expires = recorded.expires
    try:
        run.adopt_source(source, expires=expires)
    except NeonError as exc:
        _fail(request, "could not prepare this worker's branch", exc)
    worker = run.worker_branch
    if worker is not None:
        state.point_env_at(worker.connection_string)
    return source


def _migrate(request: pytest.FixtureRequest, run: NeonRun) -> str:
    """Run the migrations, or find their result in the migration cache."""
    fingerprint: str | None = None
    if run.settings.migration_cache:
        fingerprint = request.getfixturevalue("neon_migration_fingerprint")
    key = cache_key(run, fingerprint) if fingerprint else None
    if key is not None:
        cached = find_cached(run, key)
        if cached is not None:
            run.counters.migration_cache = "hit"
            return cached
        run.counters.migration_cache = "miss"
    with run.phase("migrations"):
        request.getfixturevalue("neon_apply_migrations")
    source = _migrated_source(run)
    if key is not None and source != run.parent_id:
        source = save_cache(run, key, source)
        run.drop_migration_branch()
    return source


WRONG_BRANCH = (
    "pytest-neon: neon_apply_migrations changed nothing on the migration branch, but this "
    "worker's branch changed: the migrations connected with a URL read before they ran "
    "(e.g. Alembic's env.py taking it from application settings imported at start, or an "
    "engine built at import); make them use neon_migration_branch.connection_string, or "
    "DATABASE_URL (--neon-env-var) as it is while neon_apply_migrations runs"
)


def _migrated_source(run: NeonRun) -> str:
    """The branch tests start from: the migration branch, or the parent if nothing changed.

    Migrations that changed nothing where they should have, but changed the worker branch
    (which every reset would undo), are an error.
    """
    branch = run.migration_branch
    if branch is None:
        return run.parent_id
    if schema_fingerprint(branch.connection_string) == run.migration_fingerprint:
        worker = run.worker_branch
        if (
            worker is not None
            and schema_fingerprint(worker.connection_string) != run.migration_fingerprint
        ):
            pytest.fail(WRONG_BRANCH, pytrace=False)
        run.drop_migration_branch()
        return run.parent_id
    return branch.branch_id


def _refuse_with_shared(request: pytest.FixtureRequest, name: str) -> None:
    __tracebackhide__ = True
    if "neon_branch_shared" in request.fixturenames:
        pytest.fail(
            f"pytest-neon: {request.node.nodeid} uses both {name} and neon_branch_shared; "
            "a test runs on one branch: use one of them",
            pytrace=False,
        )


def _checkout(request: pytest.FixtureRequest, name: str) -> tuple[NeonRun, NeonBranch]:
    """The run and a worker branch in the migrated state, for fixture ``name``."""
    __tracebackhide__ = True
    _refuse_with_shared(request, name)
    return checkout(request.config)


#: the fixture every test on the worker branch sets up first (see :func:`checkout_first`)
CHECKOUT_FIRST = "_neon_checkout_first"
_WRITE_START = pytest.StashKey[tuple[str | None]]()
_WRITING_FIXTURES = frozenset({"neon_branch_readwrite", "neon_branch"})


def uses_worker_branch(item: pytest.Item) -> bool:
    """Whether ``item`` runs on the worker branch (a pytest-neon fixture in its closure)."""
    names = getattr(item, "fixturenames", ())
    return "_neon_source" in names and "neon_branch_shared" not in names


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


@pytest.fixture
def _neon_checkout_first(request: pytest.FixtureRequest) -> Iterator[None]:
    """Before every other fixture of the test, of any scope: the branch, migrated.

    The write check of a readwrite test starts here too, so that writes made by the
    test's other fixtures count as the test's.
    """
    yield from on_clean_branch(
        request, check_writes=bool(_WRITING_FIXTURES & set(request.fixturenames))
    )


def on_clean_branch(request: pytest.FixtureRequest, *, check_writes: bool) -> Iterator[None]:
    """The body of :data:`CHECKOUT_FIRST` (integrations override that fixture with it).

    Checks the worker branch out in the migrated state and points the env var at it for
    the rest of the test; ``check_writes``: the test's write check starts now.
    """
    __tracebackhide__ = True
    request.getfixturevalue("_neon_source")
    run, branch = checkout(request.config)
    if check_writes:
        request.node.stash[_WRITE_START] = (run.write_position(),)
    with env_var(run.settings.env_var, branch.connection_string):
        yield


def write_start(request: pytest.FixtureRequest, run: NeonRun) -> str | None:
    """Where the test's write check starts: read by :data:`CHECKOUT_FIRST`, or now."""
    kept: tuple[str | None] | None = request.node.stash.get(_WRITE_START, None)
    if kept is not None:
        del request.node.stash[_WRITE_START]
        return kept[0]
    return run.write_position()


def finish_test(request: pytest.FixtureRequest, run: NeonRun, before: str | None) -> None:
    """After a test that may have written: send its write check (the reset follows if it
    wrote). The ``neon_reset`` marker and ``neon_always_reset`` force the reset."""
    marked = request.node.get_closest_marker("neon_reset") is not None
    run.finish_test(before, force=run.settings.always_reset or marked)


@pytest.fixture
def neon_branch_readwrite(
    request: pytest.FixtureRequest, _neon_source: str
) -> Iterator[NeonBranch]:
    """This worker's branch in the migrated state; reset before the next test that needs it."""
    run, branch = _checkout(request, "neon_branch_readwrite")
    before = write_start(request, run)
    with env_var(run.settings.env_var, branch.connection_string):
        try:
            yield branch
        finally:
            finish_test(request, run, before)


@pytest.fixture
def neon_branch_readonly(request: pytest.FixtureRequest, _neon_source: str) -> Iterator[NeonBranch]:
    """This worker's branch in the migrated state, with read-only sessions; never reset."""
    run, branch = _checkout(request, "neon_branch_readonly")
    branch = branch.as_read_only()
    with env_var(run.settings.env_var, branch.connection_string):
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
    state = _state(pytestconfig)
    run = _run(pytestconfig)
    state.module_counter += 1
    try:
        branch = run.create_branch(f"{run.worker}-m{state.module_counter}", source_id=_neon_source)
    except NeonError as exc:
        _fail(request, "could not create the module branch", exc)
    try:
        with env_var(run.settings.env_var, branch.connection_string):
            yield branch
    finally:
        if not run.settings.keep_branches:
            try:
                run.delete(branch.branch_id)
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


def sqlalchemy_url(dsn: str) -> str:
    """A ``postgresql+psycopg://`` URL for SQLAlchemy from a ``postgresql://`` DSN."""
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix) :]
    return dsn


def _rollback_and_close(conn: Any) -> None:
    try:
        if not conn.closed:
            conn.rollback()
    except Exception:  # noqa: S110 - the connection may have been dropped by a reset
        pass
    finally:
        conn.close()
