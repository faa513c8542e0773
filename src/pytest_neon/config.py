"""Settings: one frozen object resolved CLI > environment > ini > default, with sources."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from pytest_neon.errors import NeonConfigError
from pytest_neon.redact import register_secret, repr_without

DEFAULT_API_HOST = "https://console.neon.tech/api/v2"
BACKENDS = ("auto", "neon", "local")
PG_SOURCES = ("auto", "system", "package")
REUSE_CHOICES = ("auto", "true", "false")
MAX_EXPIRY = 30 * 24 * 3600
MAX_WORKER_BRANCHES = 10  # Neon's free plan allows 10 branches in all
#: failing tests' branches kept per run with a bare ``--neon-keep-failed``
KEEP_FAILED_DEFAULT = 5
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRUE = {"1", "true", "yes", "on"}
AUTO = object()  # a setting given as "auto" where the default means the same
_SECRET_FIELDS = frozenset({"api_key", "local_postgres_url"})  # never in a repr
_FALSE = {"0", "false", "no", "off", ""}


class Option(NamedTuple):
    """One row of the settings table."""

    name: str
    flag: str
    env: str
    ini: str | None
    default: Any
    help: str
    kind: str = "str"  # str | bool | int | float | secret | branches (1-10 or auto) | count
    int_hint: str = " of seconds (0 = off)"  # what a whole number means, for int errors
    keep_empty: bool = False  # an empty string is a value, not "not set"


OPTIONS: tuple[Option, ...] = (
    Option("api_key", "--neon-api-key", "NEON_API_KEY", "neon_api_key", None,
           "Neon API key (prefer the environment variable; pytest-neon 3.x read it from "
           "the ini file, which still works with a warning).", "secret"),
    Option("project_id", "--neon-project-id", "NEON_PROJECT_ID", "neon_project_id", None,
           "Neon project id."),
    Option("parent_branch", "--neon-parent-branch", "NEON_PARENT_BRANCH_ID",
           "neon_parent_branch", None,
           "Branch id the test branches come from (default: the project's default branch)."),
    Option("database", "--neon-database", "NEON_DATABASE", "neon_database", "neondb",
           "Database name on the branch."),
    Option("role", "--neon-role", "NEON_ROLE", "neon_role", "neondb_owner",
           "Role (user) to connect as."),
    Option("keep_branches", "--neon-keep-branches", "NEON_KEEP_BRANCHES",
           "neon_keep_branches", False, "Keep the branches after the run.", "bool"),
    Option("branch_expiry", "--neon-branch-expiry", "NEON_BRANCH_EXPIRY",
           "neon_branch_expiry", 600,
           "Seconds after which Neon deletes a branch left behind; 0 = no expiry.", "int",
           int_hint=f" of seconds (0 = no expiry, at most {MAX_EXPIRY} = 30 days)"),
    Option("sweep_after", "--neon-sweep-after", "NEON_SWEEP_AFTER", "neon_sweep_after",
           86400,
           "At the start of a run, delete branches of earlier runs whose expiry passed or, "
           "having none, older than this many seconds; 0 = no sweep.", "int"),
    Option("env_var", "--neon-env-var", "NEON_ENV_VAR", "neon_env_var", "DATABASE_URL",
           "Environment variable that holds the test branch's connection string.",
           keep_empty=True),
    Option("api_host", "--neon-api-host", "NEON_API_HOST", "neon_api_host", DEFAULT_API_HOST,
           "Neon API base URL."),
    Option("api_timeout", "--neon-api-timeout", "NEON_API_TIMEOUT", "neon_api_timeout", 30.0,
           "Seconds one API request waits for an answer; a call (retries included) gives up "
           "after three times that.", "float"),
    Option("backend", "--neon-backend", "NEON_BACKEND", "neon_backend", "auto",
           "neon, local (embedded emulator over a local PostgreSQL) or auto."),
    Option("always_reset", "--neon-always-reset", "NEON_ALWAYS_RESET", "neon_always_reset",
           False, "Reset after every readwrite test, even one that wrote nothing.", "bool"),
    Option("worker_branches", "--neon-worker-branches", "NEON_WORKER_BRANCHES",
           "neon_worker_branches", None,
           "Branches each worker takes turns on: 1-10, or auto (on Neon 2 when the "
           "project's branch limit leaves room, else 1; locally 1). Above 1, a writing "
           "test's reset runs while the next tests use another branch: the connection "
           "string changes between tests.", "branches",
           int_hint=f" from 1 to {MAX_WORKER_BRANCHES}, or auto"),
    Option("migration_cache", "--neon-migration-cache", "NEON_MIGRATION_CACHE",
           "neon_migration_cache", True,
           "Keep the migrated branch across runs when neon_migration_fingerprint is set.",
           "bool"),
    Option("wait_timeout", "--neon-wait-timeout", "NEON_WAIT_TIMEOUT", "neon_wait_timeout",
           300,
           "Seconds a run waits for other runs on the same project: for branches they hold "
           "when the branch limit is reached, and for the migrations another run is "
           "making; 0 = do not wait.", "int"),
    Option("keep_failed", "--neon-keep-failed", "NEON_KEEP_FAILED", "neon_keep_failed", 0,
           "Keep the data of a failing test that wrote (neon_branch_readwrite, Django's and "
           "SQLAlchemy's fixtures) as a branch of its own, at most this many per run: "
           f"true (or the flag alone, =N to give a number) keeps {KEEP_FAILED_DEFAULT}, "
           "0 or false none.", "count",
           int_hint=" of branches (0 = off), true or false"),
    Option("keep_failed_expiry", "--neon-keep-failed-expiry", "NEON_KEEP_FAILED_EXPIRY",
           "neon_keep_failed_expiry", 86400,
           "Seconds a failing test's kept branch (--neon-keep-failed) lives before it is "
           "deleted.", "int", int_hint=f" of seconds (1 to {MAX_EXPIRY} = 30 days)"),
    Option("local_postgres_url", "--neon-local-postgres-url", "NEON_LOCAL_POSTGRES_URL",
           "neon_local_postgres_url", None,
           "PostgreSQL server for the local backend (default: start a throwaway cluster)."),
    Option("local_postgres_source", "--neon-local-postgres-source",
           "NEON_LOCAL_POSTGRES_SOURCE", "neon_local_postgres_source", "auto",
           "Throwaway cluster from: auto (system binaries, else the local extra's PostgreSQL "
           "package), system or package."),
    Option("local_reuse", "--neon-local-reuse", "NEON_LOCAL_REUSE", "neon_local_reuse",
           "auto",
           "Keep one local PostgreSQL per user between runs (true), or start a throwaway "
           "cluster per run (false); auto: true unless the CI variable is set."),
    Option("local_idle_timeout", "--neon-local-idle-timeout", "NEON_LOCAL_IDLE_TIMEOUT",
           "neon_local_idle_timeout", 600,
           "Seconds the kept local PostgreSQL waits unused before it stops.", "int",
           int_hint=" of seconds (at least 10)"),
    Option("local_dir", "--neon-local-dir", "NEON_LOCAL_DIR", "neon_local_dir", None,
           "Where the kept local PostgreSQL lives (default: the user's cache directory)."),
)  # fmt: skip

OPTIONS_BY_NAME = {o.name: o for o in OPTIONS}


class Settings(NamedTuple):
    """The resolved settings of a run (:func:`resolve` makes them; the defaults are in
    ``OPTIONS``); ``sources`` says where each value came from.

    A named tuple, not a dataclass: every run makes this class, and a dataclass's code
    generation costs far more at import (ARCHITECTURE.md, "What a run loads")."""

    api_key: str | None
    project_id: str | None
    parent_branch: str | None
    database: str
    role: str
    keep_branches: bool
    branch_expiry: int
    sweep_after: int
    env_var: str
    api_host: str
    api_timeout: float
    backend: str
    always_reset: bool
    worker_branches: int | None  # None: auto (see pytest_neon.worker_count)
    migration_cache: bool
    wait_timeout: int
    keep_failed: int  # failing tests' branches kept per run (0: off)
    keep_failed_expiry: int
    local_postgres_url: str | None
    local_postgres_source: str
    local_reuse: str
    local_idle_timeout: int
    local_dir: str | None
    sources: Mapping[str, str] = MappingProxyType({})

    def __repr__(self) -> str:
        return repr_without(self, _SECRET_FIELDS)

    def reuse_local_server(self, env: Mapping[str, str]) -> bool:
        """Whether the local backend keeps its PostgreSQL between runs (``auto``: unless
        ``CI`` is set, or a server is given by URL)."""
        if self.local_postgres_url:
            return False
        if self.local_reuse == "auto":
            return not to_bool_or(env.get("CI"), default=bool(env.get("CI")))
        return self.local_reuse == "true"

    @property
    def has_credentials(self) -> bool:
        """True when both an API key and a project id are set."""
        return bool(self.api_key and self.project_id)

    def source(self, name: str) -> str:
        """Where the value of setting ``name`` came from (``default`` when not set)."""
        return self.sources.get(name, "default")

    def describe(self, name: str) -> str:
        """The setting's origin as a user would write it, e.g. ``env NEON_ROLE``."""
        opt = OPTIONS_BY_NAME[name]
        return {
            "cli": opt.flag,
            "env": f"env {opt.env}",
            "ini": f"ini {opt.ini}",
        }.get(self.source(name), "default")


