"""Fixtures of the emulator tests: the OpenAPI spec and an HTTP client for ``emulator``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pytest_neon.local.emulator import Emulator
from tests.support.emulator_http import NeonHttp, OpenApiSpec, load_spec, spec_path


@pytest.fixture(scope="session")
def openapi_spec() -> OpenApiSpec:
    """Neon's OpenAPI document (a copy is in the repository)."""
    spec = load_spec()
    if spec is None:
        pytest.fail(f"Neon's openapi.yaml not found at {spec_path()} (set NEON_OPENAPI_SPEC)")
    return spec


@pytest.fixture
def api(emulator: Emulator) -> Iterator[NeonHttp]:
    """A client of ``emulator`` that validates every response when the spec is present."""
    with NeonHttp(emulator, load_spec()) as client:
        yield client


@pytest.fixture
def make_emulator(postgres_url: str) -> Iterator[Callable[..., Emulator]]:
    """A factory of started emulators (``Emulator`` keyword arguments); all dropped at the end."""
    made: list[Emulator] = []

    def make(**kwargs: Any) -> Emulator:
        emu = Emulator(postgres_url, **kwargs)
        emu.start()
        made.append(emu)
        return emu

    yield make
    for emu in reversed(made):
        emu.stop(drop=True)
