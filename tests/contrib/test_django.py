"""pytest_neon.contrib.django: inner pytest-django runs of a small Django project on the emulator.

Each test writes a Django project (settings that do NOT point at the branch, an app with a
schema migration and a data migration) and runs pytest in a subprocess against an emulated
Neon project over the suite's real PostgreSQL.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import psycopg
import pytest

from tests.support.pytest_runs import NeonProject, run_local

SETTINGS = """
SECRET_KEY = "inner-project"
INSTALLED_APPS = ["django.contrib.contenttypes", "shelf"]
ROOT_URLCONF = "innersite.urls"
ALLOWED_HOSTS = ["localhost"]
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Nothing here points at the branch: the plugin rewrites these entries.
_PRODUCTION = {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": "production",
    "HOST": "db.invalid",
    "PORT": "6543",
    "USER": "app",
    "PASSWORD": "not-the-branch",
    "OPTIONS": {"sslmode": "require", "application_name": "inner-django"},
}
DATABASES = {"default": dict(_PRODUCTION), "other": dict(_PRODUCTION)}
"""

URLS = """
from django.http import JsonResponse
from django.urls import path

from shelf.models import Shelf


def shelves(request):
    return JsonResponse({"shelves": sorted(Shelf.objects.values_list("name", flat=True))})


urlpatterns = [path("shelves/", shelves)]
"""

MODELS = """
from django.db import models


class Shelf(models.Model):
    name = models.CharField(max_length=100, unique=True)


class Book(models.Model):
    shelf = models.ForeignKey(Shelf, on_delete=models.CASCADE, related_name="books")
    title = models.CharField(max_length=100)
"""

INITIAL = """
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Shelf",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=100, unique=True)),
            ],
        ),
        migrations.CreateModel(
            name="Book",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("title", models.CharField(max_length=100)),
                ("shelf", models.ForeignKey(
                    on_delete=models.deletion.CASCADE, related_name="books", to="shelf.shelf"
                )),
            ],
        ),
    ]
"""

SEED = """
import os

from django.db import migrations


def seed(apps, schema_editor):
    with open(os.environ["MIGRATION_LOG"], "a") as log:
        log.write(schema_editor.connection.settings_dict["NAME"] + "\\n")
    apps.get_model("shelf", "Shelf").objects.create(name="seeded")


