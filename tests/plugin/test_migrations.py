"""neon_apply_migrations: once per run, also under xdist; no branch spent when not needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.pytest_runs import NeonProject, clean_neon_env, run_local, times_reported

MIGRATING_CONFTEST = """
import os, pathlib
import psycopg
import pytest

@pytest.fixture(scope="session")
def neon_apply_migrations(_neon_migration_branch):
    assert os.environ["DATABASE_URL"] == _neon_migration_branch.connection_string
    log = pathlib.Path(os.environ["MIGRATION_LOG"])
    with log.open("a") as f:
        f.write(_neon_migration_branch.branch_id + "\\n")
    with psycopg.connect(_neon_migration_branch.connection_string) as conn:
        conn.execute("CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE)")
"""

USES_SCHEMA = """
import psycopg
import pytest

@pytest.mark.parametrize("n", range({n}))
def test_insert(neon_branch_readwrite, n):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        conn.execute("INSERT INTO users (email) VALUES ('same@example.com')")
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)

def test_readonly_sees_schema(neon_branch_readonly):
    with psycopg.connect(neon_branch_readonly.connection_string) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)
"""


def test_migrations_run_once_and_every_test_starts_migrated(
    neon: NeonProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "migrations.log"
    monkeypatch.setenv("MIGRATION_LOG", str(log))
    neon.pytester.makeconftest(MIGRATING_CONFTEST)
    neon.pytester.makepyfile(test_schema=USES_SCHEMA.format(n=5))
    before = neon.branch_names()
    result = neon.run("--neon-worker-branches=1")
    result.assert_outcomes(passed=6)
    assert len(log.read_text().split()) == 1
    result.stdout.fnmatch_lines(["*branches created: 2*"])
    assert neon.branch_names() == before


def test_migrations_run_once_under_xdist(
    neon: NeonProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "migrations.log"
    monkeypatch.setenv("MIGRATION_LOG", str(log))
    neon.pytester.makeconftest(MIGRATING_CONFTEST)
    neon.pytester.makepyfile(test_schema=USES_SCHEMA.format(n=12))
    before = neon.branch_names()
    result = neon.run("--neon-worker-branches=1", "-n", "3")
    result.assert_outcomes(passed=13)
    assert len(log.read_text().split()) == 1
    # three worker branches and one migration branch
    result.stdout.fnmatch_lines(["*branches created: 4*"])
    assert neon.branch_names() == before


def test_no_override_spends_no_migration_branch(neon: NeonProject) -> None:
    neon.pytester.makepyfile(
        test_plain="""
        def test_one(neon_branch_readwrite):
            assert neon_branch_readwrite.parent_id
        """
    )
    result = neon.run("--neon-worker-branches=1")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*branches created: 1,*"])


def test_migrations_that_change_nothing_drop_their_branch(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the local backend, whose write checks are exact: on the emulator alone, every
    # database of the suite's server shares one WAL position, so another worker's
    # writes would count as this run's
    clean_neon_env(monkeypatch)
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def neon_apply_migrations(_neon_migration_branch):
            pass  # nothing to migrate
        """
    )
    pytester.makepyfile(
        test_plain="""
        def test_one(neon_branch_readwrite):
            pass

        def test_two(neon_branch_readwrite):
            pass
        """
    )
    result = run_local(pytester, postgres_url)
    result.assert_outcomes(passed=2)
    # worker + migration branch were created; no reset to the (dropped) migration branch
    result.stdout.fnmatch_lines(["*branches created: 2, resets: 0 done / 2 skipped*"])


def test_failing_migration_is_reported_once_and_cleaned_up(neon: NeonProject) -> None:
    neon.pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def neon_apply_migrations(_neon_migration_branch):
            raise RuntimeError("migration 0042 is broken")
        """
    )
    neon.pytester.makepyfile(
        test_many="""
        import pytest

        @pytest.mark.parametrize("n", range(5))
        def test_db(neon_branch_readwrite, n):
            pass
        """
    )
    before = neon.branch_names()
    result = neon.run()
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors") == 1
    assert times_reported(result, "RuntimeError: migration 0042 is broken") == 1
    assert times_reported(result, "ERROR at setup") == 1
    assert result.ret != 0
    assert neon.branch_names() == before


CACHED_CONFTEST = (
    MIGRATING_CONFTEST
    + """

@pytest.fixture(scope="session")
def neon_migration_fingerprint():
    return os.environ["MIGRATION_VERSION"]
"""
)


def test_migration_cache_skips_unchanged_migrations(
    neon: NeonProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "migrations.log"
    monkeypatch.setenv("MIGRATION_LOG", str(log))
    monkeypatch.setenv("MIGRATION_VERSION", "v1")
    neon.pytester.makeconftest(CACHED_CONFTEST)
    neon.pytester.makepyfile(test_schema=USES_SCHEMA.format(n=2))

    def caches() -> list[str]:
        return sorted(n for n in neon.branch_names() if n.startswith("pytest-neon-cache-"))

    cold = neon.run("--neon-worker-branches=1")
    cold.assert_outcomes(passed=3)
    cold.stdout.fnmatch_lines(["*migration cache: miss*"])
    assert len(log.read_text().split()) == 1
    assert len(caches()) == 1

    warm = neon.run("--neon-worker-branches=1")
    warm.assert_outcomes(passed=3)
    warm.stdout.fnmatch_lines(["*branches created: 1,*migration cache: hit*"])
    assert len(log.read_text().split()) == 1  # no migration ran

    monkeypatch.setenv("NEON_MIGRATION_CACHE", "false")
    off = neon.run("--neon-worker-branches=1")
    off.assert_outcomes(passed=3)
    assert len(log.read_text().split()) == 2
    assert "migration cache" not in off.stdout.str()
    monkeypatch.delenv("NEON_MIGRATION_CACHE")

    first = caches()
    for version in ("v2", "v3"):
        monkeypatch.setenv("MIGRATION_VERSION", version)
        neon.run("--neon-worker-branches=1").assert_outcomes(passed=3)
    # the current cache and the newest older one are kept; v1's is pruned
    assert len(caches()) == 2
    assert first[0] not in caches()


def test_migrations_on_the_worker_branch_instead_are_a_clear_error(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An Alembic env.py that takes its URL from application settings imported at start
    # migrates the worker branch: the first reset would silently undo it.
    clean_neon_env(monkeypatch)
    pytester.makeconftest(
        """
        import os
        import psycopg
        import pytest

        URL_AT_IMPORT = os.environ["DATABASE_URL"]

        @pytest.fixture(scope="session")
        def neon_apply_migrations(neon_migration_branch):
            with psycopg.connect(URL_AT_IMPORT) as conn:
                conn.execute("CREATE TABLE users (id int)")
        """
    )
    pytester.makepyfile(test_x="def test_x(neon_branch_readwrite): pass")
    result = run_local(pytester, postgres_url)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["pytest-neon: neon_apply_migrations changed nothing on the migration branch, but "
         "this worker's branch changed*"]
    )  # fmt: skip
