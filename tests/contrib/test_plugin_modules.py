"""Every integration module can be imported by conftest.py and listed as a plugin."""

from __future__ import annotations

import pytest

from tests.support.pytest_runs import clean_neon_env

MODULES = ["alembic", "django", "fastapi", "sqlalchemy"]


@pytest.mark.parametrize("name", MODULES)
def test_imported_and_listed_without_a_rewrite_warning(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    clean_neon_env(monkeypatch)
    # Plugins loaded by name, not from their entry point (which makes pytest rewrite the
    # whole package ahead): the case where pytest would warn.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeconftest(
        f"""
        import pytest_neon.contrib.{name} as integration  # noqa: F401

        pytest_plugins = ["pytest_neon.contrib.{name}"]
        """
    )
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest_subprocess(
        "-p", "pytest_neon.plugin", "-p", "pytest_django.plugin", "-p", "anyio",
        "-p", "no:cacheprovider", "--neon-backend=neon",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    assert "PytestAssertRewriteWarning" not in result.stdout.str() + result.stderr.str()