class Migration(migrations.Migration):
    dependencies = [("shelf", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
"""

INI = """
[pytest]
DJANGO_SETTINGS_MODULE = innersite.settings
pythonpath = .
addopts = --strict-markers --strict-config {addopts}
filterwarnings = error
neon_django_databases = default other
neon_migration_cache = {cache}
{extra}
"""

ENABLE = 'pytest_plugins = ["pytest_neon.contrib.django"]\n'
# docs/django.md shows this line (its other way to enable the integration)
ENABLE_INI = """
addopts = -p pytest_neon.contrib.django
""".strip()

HELPERS = """
import os

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pytest_neon.integration import current_session


def branch(config):
    return current_session(config).worker_branch


def server_test_databases():
    # the test databases Django would make for the aliases here: test_production, test_nb_...
    with psycopg.connect(os.environ["SUPERUSER_URL"]) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database"
            r" WHERE datname LIKE 'test\\_production%' OR datname LIKE 'test\\_nb\\_%'"
        )
        return {r[0] for r in rows}


def committed_names(dsn):
    with psycopg.connect(dsn) as conn:
        return sorted(r[0] for r in conn.execute("SELECT name FROM shelf_shelf"))
"""

# Tests that use the database in every way pytest-django offers, in one inner run.
FULL_SUITE = """
import json
import urllib.request

import django.test
import pytest
from django.conf import settings
from django.db import connections
from psycopg.conninfo import conninfo_to_dict

from inner_helpers import branch, committed_names, server_test_databases
from shelf.models import Book, Shelf


def names():
    return sorted(Shelf.objects.values_list("name", flat=True))


@pytest.mark.django_db(databases=["default", "other"])
def test_databases_point_at_the_branch(request):
    params = conninfo_to_dict(branch(request.config).connection_string)
    for alias in ("default", "other"):
        entry = settings.DATABASES[alias]
        got = (entry["HOST"], str(entry["PORT"]), entry["NAME"], entry["USER"], entry["PASSWORD"])
        assert got == (
            params["host"], str(params["port"]), params["dbname"], params["user"],
            params["password"],
        )
        assert entry["TEST"]["NAME"] == params["dbname"]
        assert entry["OPTIONS"] == {"application_name": "inner-django"}
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT current_database(), current_setting('application_name')")
            assert cursor.fetchone() == (params["dbname"], "inner-django")


@pytest.mark.django_db
def test_db_1_writes_inside_its_transaction():
    shelf = Shelf.objects.create(name="rolled back")
    Book.objects.create(shelf=shelf, title="Dune")
    assert names() == ["rolled back", "seeded"]


@pytest.mark.django_db
def test_db_2_sees_only_the_migrated_state():
    assert names() == ["seeded"]
    assert Book.objects.count() == 0


def test_db_3_fixture(db):
    Shelf.objects.create(name="via the db fixture")


@pytest.mark.django_db(databases=["default", "other"])
def test_db_4_both_aliases_are_the_branch():
    Shelf.objects.using("other").create(name="on other")
    assert Shelf.objects.using("other").filter(name="on other").exists()
    assert names() == ["seeded"]  # the other alias's transaction is not committed


@pytest.mark.django_db(transaction=True)
def test_tx_1_commits(request):
    Shelf.objects.create(name="committed")
    assert committed_names(branch(request.config).connection_string) == ["committed", "seeded"]


@pytest.mark.django_db(transaction=True)
def test_tx_2_commits_are_gone_and_nothing_was_flushed():
    assert names() == ["seeded"]


def test_tx_3_transactional_db_fixture(transactional_db):
    Shelf.objects.all().delete()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_tx_4_serialized_rollback():
    assert names() == ["seeded"]
    Shelf.objects.create(name="serialized")


def test_tx_5_live_server_sees_the_branch(live_server):
    Shelf.objects.create(name="made by the test")
    with urllib.request.urlopen(live_server.url + "/shelves/", timeout=10) as response:
        assert json.load(response) == {"shelves": ["made by the test", "seeded"]}


class TestDjangoTestCase(django.test.TestCase):
    def test_a_writes(self):
        Shelf.objects.create(name="in a TestCase")

    def test_b_rolled_back(self):
        self.assertEqual(names(), ["seeded"])


class TestDjangoTransactionTestCase(django.test.TransactionTestCase):
    def test_a_commits(self):
        Shelf.objects.create(name="in a TransactionTestCase")

    def test_b_reset_not_flushed(self):
        self.assertEqual(names(), ["seeded"])


def test_zz_blocker_and_no_test_databases(django_db_setup, django_db_blocker):
    with pytest.raises(RuntimeError, match="Database access not allowed"):
        Shelf.objects.count()
    with django_db_blocker.unblock():
        assert names() == ["seeded"]
    assert server_test_databases() == set()
"""

DB_ONLY = """
import pytest
from django.db import connection

from inner_helpers import branch
from shelf.models import Shelf


@pytest.mark.parametrize("n", range(12))
def test_db(db, request, n):
    name = branch(request.config).database_name
    assert connection.settings_dict["TEST"]["NAME"] == connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        real = cursor.fetchone()[0]
    assert "_gw" not in real and not real.startswith("test_"), real
    Shelf.objects.create(name=f"shelf {n}")
    assert Shelf.objects.count() == 2
"""


def _project(
    neon: NeonProject,
    *,
    ini: str = "",
    conftest: str = ENABLE,
    addopts: str = "",
    settings: str = "",
    cache: bool = False,
) -> None:
    root = neon.pytester.path
    for package, files in {
        "innersite": {"settings.py": SETTINGS + settings, "urls.py": URLS},
        "shelf": {"models.py": MODELS},
        "shelf/migrations": {"0001_initial.py": INITIAL, "0002_seed.py": SEED},
    }.items():
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
        for name, text in files.items():
            (root / package / name).write_text(text.lstrip())
    (root / "inner_helpers.py").write_text(HELPERS.lstrip())
    (root / "conftest.py").write_text(conftest)
    (root / "pytest.ini").write_text(
        INI.format(extra=ini, addopts=addopts, cache=str(cache).lower()).lstrip()
    )


def _resets(result: pytest.RunResult) -> int:
    match = re.search(r"resets: (\d+) done", result.stdout.str())
    assert match, result.stdout.str()
    return int(match.group(1))


def _test_databases(postgres_url: str, like: str = "test%") -> set[str]:
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (like,))
        return {r[0] for r in rows}


@pytest.fixture
def migration_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the inner project's data migration appends the migrated database to."""
    log = tmp_path / "migrations.log"
    log.write_text("")
    monkeypatch.setenv("MIGRATION_LOG", str(log))
    return log


def test_every_pytest_django_fixture_on_the_branch(
    neon: NeonProject, migration_log: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _project(neon)
    neon.pytester.makepyfile(test_full=FULL_SUITE)
    monkeypatch.setenv("SUPERUSER_URL", postgres_url)
    before_branches = neon.branch_names()
    result = neon.run("--neon-worker-branches=1", "-v")
    result.assert_outcomes(passed=15)
    result.stdout.fnmatch_lines(
        ["neon-django: DATABASES default, other on the branch; migrate once per run"]
    )
    # migrate ran once, on the migration branch (not on the worker branch the tests used)
    migrated = migration_log.read_text().split()
    assert len(migrated) == 1
    result.stdout.fnmatch_lines(["*branches created: 2,*"])
    # one reset to adopt the migrated state, then at most one per test with committed data
    # (5 pytest style, 2 TransactionTestCase): the 7 rolled-back tests spent none
    assert _resets(result) <= 1 + 7
    # Django made no test_<name> database (from the settings or from the branch's name)
    assert not _test_databases(postgres_url, r"test\_production%")
    assert not _test_databases(postgres_url, r"test\_nb\_%")
    assert neon.branch_names() == before_branches


LEAN = """
import django.test
import pytest


@pytest.mark.django_db
def test_pytest_style(request):
    names = request.node.fixturenames
    assert names[0] == "_neon_checkout_first"
    assert "_neon_django_unittest" not in names
    assert "_neon_django_unittest_class" not in names
    # no hook of the plugin wraps fixture setups once the tests have the migrated state
    impls = request.config.pluginmanager.hook.pytest_fixture_setup.get_hookimpls()
    assert [i.plugin_name for i in impls if "neon" in i.plugin_name] == []


class TestCaseStyle(django.test.TestCase):
    def test_keeps_its_fixtures(self):
        pass


def test_unittest_fixtures_kept(request):
    (item,) = [i for i in request.session.items if i.name == "test_keeps_its_fixtures"]
    assert "_neon_django_unittest" in item.fixturenames
"""


def test_pytest_style_tests_skip_the_unittest_fixtures_and_migrations_hook(
    neon: NeonProject, migration_log: Path
) -> None:
    _project(neon)
    neon.pytester.makepyfile(test_lean=LEAN)
    neon.run().assert_outcomes(passed=3)
    assert len(migration_log.read_text().split()) == 1  # (migrated through the hook)


def test_under_xdist_one_migration_and_one_branch_per_worker(
    neon: NeonProject, migration_log: Path, postgres_url: str
) -> None:
    _project(neon)
    neon.pytester.makepyfile(test_db_only=DB_ONLY)
    before = neon.branch_names()
    result = neon.run("--neon-worker-branches=1", "-n", "3")
    result.assert_outcomes(passed=12)
    assert len(migration_log.read_text().split()) == 1
    # three worker branches and the migration branch
    result.stdout.fnmatch_lines(["*branches created: 4,*"])
    # at most one reset per worker (adopting the migrated state); 12 writing tests, no more
    assert _resets(result) <= 3
    assert not _test_databases(postgres_url, r"test\_%\_gw%")
    assert neon.branch_names() == before


def test_no_migrations_and_an_alias_off_the_branch(
    neon: NeonProject, migration_log: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # enabled from addopts this time, instead of the conftest line
    legacy = """
import os
import dj_database_url

DATABASES["legacy"] = {**dj_database_url.parse(os.environ["SUPERUSER_URL"]), "NAME": "legacy"}
"""
    _project(neon, addopts=ENABLE_INI.partition(" = ")[2], conftest="", settings=legacy)
    monkeypatch.setenv("SUPERUSER_URL", postgres_url)
    neon.pytester.makepyfile(
        test_plain="""
        import pytest
        from django.db import connections

        from shelf.models import Shelf

        def test_tables_without_the_data_migration(db):
            assert Shelf.objects.count() == 0
            Shelf.objects.create(name="x")

        @pytest.mark.django_db(databases=["default", "legacy"])
        def test_an_alias_off_the_branch_gets_a_usual_test_database():
            with connections["legacy"].cursor() as cursor:
                cursor.execute("SELECT current_database()")
                assert cursor.fetchone() == ("test_legacy",)
            assert Shelf.objects.using("legacy").count() == 0
        """
    )
    result = neon.run("--no-migrations")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*tables from models once per run (--no-migrations)*"])
    assert migration_log.read_text() == ""
    assert "test_legacy" not in _test_databases(postgres_url)


def test_a_conftest_override_migrates_the_migration_branch_through_django(
    neon: NeonProject, migration_log: Path
) -> None:
    # The earlier plugin's documented pattern: call_command in the user's own override.
    override = (
        ENABLE
        + """
import pytest
from django.core.management import call_command


@pytest.fixture(scope="session")
def neon_apply_migrations(neon_migration_branch):
    call_command("migrate", "--noinput")
    call_command("loaddata", "reference_data.json")   # every test starts with it
"""
    )  # the lines of docs/django.md
    _project(neon, conftest=override)
    fixtures = neon.pytester.path / "shelf" / "fixtures"
    fixtures.mkdir()
    (fixtures / "reference_data.json").write_text(
        '[{"model": "shelf.shelf", "pk": 100, "fields": {"name": "reference"}}]'
    )
    neon.pytester.makepyfile(
        test_plain="""
        import pytest
        from shelf.models import Shelf

        @pytest.mark.parametrize("n", range(2))
        def test_seeded(transactional_db, n):
            names = sorted(Shelf.objects.values_list("name", flat=True))
            assert names == ["reference", "seeded"]
            Shelf.objects.all().delete()
        """
    )
    before = neon.branch_names()
    result = neon.run("--neon-worker-branches=1")
    result.assert_outcomes(passed=2)
    # the override ran on the migration branch (the database Django migrated is not the
    # worker's), and the migration branch was then the source of the worker branch
    assert len(migration_log.read_text().split()) == 1
    result.stdout.fnmatch_lines(["*branches created: 2,*"])
    assert neon.branch_names() == before


def test_migrate_off_spends_no_migration_branch(neon: NeonProject, migration_log: Path) -> None:
    _project(neon, ini="neon_django_migrate = false")
    neon.pytester.makepyfile(
        test_plain="""
        import pytest
        from django.db import ProgrammingError

        from shelf.models import Shelf

        def test_no_tables(db):
            with pytest.raises(ProgrammingError):
                Shelf.objects.count()
        """
    )
    result = neon.run("--neon-worker-branches=1")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*; no migrations (neon_django_migrate = false)*", "*branches created: 1,*"]
    )
    assert migration_log.read_text() == ""


def test_without_pytest_django_a_one_line_error(neon: NeonProject) -> None:
    _project(neon)
    neon.pytester.makepyfile(test_plain="def test_x():\n    pass\n")
    before = neon.branch_names()
    result = neon.run("-p", "no:django")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: pytest_neon.contrib.django needs Django and pytest-django: "
            'pip install "pytest-neon[django]"'
        ]
    )
    assert neon.branch_names() == before