def _where(opt: Option, source: str) -> str:
    return {"cli": opt.flag, "env": opt.env, "ini": f"ini key {opt.ini}"}.get(source, opt.flag)


def to_bool(raw: object, where: str) -> bool:
    """``raw`` (a bool, or text such as ``true``/``0``) as a bool; ``where`` names the
    setting in the error."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise NeonConfigError(f"{where} must be true or false, got {str(raw)!r}")


def to_bool_or(raw: str | None, *, default: bool) -> bool:
    """``raw`` read as a bool, ``default`` when it is no bool literal (``CI=github``)."""
    text = (raw or "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE and raw is not None:
        return False
    return default


def _convert(opt: Option, raw: object, source: str) -> Any:
    if opt.kind == "bool":
        return to_bool(raw, _where(opt, source))
    if opt.kind == "float":
        try:
            return float(str(raw).strip().strip("'\""))
        except ValueError:
            raise NeonConfigError(
                f"{_where(opt, source)} must be a number of seconds, got {str(raw)!r}"
            ) from None
    if opt.kind == "count":
        return _count(opt, raw, source)
    if opt.kind == "branches" and str(raw).strip().strip("'\"").lower() == "auto":
        return AUTO
    if opt.kind in ("int", "branches"):
        if isinstance(raw, bool):  # a TOML true/false: no number
            raw = str(raw).lower()
        try:
            value = int(str(raw).strip().strip("'\""))
        except ValueError:
            raise NeonConfigError(
                f"{_where(opt, source)} must be a whole number{opt.int_hint}, got {str(raw)!r}"
            ) from None
        return value
    text = str(raw).strip()
    return text if text or opt.keep_empty else None


def _count(opt: Option, raw: object, source: str) -> int:
    """A number, or a boolean meaning ``KEEP_FAILED_DEFAULT`` (true) or 0 (false)."""
    if isinstance(raw, bool):
        return KEEP_FAILED_DEFAULT if raw else 0
    text = str(raw).strip().strip("'\"").lower()
    if not text.lstrip("+-").isdigit() and text in _TRUE | _FALSE:  # "1" is a number here
        return KEEP_FAILED_DEFAULT if text in _TRUE else 0
    try:
        value = int(text)
    except ValueError:
        hint = " (give the number with =, e.g. --neon-keep-failed=3)" if source == "cli" else ""
        raise NeonConfigError(
            f"{_where(opt, source)} must be a whole number{opt.int_hint}, got {str(raw)!r}{hint}"
        ) from None
    if value < 0:
        raise NeonConfigError(
            f"{_where(opt, source)} must be a whole number{opt.int_hint}, got {value}"
        )
    return value


def resolve(
    cli: Mapping[str, object | None],
    env: Mapping[str, str],
    ini: Mapping[str, object | None],
) -> Settings:
    """Resolve every setting, CLI > env > ini > default; raise NeonConfigError on bad values.

    ``cli`` and ``ini`` map setting names to raw values (``None`` = not given); ``env`` is
    the process environment.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for opt in OPTIONS:
        chosen: tuple[object, str] | None = None
        if cli.get(opt.name) is not None:
            chosen = (cli[opt.name], "cli")
        elif opt.env in env:
            chosen = (env[opt.env], "env")
        elif opt.ini is not None and ini.get(opt.name) not in (None, ""):
            chosen = (ini[opt.name], "ini")
        if chosen is None:
            values[opt.name] = opt.default
            continue
        value = _convert(opt, chosen[0], chosen[1])
        if value is AUTO:
            values[opt.name] = None
            sources[opt.name] = chosen[1]
            continue
        if value is None:
            values[opt.name] = opt.default
            continue
        values[opt.name] = value
        sources[opt.name] = chosen[1]
    _validate(values, sources)
    register_secret(values["api_key"])
    return Settings(**values, sources=sources)


