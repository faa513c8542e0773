"""Fixtures for plugin tests: an emulated Neon project and inner pytest runs against it."""

from __future__ import annotations

import gc
import os
import warnings
from dataclasses import dataclass
from typing import Any

import pluggy
import psycopg
import pytest
import requests

# Imported once for all in-process runs: imported afresh by each, SQLAlchemy would register
# its PostgreSQL functions again and warn.
import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401

from pytest_neon.local.emulator import Emulator

API_KEY = "plugin-test-key-7f3a9c"


#: an inner module ``waiting``: a test that only reads calls it to have the worker's other
#: branches made (they are made for the first test that may write) and waits for them
WAIT_FOR_BRANCHES = """
import time
from pytest_neon.integration import current_session

def wait_for_the_other_branches(request):
    pool = current_session(request.config).pool
    pool._grow()
    slots = pool.slots[1:]
    deadline = time.monotonic() + 60
    while not all(s.branch and (s.pending is None or s.pending.done()) for s in slots):
        assert time.monotonic() < deadline, "the other branches were not made"
        time.sleep(0.02)
"""


@dataclass
class NeonProject:
    """An emulated project plus the command-line arguments that point the plugin at it."""

    emulator: Emulator
    pytester: pytest.Pytester

    @property
    def args(self) -> list[str]:
        return [
            "-p",
            "no:cacheprovider",
            "--neon-backend=neon",
            f"--neon-api-host={self.emulator.api_host}",
            f"--neon-project-id={self.emulator.project_id}",
        ]

    def run(self, *args: str, timeout: float = 240, subprocess: bool = False) -> pytest.RunResult:
        """Run pytest with the plugin pointed at the emulator (see :func:`run_pytest`)."""
        return run_pytest(self.pytester, *self.args, *args, timeout=timeout, subprocess=subprocess)

    def get(self, path: str, **params: object) -> Any:
        """The JSON answer to ``GET /projects/{id}<path>``, straight from the emulator's
        HTTP API."""
        response = requests.get(
            f"{self.emulator.api_host}/projects/{self.emulator.project_id}{path}",
            params=params,  # type: ignore[arg-type]
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=30,
        )
        response.raise_for_status()
        return response.json()

    def uri(self, branch_id: str) -> str:
        """The connection string of ``branch_id``'s ``neondb`` as ``neondb_owner``."""
        found = self.get(
            "/connection_uri",
            branch_id=branch_id,
            database_name="neondb",
            role_name="neondb_owner",
        )
        return str(found["uri"])

    def branches(self) -> list[dict[str, object]]:
        """Every branch of the project, straight from the emulator's HTTP API."""
        out: list[dict[str, object]] = []
        cursor = None
        while True:
            data = self.get("/branches", limit=100, **({"cursor": cursor} if cursor else {}))
            out.extend(data["branches"])
            cursor = (data.get("pagination") or {}).get("next")
            if not data["branches"] or not cursor:
                return out

    def branch_names(self) -> set[str]:
        return {str(b["name"]) for b in self.branches()}


def run_pytest(
    pytester: pytest.Pytester, *args: str, timeout: float = 240, subprocess: bool = False
) -> pytest.RunResult:
    """A real pytest session in ``pytester``'s directory, with ``args``.

    In this process by default (``pytest.main``: no interpreter start, no imports, a
    second or so less per run); in a subprocess when the run needs one: a Django project
    (its settings are configured once per process, found here), and with
    ``subprocess=True`` runs that are interrupted, and those of libraries that register
    module-level state on import (Alembic, FastAPI), which pytest would import afresh.
    """
    if subprocess or _needs_a_process(pytester):
        return pytester.runpytest_subprocess(*args, timeout=timeout)
    _collect_quietly()  # what earlier runs left is collected here, not inside this run
    try:
        with warnings.catch_warnings():
            # the warning filters of a new process, not this suite's "error"; and pytest
            # before 8 with today's pluggy warns when a plugin stops a run at start-up
            warnings.resetwarnings()
            warnings.filterwarnings("ignore", category=pluggy.PluggyTeardownRaisedWarning)
            return pytester.runpytest_inprocess(*args)
    finally:
        _collect_quietly()


def _collect_quietly() -> None:
    """Collect garbage (such as the connections of a test that did not close them) as a
    process's exit would: without warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc.collect()


def _needs_a_process(pytester: pytest.Pytester) -> bool:
    for name in ("pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml", "conftest.py"):
        path = pytester.path / name
        if path.is_file() and "django" in path.read_text().lower():
            return True
    return False


def run_local(
    pytester: pytest.Pytester, postgres_url: str, *args: str, subprocess: bool = False
) -> pytest.RunResult:
    """An inner run on the local backend over the suite's server.

    The server's one WAL is shared by every database (and the emulator's spare clones);
    pg_walinspect tells the branch's own writes apart, so reset counts are exact.
    """
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
    return run_pytest(
        pytester, "-p", "no:cacheprovider", "--neon-backend=local",
        f"--neon-local-postgres-url={postgres_url}", *args, subprocess=subprocess,
    )  # fmt: skip


def times_reported(result: pytest.RunResult, text: str) -> int:
    """How often text appears in the run's report, not counting the short test summary.

    The summary repeats each error's message, cut to the terminal width locally but in full
    when the CI environment variable is set, so counts must leave it out.
    """
    report = result.stdout.str().split("short test summary info", 1)[0]
    return report.count(text)


def clean_neon_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every setting and hand-off variable an inner pytest run would pick up."""
    for name in list(os.environ):
        if name.startswith(("NEON_", "PYTEST_NEON_", "PYTEST_XDIST_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    # a throwaway cluster per inner run, as in CI: the kept server has tests of its own
    monkeypatch.setenv("NEON_LOCAL_REUSE", "false")