def test_database_settings_from_a_neon_connection_string() -> None:
    from pytest_neon.contrib.django import database_settings

    dsn = (
        "postgresql://neondb_owner:npg_secret@ep-cool-dawn-123456.us-east-2.aws.neon.tech"
        "/neondb?sslmode=require&channel_binding=require"
    )
    current = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": "db.sqlite3",
        "ATOMIC_REQUESTS": True,
        "OPTIONS": {"service": "prod", "isolation_level": 1},
        "TEST": {"MIRROR": None},
    }
    entry = database_settings(dsn, current)
    assert entry == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "neondb",
        "USER": "neondb_owner",
        "PASSWORD": "npg_secret",
        "HOST": "ep-cool-dawn-123456.us-east-2.aws.neon.tech",
        "PORT": "",
        "ATOMIC_REQUESTS": True,
        "OPTIONS": {"isolation_level": 1, "sslmode": "require", "channel_binding": "require"},
        "TEST": {"MIRROR": None, "NAME": "neondb"},
        "CONN_HEALTH_CHECKS": True,
    }
    assert current["ENGINE"] == "django.db.backends.sqlite3"  # the input is left as it was
    assert current["OPTIONS"] == {"service": "prod", "isolation_level": 1}


def test_unchanged_migrations_are_not_run_again(neon: NeonProject, migration_log: Path) -> None:
    _project(neon, cache=True)
    neon.pytester.makepyfile(test_db_only=DB_ONLY)
    cold = neon.run("--neon-worker-branches=1")
    cold.assert_outcomes(passed=12)
    cold.stdout.fnmatch_lines(["*migration cache: miss*"])
    warm = neon.run("--neon-worker-branches=1")
    warm.assert_outcomes(passed=12)  # the seed row of the data migration is there
    warm.stdout.fnmatch_lines(["*branches created: 1,*migration cache: hit*"])
    assert len(migration_log.read_text().split()) == 1
    (neon.pytester.path / "shelf" / "migrations" / "0003_noop.py").write_text(
        "from django.db import migrations\n\n"
        "class Migration(migrations.Migration):\n"
        "    dependencies = [('shelf', '0002_seed')]\n"
        "    operations = []\n"
    )
    changed = neon.run("--neon-worker-branches=1")
    changed.assert_outcomes(passed=12)
    changed.stdout.fnmatch_lines(["*migration cache: miss*"])
    assert len(migration_log.read_text().split()) == 2
    # MIGRATION_MODULES moves them: the same files elsewhere are the same migrations; a
    # change there (not in the old package) is a change
    root = neon.pytester.path
    shutil.copytree(root / "shelf" / "migrations", root / "shelf" / "moved")
    with (root / "innersite" / "settings.py").open("a") as settings:
        settings.write('\nMIGRATION_MODULES = {"shelf": "shelf.moved"}\n')
    moved = neon.run("--neon-worker-branches=1")
    moved.assert_outcomes(passed=12)
    moved.stdout.fnmatch_lines(["*migration cache: hit*"])
    with (root / "shelf" / "moved" / "0003_noop.py").open("a") as migration:
        migration.write("# changed where Django finds it\n")
    edited = neon.run("--neon-worker-branches=1")
    edited.assert_outcomes(passed=12)
    edited.stdout.fnmatch_lines(["*migration cache: miss*"])
    assert len(migration_log.read_text().split()) == 3


