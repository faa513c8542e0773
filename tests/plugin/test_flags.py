"""Boolean flags take an explicit value too: ``--neon-keep-branches=false``."""

from __future__ import annotations

import pytest

from tests.support.pytest_runs import clean_neon_env, run_pytest


@pytest.mark.parametrize(
    ("flag", "shown"),
    [
        ("--neon-always-reset", "always_reset=True"),
        ("--neon-always-reset=yes", "always_reset=True"),
    ],
)
def test_a_boolean_flag_alone_or_with_true_turns_it_on(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, flag: str, shown: str
) -> None:
    clean_neon_env(monkeypatch)
    monkeypatch.setenv("NEON_ALWAYS_RESET", "false")
    pytester.makepyfile("def test_nothing(): pass")
    result = run_pytest(pytester, "--neon-backend=neon", flag)
    result.stdout.fnmatch_lines([f"*{shown} (from --neon-always-reset)*"])


def test_flag_equals_false_beats_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    monkeypatch.setenv("NEON_KEEP_BRANCHES", "true")
    pytester.makepyfile("def test_nothing(): pass")
    result = run_pytest(pytester, "--neon-backend=neon", "--neon-keep-branches=false")
    result.stdout.fnmatch_lines(["*keep_branches=False (from --neon-keep-branches)*"])
    assert "unrecognized arguments" not in result.stderr.str()
