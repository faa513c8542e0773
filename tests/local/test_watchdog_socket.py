"""The kept server's watchdog's socket: requests, and a parked project's password handed
once, over a real Unix socket."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pytest_neon.local.shared_server import WATCHDOG_PID, ask_watchdog, watchdog_running
from pytest_neon.local.watchdog_socket import (
    SOCKET,
    WatchdogSocket,
    ask_password,
    listening,
    send_request,
)

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


def test_an_ended_watchdog_not_reaped_yet_is_not_running(root: Path) -> None:
    """A watchdog that ended while the run that started it still runs stays that run's
    zombie (its pid exists) until reaped: other runs must start a new one."""
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"  # never reaps it
    )
    watchdog = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from pytest_neon.local.watchdog_socket import WatchdogSocket\n"
        "assert WatchdogSocket(Path(sys.argv[1]), lambda: 1).start()\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, watchdog, str(root)], stdout=subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        (root / WATCHDOG_PID).write_text(str(pid))
        deadline = time.monotonic() + 20
        while listening(root) is not True:
            assert time.monotonic() < deadline, "the watchdog did not listen"
            time.sleep(0.02)
        assert watchdog_running(root)
        os.kill(pid, signal.SIGKILL)
        while psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the killed watchdog did not become a zombie"
            time.sleep(0.01)
        while listening(root) is not False:  # (its last threads may still be exiting)
            assert time.monotonic() < deadline, "the ended watchdog's socket still answers"
            time.sleep(0.01)
        assert (root / SOCKET).exists()  # its socket's file is left: nobody answers
        assert pid in psutil.pids()  # and its pid is still there
        assert not watchdog_running(root)
        assert not send_request(root, "sweep")
        assert not ask_watchdog(root, "sweep")  # (no request file left for nobody)
        assert not (root / "sweep").exists()
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