ROTATING = """
import os

import pytest
from django.db import connection

from shelf.models import Shelf


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("n", range(4))
def test_commits(n):
    assert sorted(Shelf.objects.values_list("name", flat=True)) == ["seeded"]
    Shelf.objects.create(name=f"committed {n}")
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        database = cursor.fetchone()[0]
    with open(os.environ["ROTATION_LOG"], "a") as log:
        log.write(database + "\\n")
"""


def test_django_follows_the_worker_branches_in_turn(
    neon: NeonProject, migration_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    neon.emulator.configure_faults(operation_delay=0.3)  # a reset outlasts the next test
    rotation = tmp_path / "rotation.log"
    monkeypatch.setenv("ROTATION_LOG", str(rotation))
    _project(neon)
    neon.pytester.makepyfile(test_rotating=ROTATING)
    before = neon.branch_names()
    result = neon.run("--neon-worker-branches=2")
    result.assert_outcomes(passed=4)  # each saw only the migrated state
    used = rotation.read_text().split()
    assert len(set(used)) == 2  # Django's connections followed the branch each test got
    assert neon.branch_names() == before


TRANSACTIONAL_READS = """
import json
import urllib.request

import django.test
import pytest

from shelf.models import Shelf


def names():
    return sorted(Shelf.objects.values_list("name", flat=True))


@pytest.mark.django_db(transaction=True)
def test_1_reads():
    assert names() == ["seeded"]


@pytest.mark.django_db(transaction=True)
def test_2_writes():
    Shelf.objects.create(name="committed")


def test_3_fixture_reads(transactional_db):
    assert names() == ["seeded"]


def test_4_live_server_reads(live_server):
    with urllib.request.urlopen(live_server.url + "/shelves/", timeout=10) as response:
        assert json.load(response) == {"shelves": ["seeded"]}


@pytest.mark.django_db
def test_5_rolled_back():
    Shelf.objects.create(name="rolled back")


@pytest.mark.django_db(transaction=True)
def test_6_reads_after_a_rolled_back_test():
    assert names() == ["seeded"]


class TestTransactionTestCase(django.test.TransactionTestCase):
    def test_a_reads(self):
        self.assertEqual(names(), ["seeded"])

    def test_b_writes(self):
        Shelf.objects.create(name="in a TransactionTestCase")

    def test_c_reads(self):
        self.assertEqual(names(), ["seeded"])


class TestAvailableApps(django.test.TransactionTestCase):
    available_apps = ["shelf"]

    def test_reads(self):
        self.assertEqual(names(), ["seeded"])
"""


def test_transactional_tests_that_only_read_keep_the_branch(
    neon: NeonProject, migration_log: Path, postgres_url: str
) -> None:
    # the local backend: pg_walinspect tells the branch's own writes apart, so counts are exact
    _project(neon)
    neon.pytester.makepyfile(test_transactional=TRANSACTIONAL_READS)
    result = run_local(neon.pytester, postgres_url, "-v")
    result.assert_outcomes(passed=10)
    # two tests committed; the seven other transactional tests read only, and the
    # rolled-back test needs no check
    result.stdout.fnmatch_lines(["*resets: 2 done / 7 skipped*"])


FROM_DATABASE_URL = """
import os

import dj_database_url

DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"])}
"""

WITHOUT_INTEGRATION = """
import pytest
from django.db import connection

from shelf.models import Shelf


def test_db(db):
    assert connection.settings_dict["NAME"].startswith("test_nb_")
    Shelf.objects.create(name="x")
    assert Shelf.objects.filter(name="seeded").exists()


@pytest.mark.django_db(transaction=True)
def test_transactional():
    Shelf.objects.create(name="y")
"""


@pytest.mark.parametrize("reuse", [False, True])
def test_installed_but_not_enabled_django_makes_its_own_test_database(
    neon: NeonProject, migration_log: Path, postgres_url: str, reuse: bool
) -> None:
    # No integration line: pytest-django creates test_<branch database> on the branch's
    # server, as the branch's owner role may (as on Neon); it goes with the branch.
    _project(neon, conftest="", settings=FROM_DATABASE_URL)
    neon.pytester.makefile(
        ".ini",
        pytest="[pytest]\nDJANGO_SETTINGS_MODULE = innersite.settings\npythonpath = .\n"
        "filterwarnings = error\n",
    )
    neon.pytester.makepyfile(test_plain=WITHOUT_INTEGRATION)
    args = ["--reuse-db"] if reuse else []
    result = run_local(neon.pytester, postgres_url, *args)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["neon: pytest-django runs without pytest_neon.contrib.django*"])
    assert len(migration_log.read_text().split()) == 1  # Django migrated its own database
    assert not _test_databases(postgres_url, r"test\_nb\_%")


