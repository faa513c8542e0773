"""The Django example project's own suite passes, as a user runs it: offline, under -n 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "example_projects" / "django_app"


def _clean_env() -> dict[str, str]:
    """This process's environment without anything that would steer the inner run."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "NEON_", "DJANGO_")) and k != "DATABASE_URL"
    }


def test_django_example_suite_passes_on_the_local_backend() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider"],
        cwd=EXAMPLE,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "neon: backend local" in output, output
    summary = re.search(r"=+ (\d+) passed in ", output)
    assert summary is not None, output
    assert int(summary.group(1)) == 12, output
    # two worker branches and one migration branch, all created by this run
    assert "branches created: 3," in output, output
