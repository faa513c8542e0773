"""The Django example project's own suite passes, as a user runs it: offline, under -n 2."""

from __future__ import annotations

import re

from tests.support.examples import run_example


def test_django_example_suite_passes_on_the_local_backend() -> None:
    result = run_example("django_app")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "neon: backend local" in output, output
    summary = re.search(r"=+ (\d+) passed in ", output)
    assert summary is not None, output
    assert int(summary.group(1)) == 12, output
    # two worker branches and one migration branch, all created by this run
    assert "branches created: 3," in output, output
