"""The kept server's watchdog listens on a Unix socket in the server's directory (which
only the user can enter): a run that ended asks it there for a sweep, one that parked its
project asks it to make the project ready, and the run that claims a parked project asks
it for the password of the project's login.

When the watchdog makes a parked project ready (:func:`~pytest_neon.local.parking.make_ready`),
it gives the project's login a new password (the password of the run that parked it stops
working) and keeps it in its memory only, never in a file; it hands it once, so the
claiming run opens no connection and runs no statement before ``conftest.py`` is imported.
It hands nothing when the server was restarted since, or a database of the project is
gone: the run then gives the login a password of its own, as it does when no watchdog
runs. A request costs the watchdog nothing while it waits: it sleeps until one comes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: the watchdog's socket, in the server's directory
SOCKET = "watchdog.sock"
#: what a run may ask for besides a password (the watchdog's requests; as the files of
#: :data:`~pytest_neon.local.shared_server.SWEEP_REQUEST` and ``READY_REQUEST``)
REQUESTS = frozenset({"sweep", "ready"})
_LOGIN = "login "  # the request for a login's password: "login <project id>"
_LONGEST = 200  # a request, a project id, a password: far shorter


class _Login:
    __slots__ = ("directories", "password", "server_pid")

    def __init__(self, password: str, server_pid: int, directories: tuple[Path, ...]) -> None:
        self.password = password
        self.server_pid = server_pid
        self.directories = directories  # the project's databases' directories


class WatchdogSocket:
    """The watchdog's side: the requests runs made, and the passwords kept for the next
    run of each parked project.

    ``server_pid`` says which postmaster runs now: a password kept under another one is
    never handed (the server restarted, its RAM tablespace perhaps lost).
    """

    def __init__(self, root: Path, server_pid: Callable[[], int | None]) -> None:
        self._root = root
        self._server_pid = server_pid
        self._kept: dict[str, _Login] = {}
        self._asked: set[str] = set()
        self._lock = threading.Lock()
        self._woken = threading.Event()
        self._listener: socket.socket | None = None

    def start(self) -> bool:
        """Listen on the socket (in a thread of its own); ``False`` when it cannot."""
        path = self._root / SOCKET
        try:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except (AttributeError, OSError) as exc:  # (no AF_UNIX: Windows)
            log.debug("no watchdog socket: %s", exc)
            return False
        try:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a dead watchdog's (one watchdog per server)
            listener.bind(str(path))
            os.chmod(path, 0o600)
            listener.listen(16)
        except OSError as exc:
            log.debug("no watchdog socket: %s", exc)
            listener.close()
            return False
        self._listener = listener
        threading.Thread(target=self._serve, name="pytest-neon-watchdog", daemon=True).start()
        return True

    def close(self) -> None:
        """Stop listening (the socket's file stays: the next watchdog replaces it)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def wait(self, seconds: float) -> set[str]:
        """Sleep until a run asks for something, or ``seconds`` pass: what was asked (the
        requests are taken)."""
        self._woken.wait(seconds)
        with self._lock:
            self._woken.clear()
            asked, self._asked = self._asked, set()
        return asked

    def keep(self, project_id: str, password: str, directories: tuple[Path, ...]) -> bool:
        """Keep ``password`` for the run that claims ``project_id`` next, under the server
        running now; whether it is kept (not when no server runs)."""
        server_pid = self._server_pid()
        if server_pid is None:
            return False
        with self._lock:
            self._kept[project_id] = _Login(password, server_pid, directories)
        return True

    def forget(self, project_id: str) -> None:
        """Hand nothing for ``project_id`` (its login is given another password)."""
        with self._lock:
            self._kept.pop(project_id, None)

    def retain(self, project_ids: set[str]) -> None:
        """Forget the passwords of projects but ``project_ids`` (no longer parked)."""
        with self._lock:
            self._kept = {key: login for key, login in self._kept.items() if key in project_ids}

    def holds(self, project_id: str) -> bool:
        """Whether a password is kept for ``project_id``."""
        with self._lock:
            return project_id in self._kept

    def hand(self, project_id: str) -> str | None:
        """The password kept for ``project_id``, once; ``None`` when there is none, the
        server restarted since, or a database of the project is gone."""
        with self._lock:
            login = self._kept.pop(project_id, None)
        if login is None or login.server_pid != self._server_pid():
            return None
        if not all(directory.is_dir() for directory in login.directories):
            return None
        return login.password

    def _serve(self) -> None:
        listener = self._listener
        assert listener is not None
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed
            with conn:
                try:
                    conn.settimeout(1.0)
                    conn.sendall(self._answer(_read_line(conn)).encode() + b"\n")
                except Exception as exc:  # one run's trouble: the next is answered
                    log.debug("a request to the watchdog failed: %s", type(exc).__name__)

    def _answer(self, line: str) -> str:
        if line.startswith(_LOGIN):
            return self.hand(line[len(_LOGIN) :]) or ""
        if line in REQUESTS:
            with self._lock:
                self._asked.add(line)
                self._woken.set()
            return "ok"
        return ""


def listening(root: Path) -> bool | None:
    """Whether a watchdog listens on the socket in ``root``; ``None`` when there is no
    socket to ask (none made, or no ``AF_UNIX``). A watchdog that has ended refuses,
    also while it is a zombie its parent has not reaped yet (its pid still exists)."""
    path = root / SOCKET
    if not hasattr(socket, "AF_UNIX") or not path.exists():
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(1.0)
            conn.connect(str(path))
    except OSError:
        return False
    return True


def ask_password(root: Path, project_id: str) -> str | None:
    """The password the watchdog of the server in ``root`` kept for ``project_id``'s login;
    ``None`` when it has none (or no watchdog answers)."""
    return _ask(root, _LOGIN + project_id) or None


def send_request(root: Path, request: str) -> bool:
    """Ask the watchdog of the server in ``root`` for ``request`` (one of
    :data:`REQUESTS`); whether it took it."""
    return _ask(root, request) == "ok"


def _ask(root: Path, line: str, timeout: float = 1.0) -> str:
    if not hasattr(socket, "AF_UNIX"):  # (Windows: no watchdog socket)
        return ""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(root / SOCKET))
            conn.sendall(line.encode() + b"\n")
            return _read_line(conn)
    except (OSError, UnicodeDecodeError):
        return ""


def _read_line(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(_LONGEST)
        if not chunk or len(data) > _LONGEST:
            return ""
        data += chunk
    return data[:-1].decode()
