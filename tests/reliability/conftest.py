"""Fixtures of the reliability tests: a switchboard, a hanging proxy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.pytest_runs import NeonProject
from tests.support.reliability import SWITCHBOARD_ENV, HangingProxy, Switchboard


@pytest.fixture
def switchboard(
    neon: NeonProject, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Switchboard]:
    """Inner tests call ``flip(name)`` (from ``FLIP`` in their conftest) to run an action here."""
    board = Switchboard(tmp_path_factory.mktemp("switchboard"))
    monkeypatch.setenv(SWITCHBOARD_ENV, str(board.directory))
    yield board
    board.close()


@pytest.fixture
def proxy(neon: NeonProject) -> Iterator[HangingProxy]:
    """A proxy in front of the emulator that can leave requests unanswered."""
    hanging = HangingProxy(neon.emulator.api_host)
    yield hanging
    hanging.close()
