"""Helpers of the reliability tests: a switchboard that lets inner tests flip faults in
this process, a TCP proxy that can leave requests unanswered, and process/file probes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support.pytest_runs import NeonProject

SWITCHBOARD_ENV = "RELIABILITY_SWITCHBOARD"

#: For an inner ``conftest.py``: ``flip(name)`` runs the outer test's action ``name``.
FLIP = f"""
import os, pathlib, time

def flip(name):
    box = pathlib.Path(os.environ["{SWITCHBOARD_ENV}"])
    (box / name).touch()
    deadline = time.monotonic() + 30
    while not (box / (name + ".done")).exists():
        assert time.monotonic() < deadline, "switch " + name + " was not flipped"
        time.sleep(0.01)
"""

_METHODS = (b"GET ", b"POST ", b"PUT ", b"PATCH ", b"DELETE ", b"HEAD ")


class Switchboard:
    """Runs an action in this process when an inner test asks for it by name."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._actions: dict[str, Callable[[], object]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def on(self, name: str, action: Callable[[], object]) -> None:
        """Run ``action`` when an inner test calls ``flip(name)``."""
        self._actions[name] = action

    def _serve(self) -> None:
        while not self._stop.wait(0.01):
            for name, action in list(self._actions.items()):
                request, done = self.directory / name, self.directory / f"{name}.done"
                if request.exists() and not done.exists():
                    action()
                    done.touch()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class HangingProxy:
    """A TCP proxy in front of the emulator that can hold requests without answering.

    ``hang_every = n`` holds every n-th request; ``hang_all = True`` holds every request
    from then on (also on connections already open). A held request never reaches the
    emulator; its client sees a hung API and times out.
    """

    def __init__(self, api_host: str) -> None:
        parts = urlsplit(api_host)
        assert parts.hostname
        assert parts.port
        self._target = (parts.hostname, parts.port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        self.api_host = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
        self.hang_every = 0
        self.hang_all = False
        self.requests = 0
        self.held: list[str] = []  # request lines of the requests held
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _hold(self, chunk: bytes) -> bool:
        if not chunk.startswith(_METHODS):
            return False
        with self._lock:
            self.requests += 1
            hold = self.hang_all or (self.hang_every > 0 and self.requests % self.hang_every == 0)
            if hold:
                self.held.append(chunk.split(b" HTTP/", 1)[0].decode(errors="replace"))
            return hold

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._target)
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets += [client, upstream]
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        holding = False
        with contextlib.suppress(OSError):
            while chunk := client.recv(65536):
                holding = holding or self._hold(chunk)
                if not holding:
                    upstream.sendall(chunk)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.close()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()


def run_via(neon: NeonProject, api_host: str, *args: str) -> pytest.RunResult:
    """``neon.run`` with the plugin talking to ``api_host`` instead of the emulator."""
    base = [a for a in neon.args if not a.startswith("--neon-api-host=")]
    return neon.pytester.runpytest_subprocess(*base, f"--neon-api-host={api_host}", *args)


def ours(neon: NeonProject) -> list[dict[str, object]]:
    """The project's branches whose names say pytest-neon made them."""
    return [b for b in neon.branches() if str(b["name"]).startswith("pytest-neon-")]


def default_sigint() -> None:
    """In a child before it runs: Ctrl-C back to its default. A shell starts background
    jobs (``make test &``) with SIGINT ignored, their children inherit that, and a Python
    started so never raises KeyboardInterrupt: a SIGINT test would wait in vain."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_pytest(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A real ``pytest`` process (its output in a pipe), to send signals to."""
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", *args],
        cwd=cwd,
        env=env if env is not None else dict(os.environ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,
    )


def wait_for_file(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Wait until ``path`` exists; fail with the process's output if it ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"pytest ended (status {proc.returncode}) before {path.name}:\n{out}")
        assert time.monotonic() < deadline, f"{path.name} did not appear"
        time.sleep(0.02)


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args and int(cmdline.parent.name) != os.getpid():
            found.append(args.strip())
    return found
