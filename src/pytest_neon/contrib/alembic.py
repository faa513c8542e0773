"""Alembic integration: ``alembic upgrade head`` on the migration branch, once per run.

Enable it in the top ``conftest.py`` and name the Alembic configuration in the pytest ini::

    pytest_plugins = ["pytest_neon.contrib.alembic"]

    [tool.pytest.ini_options]
    neon_alembic_ini = "alembic.ini"      # the default; relative to the pytest ini file

It overrides ``neon_apply_migrations``: the upgrade runs once per run, also under
pytest-xdist, and every test branch starts from its result. It also overrides
``neon_migration_fingerprint`` with a hash of the migration files, so with the migration
cache on, a run whose migrations did not change runs none. ``env.py`` may read
``DATABASE_URL`` (it points at the migration branch meanwhile), ``sqlalchemy.url`` (set
to the migration branch) or take the connection passed in ``config.attributes["connection"]``.
A failing migration stops the run with Alembic's error, where it happened, once.

PYTEST_DONT_REWRITE (a plugin module that ``conftest.py`` may also import from).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import Engine, create_engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from pytest_neon.contrib._hashing import hash_files
from pytest_neon.neon_branch import NeonBranch, sqlalchemy_url
from pytest_neon.redact import redact

__all__ = [
    "INI_KEY",
    "alembic_ini_path",
    "fingerprint",
    "neon_apply_migrations",
    "neon_migration_fingerprint",
    "upgrade",
]

INI_KEY = "neon_alembic_ini"
DEFAULT_INI = "alembic.ini"


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ini key naming the Alembic configuration file."""
    parser.addini(
        INI_KEY,
        "Alembic configuration file that pytest_neon.contrib.alembic upgrades to head on the "
        f"migration branch, relative to the pytest ini file (default {DEFAULT_INI})",
        default=None,
    )


