"""Shared fixtures of the pytest-neon test suite: one real PostgreSQL per test worker."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

import pytest

from pytest_neon.local.emulator import Emulator
from tests.support.pytest_runs import API_KEY, NeonProject, clean_neon_env

# pytester takes modules first imported during a test out of sys.modules again; the
# emulator's certificate (made with cryptography, when installed) imports its Rust
# bindings, which cannot be imported twice: their classes would no longer be the ones the
# bindings check against ("curve must be an EllipticCurve instance"). Imported once here.
with contextlib.suppress(ImportError):
    import cryptography.hazmat.primitives.asymmetric.ec
    import cryptography.x509  # noqa: F401

# Inner runs start a throwaway cluster each, as in CI, unless a test asks for the kept
# server (with a directory of its own).
os.environ.setdefault("NEON_LOCAL_REUSE", "false")

# A server given by URL (for quick local iteration) is used as is; otherwise the suite
# starts a throwaway cluster of its own and removes it at the end.
_GIVEN_URL = os.environ.get("PYTEST_NEON_TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A superuser DSN of a real PostgreSQL server for this test session."""
    if _GIVEN_URL:
        yield _GIVEN_URL
        return
    from pytest_neon.local.launcher import start_postgres

    server = start_postgres()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def emulator(postgres_url: str) -> Iterator[Emulator]:
    """A running Neon API emulator over ``postgres_url``: a fresh project and a random API key.

    Its ``api_host``, ``project_id``, ``api_key`` and ``default_branch_id`` are what a Neon
    client needs. Everything it created (databases, metadata) is dropped afterwards.
    """
    emu = Emulator(postgres_url, api_key=secrets.token_urlsafe(24))
    emu.start()
    try:
        yield emu
    finally:
        emu.stop(drop=True)


@pytest.fixture
def neon(
    postgres_url: str, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> Iterator[NeonProject]:
    """A fresh emulated project; NEON_API_KEY is set for inner runs, other NEON_* cleared."""
    clean_neon_env(monkeypatch)
    monkeypatch.setenv("NEON_API_KEY", API_KEY)
    with Emulator(postgres_url, api_key=API_KEY) as emulator:
        yield NeonProject(emulator, pytester)
        emulator.stop(drop=True)
