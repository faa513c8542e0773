"""The lines pytest-neon adds to pytest's report header."""

from __future__ import annotations

import pytest

from pytest_neon.config import OPTIONS
from pytest_neon.plugin_state import Backend, PluginState, Role

DJANGO_HINT = (
    "neon: pytest-django runs without pytest_neon.contrib.django: Django makes its own "
    "test_<name> database next to the branch, migrates it in every run and flushes it after "
    'transactional tests; add pytest_plugins = ["pytest_neon.contrib.django"] to conftest.py '
    "for one migration per run and resets only after writes"
)


def header_lines(state: PluginState, config: pytest.Config) -> list[str]:
    """Which backend was chosen and why, the project, and every non-default setting."""
    s = state.settings
    lines = [f"neon: backend {state.backend.value} ({state.backend_reason})"]
    if state.unavailable:
        lines.append(f"neon: database tests will be skipped: {state.unavailable}")
    if state.backend is Backend.NEON:
        parent = s.parent_branch or "the project's default branch"
        lines.append(f"neon: project {s.project_id}, parent branch {parent}")
    shown = [
        f"{opt.name}={_shown(getattr(s, opt.name), opt.kind)} (from {s.describe(opt.name)})"
        for opt in OPTIONS
        if opt.kind != "secret" and opt.name in s.sources and opt.name != "local_postgres_url"
    ]
    if "api_key" in s.sources:
        shown.insert(0, f"api_key=*** (from {s.describe('api_key')})")
    if shown:
        lines.append("neon: settings: " + ", ".join(shown))
    turns = state.turns
    if (
        turns is not None
        and not state.unavailable
        and (state.backend is Backend.NEON or turns.count > 1)
    ):
        lines.append(turns.header())
    if state.replaced_env and not state.unavailable and state.role is not Role.WORKER:
        lines.append(
            f"neon: {s.env_var} was set: it points at the test branch for the run and is "
            f"put back afterwards (--neon-env-var names another variable)"
        )
    if _django_without_integration(config):
        lines.append(DJANGO_HINT)
    return lines


def _shown(value: object, kind: str) -> str:
    return "'auto'" if value is None and kind == "branches" else repr(value)


def _django_without_integration(config: pytest.Config) -> bool:
    """pytest-django is set up for a Django project, but the integration is not loaded."""
    plugins = config.pluginmanager
    if not (plugins.hasplugin("django") or plugins.hasplugin("pytest_django.plugin")):
        return False
    if plugins.hasplugin("pytest_neon.contrib.django"):
        return False
    try:
        from pytest_django.lazy_django import django_settings_is_configured
    except ImportError:  # pragma: no cover - a pytest-django without it
        return False
    return bool(django_settings_is_configured())
