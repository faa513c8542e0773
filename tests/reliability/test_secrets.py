"""The API key and role passwords never show: not in terminal output at any verbosity,
tracebacks, warnings, logs, client exceptions, the report header, or any file the run
writes (pytest's temp dirs, .pytest_cache, log and report files, xdist coordination)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.pytest_runs import API_KEY, NeonProject

WRONG_KEY = "wrong-key-5ecret-b1d2"

CONFTEST = """
import json, os, pathlib, shutil
from urllib.parse import urlsplit

import pytest

from pytest_neon.integration import current_session
from pytest_neon.xdist import coordination_dir

@pytest.fixture(autouse=True)
def keep_coordination_files(pytestconfig):
    # The controller removes them at the end of the run: copy them for the grep.
    yield
    session = current_session(pytestconfig)
    source = coordination_dir(session.run_id)
    target = pathlib.Path(os.environ["SNAPSHOT"]) / session.worker
    shutil.copytree(source, target, dirs_exist_ok=True)

@pytest.fixture(scope="session", autouse=True)
def local_secrets(pytestconfig):
    # The local backend makes its own key and passwords: write them out for the grep.
    from pytest_neon.plugin import STATE
    state = pytestconfig.stash[STATE]
    if state.session is not None and os.environ.get("SECRETS_OUT"):
        session = state.session
        found = [
            session.client.reveal_password(
                session.ops.project_id, session.parent_id, "neondb_owner"
            )
        ]
        handoff = os.environ.get("PYTEST_NEON_HANDOFF")
        if handoff:  # a worker: the local backend's key and superuser password
            data = json.loads(handoff)
            found += [data["api_key"], urlsplit(data["inspector_url"] or "").password]
        path = pathlib.Path(os.environ["SECRETS_OUT"]) / f"{os.getpid()}"
        path.write_text("\\n".join(s for s in found if s))
"""

TESTS = """
import logging, os, warnings
from urllib.parse import urlsplit

import psycopg, pytest

from pytest_neon.api import NeonClient
from pytest_neon.api.retry import RetryPolicy

log = logging.getLogger("app")

def test_passes_logs_and_warns(neon_branch_readwrite):
    assert urlsplit(neon_branch_readwrite.connection_string).password  # the real one is used
    log.debug("using %r", neon_branch_readwrite)
    warnings.warn(f"branch in use: {neon_branch_readwrite!r}")
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        conn.execute("CREATE TABLE t (x int)")

def test_fails_with_the_branch_in_the_assertion(neon_branch_readwrite):
    assert neon_branch_readwrite is None

def test_fails_comparing_branches(neon_branch_readwrite, neon_branch_readonly):
    assert neon_branch_readwrite == neon_branch_readonly

def test_fails_on_a_client_error(neon_branch_readwrite):
    client = NeonClient(os.environ["NEON_API_KEY"], api_host=os.environ["NEON_API_HOST"])
    client.connection_uri(
        neon_branch_readwrite.project_id,
        branch_id=neon_branch_readwrite.branch_id,
        database_name="no_such_db",
        role_name="neondb_owner",
    )

def test_fails_on_a_refused_key():
    client = NeonClient(os.environ["WRONG_KEY"], api_host=os.environ["NEON_API_HOST"])
    client.list_branches("any-project")

def test_fails_on_an_unreachable_api():
    client = NeonClient(
        os.environ["NEON_API_KEY"],
        api_host="http://127.0.0.1:9/api/v2",
        timeout=(0.2, 0.2),
        retry=RetryPolicy(max_attempts=2, base_delay=0.01),
    )
    client.get_project("any-project")

def test_fails_writing_to_the_readonly_branch(neon_branch_readonly):
    with psycopg.connect(neon_branch_readonly.connection_string) as conn:
        conn.execute("CREATE TABLE x (y int)")

def test_deprecated_alias(neon_branch):
    pass
"""

ARGS = [
    "-vv",
    "--tb=long",
    "-rA",
    "-W",
    "always",
    "--log-level=DEBUG",
    "--log-file=run.log",
    "--log-file-level=DEBUG",
    "-o",
    "log_cli=true",
    "--log-cli-level=DEBUG",
    "--junitxml=report.xml",
]


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory outside the grepped trees, also outside pytest's own 0700 temp dirs."""
    path = Path(tempfile.mkdtemp(prefix="pytest-neon-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _leaks(secrets: set[str], text: str) -> list[str]:
    forms = {form for s in secrets for form in (s, quote(s, safe=""))}
    return sorted(form for form in forms if form in text)


def _files(root: Path) -> Iterator[tuple[Path, str]]:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path, path.read_bytes().decode("utf-8", "replace")


@pytest.mark.parametrize("backend", ["neon", "neon-xdist", "local-xdist"])
def test_no_secret_anywhere(
    neon: NeonProject, monkeypatch: pytest.MonkeyPatch, outside: Path, backend: str
) -> None:
    pytester = neon.pytester
    emulator = neon.emulator
    password = neon.get(
        f"/branches/{emulator.default_branch_id}/roles/neondb_owner/reveal_password"
    )["password"]
    assert password
    secrets = {API_KEY, password, WRONG_KEY}

    snapshot = pytester.path / "coordination"
    snapshot.mkdir()
    monkeypatch.setenv("SNAPSHOT", str(snapshot))
    monkeypatch.setenv("SECRETS_OUT", str(outside))
    monkeypatch.setenv("NEON_API_HOST", emulator.api_host)
    monkeypatch.setenv("WRONG_KEY", WRONG_KEY)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_leaky=TESTS)
    if backend.startswith("neon"):
        base = [a for a in neon.args if a not in ("-p", "no:cacheprovider")]
        monkeypatch.setenv("TMPDIR", str(pytester.mkdir("tmp")))
    else:
        base = ["--neon-backend=local"]
        monkeypatch.setenv("TMPDIR", str(outside))
    xdist = ["-n", "2"] if backend.endswith("xdist") else []
    result = pytester.runpytest_subprocess(*base, *ARGS, *xdist)
    result.assert_outcomes(passed=2, failed=6)

    secrets |= {
        line for out in outside.glob("[0-9]*") for line in out.read_text().splitlines() if line
    }
    if backend.startswith("local"):
        assert len(secrets) >= 5  # its own key, superuser password and role password too
    output = result.stdout.str() + result.stderr.str()
    assert _leaks(secrets, output) == []
    assert "neon: backend" in output  # the report header was there
    assert "********" in output  # the branch repr, redacted, was there too
    assert "UserWarning: branch in use: NeonBranch(" in output
    assert "DeprecationWarning: the neon_branch fixture is deprecated" in output
    files = dict(_files(pytester.path))
    assert any(p.name == "migrations.json" for p in files)  # coordination files were copied
    assert any(".pytest_cache" in p.parts for p in files)
    assert any(p.name == "run.log" for p in files)
    for path, text in files.items():
        assert _leaks(secrets, text) == [], path
    for path, text in _files(outside):
        if path.parent != outside:  # (not the secrets written out for this test)
            assert _leaks(secrets, text) == [], path
