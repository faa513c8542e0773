"""The kept server's watchdog's socket: requests, and a parked project's password handed
once, over a real Unix socket."""

from __future__ import annotations

import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_neon.local.watchdog_socket import SOCKET, WatchdogSocket, ask_password, send_request

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets, as parking")


@pytest.fixture
def root() -> Iterator[Path]:
    """A server directory short enough for a Unix socket."""
    with tempfile.TemporaryDirectory(prefix="pn-handoff-") as folder:
        yield Path(folder)


@pytest.fixture
def sockets() -> Iterator[list[WatchdogSocket]]:
    """The watchdog sockets a test starts, closed after it."""
    started: list[WatchdogSocket] = []
    yield started
    for keeper in started:
        keeper.close()


@pytest.fixture
def database(root: Path) -> Path:
    """A database's directory (it exists)."""
    folder = root / "db"
    folder.mkdir()
    return folder


def _keeper(root: Path, server: list[int | None], sockets: list[WatchdogSocket]) -> WatchdogSocket:
    keeper = WatchdogSocket(root, lambda: server[0])
    assert keeper.start()
    sockets.append(keeper)
    return keeper


def test_a_password_is_handed_once_to_whoever_asks_for_its_project(
    root: Path, database: Path, sockets: list[WatchdogSocket]
) -> None:
    server: list[int | None] = [100]
    keeper = _keeper(root, server, sockets)
    keeper.keep("p-one", "secret-one", (database,))
    keeper.keep("p-two", "secret-two", (database,))
    assert stat.S_IMODE((root / SOCKET).stat().st_mode) == 0o600

    assert ask_password(root, "p-unknown") is None
    assert ask_password(root, "p-one") == "secret-one"
    assert ask_password(root, "p-one") is None  # forgotten once handed
    assert keeper.holds("p-two")
    keeper.forget("p-two")
    assert not keeper.holds("p-two")
    assert ask_password(root, "p-two") is None

    keeper.keep("p-parked", "secret", (database,))
    keeper.keep("p-dropped", "secret", (database,))
    keeper.retain({"p-parked"})  # the others are no longer parked
    assert not keeper.holds("p-dropped")
    assert ask_password(root, "p-parked") == "secret"


def test_nothing_is_handed_after_a_restart_or_for_a_lost_database(
    root: Path, database: Path, sockets: list[WatchdogSocket]
) -> None:
    server: list[int | None] = [100]
    keeper = _keeper(root, server, sockets)
    assert keeper.keep("p-restarted", "secret", (database,))
    keeper.keep("p-lost", "secret", (database, root / "gone"))
    server[0] = 101  # another postmaster: its RAM tablespace may be lost
    assert ask_password(root, "p-restarted") is None
    server[0] = 100
    assert ask_password(root, "p-lost") is None
    server[0] = None  # no server runs: nothing is kept
    assert not keeper.keep("p-stopped", "secret", (database,))
    assert not keeper.holds("p-stopped")


def test_no_watchdog_hands_nothing(root: Path) -> None:
    assert ask_password(root, "p-any") is None  # no socket at all
    (root / SOCKET).write_text("")  # a file left there, nobody listening
    assert ask_password(root, "p-any") is None


def test_requests_wake_the_watchdog_and_are_taken_once(
    root: Path, sockets: list[WatchdogSocket]
) -> None:
    import threading
    import time

    keeper = _keeper(root, [100], sockets)
    assert keeper.wait(0.01) == set()
    threading.Timer(0.2, send_request, (root, "sweep")).start()
    start = time.monotonic()
    assert keeper.wait(30) == {"sweep"}  # woken by it, long before the timeout
    assert time.monotonic() - start < 10
    assert send_request(root, "ready")
    assert send_request(root, "sweep")
    assert not send_request(root, "drop everything")  # not a request
    assert keeper.wait(0) == {"ready", "sweep"}
    assert keeper.wait(0) == set()
    assert not send_request(root / "elsewhere", "sweep")  # no watchdog there


def test_a_closed_socket_answers_nothing(root: Path, sockets: list[WatchdogSocket]) -> None:
    keeper = _keeper(root, [100], sockets)
    keeper.keep("p-one", "secret", ())
    keeper.close()
    assert ask_password(root, "p-one") is None
    assert not send_request(root, "sweep")
