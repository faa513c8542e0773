"""Run an example project's own suite as a user would: offline, nothing inherited."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "example_projects"


def run_example(name: str) -> subprocess.CompletedProcess[str]:
    """``pytest -n 2`` in ``example_projects/<name>``, without NEON_*, PYTEST_*, DJANGO_* or
    DATABASE_URL from this (outer) run: the local backend starts its own PostgreSQL."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "NEON_", "DJANGO_")) and k != "DATABASE_URL"
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider"],
        cwd=EXAMPLES / name,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
