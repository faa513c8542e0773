"""The password of a parked project's login, handed by the kept server's watchdog to the
run that claims the project: that run opens no connection and runs no statement before
``conftest.py`` is imported.

When the watchdog makes a parked project ready (:func:`~pytest_neon.local.parking.make_ready`),
it gives the project's login a new password (the password of the run that parked it stops
working) and keeps it in its memory only, never in a file. The run that claims the project
asks for it over a Unix socket in the server's directory (which only the user can enter);
the watchdog forgets it once handed. It hands nothing when the server was restarted since,
or a database of the project is gone: the run then gives the login a password of its own,
as it does when no watchdog runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: the watchdog's socket, in the server's directory
SOCKET = "watchdog.sock"
_LONGEST = 200  # a project id, a password: far shorter


@dataclass(frozen=True)
class _Login:
    password: str = field(repr=False)
    server_pid: int
    directories: tuple[Path, ...]  # the project's databases' directories


class LoginKeeper:
    """The watchdog's side: passwords kept for the next run of each parked project.

    ``server_pid`` says which postmaster runs now: a password kept under another one is
    never handed (the server restarted, its RAM tablespace perhaps lost).
    """

    def __init__(self, root: Path, server_pid: Callable[[], int | None]) -> None:
        self._root = root
        self._server_pid = server_pid
        self._kept: dict[str, _Login] = {}
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def start(self) -> bool:
        """Listen on the socket (in a thread of its own); ``False`` when it cannot."""
        path = self._root / SOCKET
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a dead watchdog's (one watchdog per server)
            listener.bind(str(path))
            os.chmod(path, 0o600)
            listener.listen(8)
        except OSError as exc:
            log.debug("no password hand-off: %s", exc)
            listener.close()
            return False
        self._listener = listener
        threading.Thread(target=self._serve, name="pytest-neon-handoff", daemon=True).start()
        return True

    def keep(
        self, project_id: str, password: str, server_pid: int, directories: tuple[Path, ...]
    ) -> None:
        """Keep ``password`` for the run that claims ``project_id`` next."""
        with self._lock:
            self._kept[project_id] = _Login(password, server_pid, directories)

    def forget(self, project_id: str) -> None:
        """Hand nothing for ``project_id`` (its login is given another password)."""
        with self._lock:
            self._kept.pop(project_id, None)

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
                return
            with conn, contextlib.suppress(OSError):
                conn.settimeout(1.0)
                project_id = _read_line(conn)
                password = self.hand(project_id) if project_id else None
                conn.sendall((password or "").encode() + b"\n")


def ask(root: Path, project_id: str, timeout: float = 1.0) -> str | None:
    """The password the watchdog of the server in ``root`` kept for ``project_id``'s login;
    ``None`` when it has none (or no watchdog answers)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(root / SOCKET))
            conn.sendall(project_id.encode() + b"\n")
            return _read_line(conn) or None
    except (OSError, UnicodeDecodeError):
        return None


def _read_line(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(_LONGEST)
        if not chunk or len(data) > _LONGEST:
            return ""
        data += chunk
    return data[:-1].decode()