MIRROR = """
DATABASES["replica"] = {**_PRODUCTION, "TEST": {"MIRROR": "default"}}
"""


def test_the_header_names_the_mirrors_that_follow_the_branch(
    neon: NeonProject, migration_log: Path
) -> None:
    _project(neon, settings=MIRROR)
    (neon.pytester.path / "pytest.ini").write_text(
        (neon.pytester.path / "pytest.ini")
        .read_text()
        .replace("neon_django_databases = default other", "neon_django_databases = default")
    )
    neon.pytester.makepyfile(
        test_mirror="""
        import pytest
        from shelf.models import Shelf

        @pytest.mark.django_db(databases=["default", "replica"])
        def test_the_replica_reads_the_branch():
            assert Shelf.objects.using("replica").filter(name="seeded").exists()
        """
    )
    result = neon.run()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["neon-django: DATABASES default (replica: test mirror) on the branch; migrate*"]
    )


KEEP_FAILED = """
import pytest
from shelf.models import Shelf


@pytest.mark.django_db(transaction=True)
def test_commits_then_fails():
    Shelf.objects.create(name="evidence")
    assert False


@pytest.mark.django_db
def test_rolls_back_then_fails():
    Shelf.objects.create(name="never committed")
    assert False
"""


def test_a_failing_django_test_keeps_what_it_committed(
    neon: NeonProject, migration_log: Path
) -> None:
    """``--neon-keep-failed`` with pytest-django: a transactional test's committed rows are
    kept with the migrated data; a test inside Django's rolled-back transaction keeps
    nothing (no copy could show its work)."""
    _project(neon)
    neon.pytester.makepyfile(test_keep=KEEP_FAILED)
    result = neon.run("--neon-keep-failed", "--neon-worker-branches=1", "-p", "no:randomly")
    result.assert_outcomes(failed=2)
    kept = [b for b in neon.branches() if str(b["name"]).startswith("pytest-neon-failed-")]
    assert [str(b["name"]).split("-test_keep-")[1].rsplit("-", 1)[0] for b in kept] == [
        "test_commits_then_fails"
    ]
    with psycopg.connect(neon.uri(str(kept[0]["id"]))) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM shelf_shelf ORDER BY name")]
    assert names == ["evidence", "seeded"]
    result.stdout.fnmatch_lines(["*kept the data of 1 failing test(s)*"])
