"""The FastAPI example project's own suite passes under pytest-xdist on the local backend."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "example_projects" / "fastapi_app"


def test_fastapi_example_suite_passes_under_xdist() -> None:
    # As `make demo` runs it: no Neon credentials, no database settings, nothing inherited
    # from this (outer) test run; the local backend starts its own PostgreSQL.
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("NEON_", "PYTEST_", "DATABASE_URL"))
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    summary = re.search(r"=+ (\d+) passed in [\d.]+s", output)
    assert summary is not None, output
    assert int(summary.group(1)) >= 16, output
    assert "neon: backend local" in output, output
    assert "2 workers [" in output, output
    assert "branches created: " in output, output
