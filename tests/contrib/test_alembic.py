"""pytest_neon.contrib.alembic: upgrade head once per run, three env.py styles, clear failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_neon.contrib.alembic import fingerprint
from tests.support.pytest_runs import NeonProject, times_reported

ALEMBIC_INI = """
[alembic]
script_location = migrations
sqlalchemy.url = driver://user:pass@localhost/dbname
"""

# env.py styles users have: the connection the caller passes, DATABASE_URL, sqlalchemy.url.
ENV_PY = {
    "attributes": """
from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection)
with context.begin_transaction():
    context.run_migrations()
""",
    "database_url": """
import os
from alembic import context
from sqlalchemy import create_engine, pool

url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
with create_engine(url, poolclass=pool.NullPool).connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
""",
    "ini_url": """
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
engine = engine_from_config(
    config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
    poolclass=pool.NullPool,
)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
""",
}

REV_1 = """
import os, pathlib
from alembic import op

revision = "0001"
down_revision = None

def upgrade():
    with pathlib.Path(os.environ["MIGRATION_LOG"]).open("a") as log:
        log.write("0001\\n")
    op.execute("CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE NOT NULL)")
"""

REV_2 = """
from alembic import op

revision = "0002"
down_revision = "0001"

def upgrade():
    op.execute("ALTER TABLE users ADD COLUMN name text NOT NULL DEFAULT ''")
"""

BROKEN_REV_2 = """
from alembic import op

revision = "0002"
down_revision = "0001"

def upgrade():
    op.execute("ALTER TABLE no_such_table ADD COLUMN name text")
"""

TESTS = """
import os
import psycopg
import pytest

@pytest.mark.parametrize("n", range({n}))
def test_schema_is_at_head(neon_branch_readwrite, n):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0002",)]
        conn.execute("INSERT INTO users (email, name) VALUES ('a@example.com', 'A')")
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)
"""


def _project(neon: NeonProject, env_py: str, rev_2: str = REV_2) -> None:
    root = neon.pytester.path
    (root / "db" / "migrations" / "versions").mkdir(parents=True)
    (root / "db" / "alembic.ini").write_text(ALEMBIC_INI)
    (root / "db" / "migrations" / "env.py").write_text(env_py)
    (root / "db" / "migrations" / "versions" / "0001_users.py").write_text(REV_1)
    (root / "db" / "migrations" / "versions" / "0002_names.py").write_text(rev_2)
    neon.pytester.makeini("[pytest]\nneon_alembic_ini = db/alembic.ini\n")
    neon.pytester.makeconftest('pytest_plugins = ["pytest_neon.contrib.alembic"]\n')


@pytest.fixture
def migration_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file each run of revision 0001 appends a line to."""
    log = tmp_path / "migrations.log"
    monkeypatch.setenv("MIGRATION_LOG", str(log))
    return log


def _new_branches(neon: NeonProject, before: set[str]) -> set[str]:
    """Branches left behind by a run, other than the migration cache it keeps on purpose."""
    return {n for n in neon.branch_names() - before if not n.startswith("pytest-neon-cache-")}


# The database_url style runs in the xdist test below.
@pytest.mark.parametrize("style", ["attributes", "ini_url"])
def test_upgrade_head_runs_once_with_each_env_py_style(
    neon: NeonProject, migration_log: Path, style: str
) -> None:
    _project(neon, ENV_PY[style])
    neon.pytester.makepyfile(test_schema=TESTS.format(n=1))
    before = neon.branch_names()
    result = neon.run(subprocess=True)
    result.assert_outcomes(passed=1)
    assert migration_log.read_text().split() == ["0001"]
    assert _new_branches(neon, before) == set()


def test_upgrade_head_runs_once_under_xdist_and_is_cached_across_runs(
    neon: NeonProject, migration_log: Path
) -> None:
    _project(neon, ENV_PY["database_url"])
    neon.pytester.makepyfile(test_schema=TESTS.format(n=3))
    before = neon.branch_names()

    cold = neon.run("-n", "3", subprocess=True)
    cold.assert_outcomes(passed=3)
    assert migration_log.read_text().split() == ["0001"]
    cold.stdout.fnmatch_lines(["*migration cache: miss*"])

    # Same migration files: the next run starts from the cached migrated branch.
    warm = neon.run(subprocess=True)
    warm.assert_outcomes(passed=3)
    warm.stdout.fnmatch_lines(["*migration cache: hit*"])
    assert migration_log.read_text().split() == ["0001"]

    assert _new_branches(neon, before) == set()