def _validate(values: dict[str, Any], sources: dict[str, str]) -> None:
    def where(name: str) -> str:
        return _where(OPTIONS_BY_NAME[name], sources.get(name, "cli"))

    expiry = values["branch_expiry"]
    if expiry < 0 or expiry > MAX_EXPIRY:
        raise NeonConfigError(
            f"{where('branch_expiry')} must be between 0 (no expiry) and {MAX_EXPIRY} "
            f"(30 days, Neon's limit), got {expiry}"
        )
    timeout = values["api_timeout"]
    if not 0 < timeout <= 3600:
        raise NeonConfigError(
            f"{where('api_timeout')} must be a number of seconds between 0 and 3600 "
            f"(default 30), got {timeout:g}"
        )
    if values["sweep_after"] < 0:
        raise NeonConfigError(
            f"{where('sweep_after')} must be 0 (no sweep) or a number of seconds, "
            f"got {values['sweep_after']}"
        )
    if values["wait_timeout"] < 0:
        raise NeonConfigError(
            f"{where('wait_timeout')} must be 0 (do not wait) or a number of seconds, "
            f"got {values['wait_timeout']}"
        )
    keep_expiry = values["keep_failed_expiry"]
    if not 1 <= keep_expiry <= MAX_EXPIRY:
        raise NeonConfigError(
            f"{where('keep_failed_expiry')} must be a number of seconds from 1 to {MAX_EXPIRY} "
            f"(30 days, Neon's limit), got {keep_expiry}"
        )
    branches = values["worker_branches"]
    if branches is not None and not 1 <= branches <= MAX_WORKER_BRANCHES:
        raise NeonConfigError(
            f"{where('worker_branches')} must be from 1 to {MAX_WORKER_BRANCHES} (branches per "
            f"worker) or auto, got {branches}"
        )
    backend = str(values["backend"]).lower()
    if backend not in BACKENDS:
        raise NeonConfigError(
            f"{where('backend')} must be one of {', '.join(BACKENDS)}, got {values['backend']!r}"
        )
    values["backend"] = backend
    _validate_local(values, where)
    env_var = values["env_var"]
    if not _ENV_NAME.match(env_var):
        raise NeonConfigError(
            f"{where('env_var')} must be an environment variable name "
            f"(letters, digits and _, not starting with a digit), got {env_var!r}"
        )
    host = values["api_host"]
    if not str(host).startswith(("http://", "https://")):
        raise NeonConfigError(
            f"{where('api_host')} must be an http(s) URL such as {DEFAULT_API_HOST}, got {host!r}"
        )


