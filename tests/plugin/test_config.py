"""Settings resolution for every row of the table: CLI > env > ini > default."""

from __future__ import annotations

import pytest

from pytest_neon.config import OPTIONS, Option, Settings, resolve
from pytest_neon.errors import NeonConfigError

SAMPLES: dict[str, tuple[str, object]] = {
    # name: (raw value as a user writes it, resolved value)
    "api_key": ("key-abcdef123456", "key-abcdef123456"),
    "project_id": ("proj-123", "proj-123"),
    "parent_branch": ("br-parent-1", "br-parent-1"),
    "database": ("appdb", "appdb"),
    "role": ("app_owner", "app_owner"),
    "keep_branches": ("true", True),
    "branch_expiry": ("300", 300),
    "sweep_after": ("3600", 3600),
    "wait_timeout": ("120", 120),
    "env_var": ("MY_DB_URL", "MY_DB_URL"),
    "api_host": ("http://127.0.0.1:9/api/v2", "http://127.0.0.1:9/api/v2"),
    "api_timeout": ("12.5", 12.5),
    "backend": ("local", "local"),
    "always_reset": ("yes", True),
    "worker_branches": ("3", 3),
    "migration_cache": ("false", False),
    "keep_failed": ("3", 3),
    "keep_failed_expiry": ("7200", 7200),
    "local_postgres_url": ("postgresql://u@127.0.0.1/db", "postgresql://u@127.0.0.1/db"),
    "local_postgres_source": ("package", "package"),
    "local_reuse": ("no", "false"),
    "local_idle_timeout": ("120", 120),
    "local_dir": ("/srv/pn-kept", "/srv/pn-kept"),
}


def test_every_option_has_a_sample() -> None:
    assert {o.name for o in OPTIONS} == set(SAMPLES)


SOURCES = [
    (option, source)
    for option in OPTIONS
    for source in ("cli", "env", "ini")
    if source != "ini" or option.ini is not None
]


@pytest.mark.parametrize(("option", "source"), SOURCES, ids=lambda v: getattr(v, "name", v))
def test_each_setting_from_each_source(option: Option, source: str) -> None:
    raw, expected = SAMPLES[option.name]
    cli = {option.name: raw} if source == "cli" else {}
    env = {option.env: raw} if source == "env" else {}
    ini = {option.name: raw} if source == "ini" else {}
    settings = resolve(cli, env, ini)
    assert getattr(settings, option.name) == expected
    assert settings.source(option.name) == source


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_precedence_cli_env_ini_default(option: Option) -> None:
    raw = SAMPLES[option.name][0]
    default = resolve({}, {}, {})
    assert getattr(default, option.name) == option.default
    assert default.source(option.name) == "default"
    if option.ini:
        assert resolve({}, {option.env: raw}, {option.name: "ignored"}).source(option.name) == "env"
    assert resolve({option.name: raw}, {option.env: "ignored"}, {}).source(option.name) == "cli"


@pytest.mark.parametrize(
    ("source", "raw"), [("cli", "false"), ("env", "0"), ("ini", "false"), ("ini", "no")]
)
def test_false_and_zero_are_honoured(source: str, raw: str) -> None:
    where = {"cli": ({"keep_branches": raw}, {}, {}), "env": ({}, {"NEON_KEEP_BRANCHES": raw}, {}),
             "ini": ({}, {}, {"keep_branches": raw})}[source]  # fmt: skip
    assert resolve(*where).keep_branches is False
    expiry = {"cli": ({"branch_expiry": "0"}, {}, {}), "env": ({}, {"NEON_BRANCH_EXPIRY": "0"}, {}),
              "ini": ({}, {}, {"branch_expiry": "0"})}[source]  # fmt: skip
    assert resolve(*expiry).branch_expiry == 0


@pytest.mark.parametrize(
    ("cli", "message"),
    [
        ({"branch_expiry": "-5"}, "--neon-branch-expiry must be between 0"),
        ({"branch_expiry": "2592001"}, "30 days"),
        ({"branch_expiry": "1.5"}, "whole number"),
        ({"backend": "cloud"}, "must be one of auto, neon, local"),
        ({"env_var": ""}, "--neon-env-var must be an environment variable name"),
        ({"env_var": "A-B"}, "environment variable name"),
        ({"keep_branches": "maybe"}, "--neon-keep-branches must be true or false"),
        ({"api_host": "console.neon.tech"}, "must be an http(s) URL"),
        ({"local_postgres_source": "docker"}, "must be one of auto, system, package"),
        ({"worker_branches": "0"}, "--neon-worker-branches must be from 1 to 10"),
        ({"worker_branches": "11"}, "--neon-worker-branches must be from 1 to 10"),
        ({"worker_branches": "two"}, "--neon-worker-branches must be a whole number from 1"),
        ({"local_reuse": "sometimes"}, "--neon-local-reuse must be auto, true or false"),
        ({"local_idle_timeout": "5"}, "--neon-local-idle-timeout must be at least 10 seconds"),
    ],
)
def test_bad_values_name_the_setting(cli: dict[str, str], message: str) -> None:
    with pytest.raises(NeonConfigError) as info:
        resolve(cli, {}, {})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_env_value_names_the_env_var() -> None:
    with pytest.raises(NeonConfigError, match=r"^NEON_BRANCH_EXPIRY must be"):
        resolve({}, {"NEON_BRANCH_EXPIRY": "ten"}, {})


def test_api_key_and_server_url_are_kept_out_of_repr() -> None:
    settings = resolve(
        {"local_postgres_url": "postgresql://me:server-pw-77@db/x"},
        {"NEON_API_KEY": "very-secret-key-42"},
        {},
    )
    assert isinstance(settings, Settings)
    shown = repr(settings)
    assert "very-secret-key-42" not in shown
    assert "server-pw-77" not in shown
    assert "database='neondb'" in shown  # the rest is there
    assert settings.describe("api_key") == "env NEON_API_KEY"
    assert settings._replace(database="other").database == "other"


@pytest.mark.parametrize(
    ("reuse", "env", "kept"),
    [
        ("auto", {}, True),
        ("auto", {"CI": "true"}, False),
        ("auto", {"CI": "github"}, False),
        ("auto", {"CI": "false"}, True),
        ("auto", {"CI": ""}, True),
        ("true", {"CI": "true"}, True),
        ("false", {}, False),
    ],
)
def test_the_local_server_is_kept_off_ci_unless_told(
    reuse: str, env: dict[str, str], kept: bool
) -> None:
    settings = resolve({"local_reuse": reuse}, {}, {})
    assert settings.reuse_local_server(env) is kept
    given = resolve({"local_reuse": "true", "local_postgres_url": "postgresql://h/db"}, {}, {})
    assert given.reuse_local_server({}) is False  # a server given by URL is never kept


@pytest.mark.parametrize("raw", ["auto", "AUTO", "'auto'"])
def test_worker_branches_auto_is_the_default_and_may_be_said(raw: str) -> None:
    assert resolve({}, {}, {}).worker_branches is None
    settings = resolve({}, {"NEON_WORKER_BRANCHES": "2"}, {})
    assert settings.worker_branches == 2
    said = resolve({"worker_branches": raw}, {"NEON_WORKER_BRANCHES": "2"}, {})
    assert (said.worker_branches, said.source("worker_branches")) == (None, "cli")