def test_fingerprint_follows_the_migration_files(tmp_path: Path) -> None:
    versions = tmp_path / "migrations" / "versions"
    versions.mkdir(parents=True)
    (tmp_path / "alembic.ini").write_text(ALEMBIC_INI)
    (tmp_path / "migrations" / "env.py").write_text(ENV_PY["attributes"])
    (versions / "0001_users.py").write_text(REV_1)
    first = fingerprint(tmp_path / "alembic.ini")
    (versions / "__pycache__").mkdir()
    (versions / "__pycache__" / "0001_users.cpython-311.pyc").write_bytes(b"compiled")
    assert fingerprint(tmp_path / "alembic.ini") == first
    (versions / "0002_names.py").write_text(REV_2)
    second = fingerprint(tmp_path / "alembic.ini")
    assert second != first
    (versions / "0002_names.py").write_text(REV_2 + "# reviewed\n")
    assert fingerprint(tmp_path / "alembic.ini") not in (first, second)
    assert fingerprint(tmp_path / "alembic.ini", revision="0001") != fingerprint(
        tmp_path / "alembic.ini"
    )


def test_broken_migration_fails_once_with_alembics_error_and_leaves_no_branch(
    neon: NeonProject, migration_log: Path
) -> None:
    _project(neon, ENV_PY["attributes"], rev_2=BROKEN_REV_2)
    neon.pytester.makepyfile(test_schema=TESTS.format(n=4))
    before = neon.branch_names()
    result = neon.run(subprocess=True)
    assert result.ret != 0
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors") == 1
    assert "passed" not in outcomes
    result.stdout.fnmatch_lines(
        [
            "*alembic upgrade head failed on the migration branch*",
            "*at migrations/versions/0002_names.py, line 8, in upgrade:*no_such_table*",
            '*ProgrammingError: (psycopg.errors.UndefinedTable) relation "no_such_table"*',
        ]
    )
    assert times_reported(result, "alembic upgrade head failed") == 1
    assert migration_log.read_text().split() == ["0001"]
    assert neon.branch_names() == before  # not even a cache branch


def test_missing_alembic_ini_names_the_ini_key(neon: NeonProject) -> None:
    neon.pytester.makeconftest('pytest_plugins = ["pytest_neon.contrib.alembic"]\n')
    neon.pytester.makepyfile(
        test_one="""
        def test_db(neon_branch_readwrite):
            pass
        """
    )
    result = neon.run(subprocess=True)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*Alembic configuration not found*Set neon_alembic_ini*"])


def test_upgrade_with_a_missing_file_says_so(neon: NeonProject) -> None:
    neon.pytester.makeconftest(
        """
        import pytest
        from pytest_neon.contrib.alembic import upgrade

        @pytest.fixture(scope="session")
        def neon_apply_migrations(neon_migration_branch):
            upgrade(neon_migration_branch, "elsewhere/alembic.ini")
        """
    )
    neon.pytester.makepyfile(test_one="def test_db(neon_branch_readwrite): pass")
    result = neon.run(subprocess=True)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*Alembic configuration not found: */elsewhere/alembic.ini does not exist*"]
    )


def test_migrations_that_build_the_app_engine_are_refused(
    neon: NeonProject, migration_log: Path
) -> None:
    # env.py imports the application, whose engine comes from DATABASE_URL at import: that
    # engine would point at the migration branch for the rest of the run.
    _project(
        neon,
        "import myapp_db  # noqa\n" + ENV_PY["attributes"],
    )
    neon.pytester.makepyfile(
        myapp_db="""
        import os
        from sqlalchemy import create_engine

        engine = create_engine(
            os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
        )
        """,
        test_schema=TESTS.format(n=1),
    )
    result = neon.run(subprocess=True)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*built an engine on the migration branch: myapp_db.engine*Import these modules*"]
    )