def _validate_local(values: dict[str, Any], where: Callable[[str], str]) -> None:
    """The local backend's settings (normalized in place)."""
    pg_source = str(values["local_postgres_source"]).lower()
    if pg_source == "pgserver":  # the package's earlier name
        pg_source = "package"
    if pg_source not in PG_SOURCES:
        raise NeonConfigError(
            f"{where('local_postgres_source')} must be one of {', '.join(PG_SOURCES)}, "
            f"got {values['local_postgres_source']!r}"
        )
    values["local_postgres_source"] = pg_source
    reuse = values["local_reuse"]
    reuse = str(reuse).strip().lower() if not isinstance(reuse, bool) else str(reuse).lower()
    reuse = {"1": "true", "yes": "true", "on": "true", "0": "false", "no": "false"}.get(
        reuse, reuse
    )
    reuse = "false" if reuse == "off" else reuse
    if reuse not in REUSE_CHOICES:
        raise NeonConfigError(
            f"{where('local_reuse')} must be auto, true or false, got {values['local_reuse']!r}"
        )
    values["local_reuse"] = reuse
    if values["local_idle_timeout"] < 10:
        raise NeonConfigError(
            f"{where('local_idle_timeout')} must be at least 10 seconds, "
            f"got {values['local_idle_timeout']}"
        )
