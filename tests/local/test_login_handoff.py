"""The watchdog's hand-off of a parked project's password, over its real Unix socket."""

from __future__ import annotations

import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_neon.local.login_handoff import SOCKET, LoginKeeper, ask

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets, as parking")


@pytest.fixture
def root() -> Iterator[Path]:
    """A server directory short enough for a Unix socket."""
    with tempfile.TemporaryDirectory(prefix="pn-handoff-") as folder:
        yield Path(folder)


def _keeper(root: Path, server: list[int]) -> LoginKeeper:
    keeper = LoginKeeper(root, lambda: server[0])
    assert keeper.start()
    return keeper


def test_a_password_is_handed_once_to_whoever_asks_for_its_project(root: Path) -> None:
    server = [100]
    keeper = _keeper(root, server)
    database = root / "db"
    database.mkdir()
    keeper.keep("p-one", "secret-one", 100, (database,))
    keeper.keep("p-two", "secret-two", 100, (database,))
    assert stat.S_IMODE((root / SOCKET).stat().st_mode) == 0o600

    assert ask(root, "p-unknown") is None
    assert ask(root, "p-one") == "secret-one"
    assert ask(root, "p-one") is None  # forgotten once handed
    keeper.forget("p-two")
    assert ask(root, "p-two") is None


def test_nothing_is_handed_after_a_restart_or_for_a_lost_database(root: Path) -> None:
    server = [100]
    keeper = _keeper(root, server)
    database = root / "db"
    database.mkdir()
    keeper.keep("p-restarted", "secret", 100, (database,))
    keeper.keep("p-lost", "secret", 100, (database, root / "gone"))
    server[0] = 101  # another postmaster: its RAM tablespace may be lost
    assert ask(root, "p-restarted") is None
    server[0] = 100
    assert ask(root, "p-lost") is None


def test_no_watchdog_hands_nothing(root: Path) -> None:
    assert ask(root, "p-any") is None  # no socket at all
    (root / SOCKET).write_text("")  # a file left there, nobody listening
    assert ask(root, "p-any") is None
