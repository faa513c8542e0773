"""The FastAPI example project's own suite passes under pytest-xdist on the local backend."""

from __future__ import annotations

import re

from tests.support.examples import run_example


def test_fastapi_example_suite_passes_under_xdist() -> None:
    result = run_example("fastapi_app")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    summary = re.search(r"=+ (\d+) passed in [\d.]+s", output)
    assert summary is not None, output
    assert int(summary.group(1)) >= 16, output
    assert "neon: backend local" in output, output
    assert "2 workers [" in output, output
    assert "branches created: " in output, output