def alembic_ini_path(config: pytest.Config) -> Path:
    """The Alembic configuration this run uses (``neon_alembic_ini``, else ``alembic.ini``)."""
    __tracebackhide__ = True
    value = config.getini(INI_KEY)
    base = config.inipath.parent if config.inipath is not None else config.rootpath
    path = base / (str(value) if value else DEFAULT_INI)
    if not path.is_file():
        where = f"{INI_KEY} = {value}" if value else f"no {INI_KEY} ini key, and the default"
        pytest.fail(
            f"pytest-neon: Alembic configuration not found: {where} -> {path} does not exist. "
            f"Set {INI_KEY} (relative to {base}) in the pytest configuration.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def neon_migration_fingerprint(pytestconfig: pytest.Config) -> str:
    """A hash of the Alembic configuration and every file of its script directory.

    With the migration cache on (``neon_migration_cache``, default true), a run whose
    migration files did not change starts from the cached migrated branch and runs none.
    """
    return fingerprint(alembic_ini_path(pytestconfig))


def fingerprint(ini_path: str | Path, revision: str = "head") -> str:
    """A hash of ``ini_path``, the files under its ``script_location`` and ``revision``.

    Override ``neon_migration_fingerprint`` with it plus whatever else your migrations
    read (seed files, application constants) if that can change without the scripts.
    """
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    ini = Path(ini_path).resolve()
    with contextlib.chdir(ini.parent):
        scripts = Path(ScriptDirectory.from_config(Config(str(ini))).dir).resolve()
    digest = hashlib.sha256(f"alembic\0{revision}\0".encode())
    digest.update(ini.read_bytes())
    hash_files(digest, scripts, "*", lambda relative: f"\0{relative.as_posix()}\0", _is_script)
    return digest.hexdigest()


def _is_script(path: Path) -> bool:
    """A file of the script directory that the fingerprint covers (no bytecode)."""
    return path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"


@pytest.fixture(scope="session")
def neon_apply_migrations(neon_migration_branch: NeonBranch, pytestconfig: pytest.Config) -> None:
    """``alembic upgrade head`` on the migration branch, once per run."""
    upgrade(neon_migration_branch, alembic_ini_path(pytestconfig))


def upgrade(branch: NeonBranch, ini_path: str | Path, revision: str = "head") -> None:
    """Upgrade ``branch`` to ``revision`` with the Alembic configuration at ``ini_path``.

    Runs in the configuration's directory, with ``sqlalchemy.url`` set to the branch and an
    open connection to it in ``config.attributes["connection"]`` (committed at the end).
    Any failure becomes one ``pytest.fail`` naming the migration file and line and
    Alembic's error. For custom ``neon_apply_migrations`` overrides (e.g. seed data after).
    """
    __tracebackhide__ = True
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    ini = Path(ini_path).resolve()
    if not ini.is_file():
        pytest.fail(
            f"pytest-neon: Alembic configuration not found: {ini} does not exist (a relative "
            "path is taken from the current directory; alembic_ini_path(pytestconfig) gives "
            f"the one the {INI_KEY} ini key names, relative to the pytest ini file)",
            pytrace=False,
        )
    url = sqlalchemy_url(branch.connection_string)
    before = set(sys.modules)
    engine = create_engine(url, poolclass=NullPool)
    failure: str | None = None
    try:
        with contextlib.chdir(ini.parent):
            cfg = Config(str(ini))
            cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
            try:
                with engine.connect() as connection:
                    cfg.attributes["connection"] = connection
                    command.upgrade(cfg, revision)
                    connection.commit()
            except Exception as exc:
                try:
                    scripts = Path(ScriptDirectory.from_config(cfg).dir).resolve()
                except Exception:
                    scripts = ini.parent
                failure = _describe(exc, revision, ini, scripts)
    finally:
        engine.dispose()
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    stray = _engines_on(branch, [m for name, m in sys.modules.items() if name not in before])
    if stray:
        pytest.fail(
            "pytest-neon: migrations imported application code that built an engine on the "
            f"migration branch: {', '.join(stray)}. Tests would use that branch (the one every "
            "reset restores from). Import these modules in conftest.py, so they are imported "
            "before migrations run and their engines are built on the test branch.",
            pytrace=False,
        )


def _describe(exc: BaseException, revision: str, ini: Path, scripts: Path) -> str:
    """One message: what failed, where in the migration scripts, and Alembic's error."""
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    in_scripts = [f for f in frames if _is_under(f.filename, scripts)]
    revisions = [f for f in in_scripts if Path(f.filename).name != "env.py"]
    chosen = revisions or in_scripts
    if chosen:
        frame = chosen[-1]
        shown = os.path.relpath(Path(frame.filename).resolve(), ini.parent)
        where = f"\n  at {shown}, line {frame.lineno}, in {frame.name}"
        if frame.line:
            where += f": {frame.line.strip()}"
    return redact(
        f"pytest-neon: alembic upgrade {revision} failed on the migration branch "
        f"(configuration {ini}){where}\n  {type(exc).__name__}: {exc}"
    )


def _is_under(filename: str, directory: Path) -> bool:
    try:
        return Path(filename).resolve().is_relative_to(directory)
    except (OSError, ValueError):
        return False


def _engines_on(branch: NeonBranch, modules: list[ModuleType | None]) -> list[str]:
    """``module.name`` of the engines in ``modules`` that point at ``branch``."""
    target = make_url(sqlalchemy_url(branch.connection_string))
    key = (target.host, target.port, target.database)
    found: list[str] = []
    for module in modules:
        for name, value in list(_attributes(module)):
            engine = value.sync_engine if isinstance(value, AsyncEngine) else value
            if not isinstance(engine, Engine):
                continue
            url = engine.url
            if (url.host, url.port, url.database) == key:
                found.append(f"{getattr(module, '__name__', '?')}.{name}")
    return found


def _attributes(module: ModuleType | None) -> Iterator[tuple[str, object]]:
    try:
        yield from vars(module).items()
    except TypeError:
        return
