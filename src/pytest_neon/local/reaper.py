"""A watchdog that cleans up after a pytest process killed without warning (``kill -9``).

The process that starts the local backend starts this one too, in a session of its own
(a Ctrl-C in the terminal does not reach it), and hands it what to clean on stdin: a
superuser DSN holds a password, which must never be on a command line. The watchdog waits
for its parent to go away. If the parent cleaned up itself, it stopped the watchdog first;
otherwise the watchdog stops the throwaway PostgreSQL and removes its directory, or drops
the run's emulated project (its databases and metadata) from a server given by URL.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_neon.local.emulator.plane.control_plane import ControlPlane
    from pytest_neon.local.emulator.sql.server import SqlServer

POLL_SECONDS = 0.5
log = logging.getLogger("pytest_neon.local")


READY = b"R"  # what the watchdog writes once it has its plan
READY_TIMEOUT = 30.0


class Reaper:
    """The owner's handle on its watchdog process (started and ready on return)."""

    def __init__(self, plan: dict[str, Any]) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_neon.local.reaper"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            env=env,
        )
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({**plan, "owner": os.getpid()}).encode())
        self._proc.stdin.close()
        # Not waited for here: the plan is in the pipe, and the watchdog acts on it even if
        # this process dies before it has read it. Whether it started is checked at the end.

    @property
    def pid(self) -> int:
        """The watchdog's process id."""
        return self._proc.pid

    def ready(self, timeout: float = READY_TIMEOUT) -> bool:
        """Whether the watchdog has read its plan (waits up to ``timeout`` seconds)."""
        assert self._proc.stdout is not None
        if self._proc.stdout.closed:
            return True
        ready = select.select([self._proc.stdout], [], [], timeout)[0]
        started = bool(ready) and self._proc.stdout.read(1) == READY
        self._proc.stdout.close()
        return started

    def hand_over(self) -> bool:
        """Have the watchdog clean up now, without waiting for it; ``False`` when it
        cannot (it never started, or is gone): the owner then cleans up itself."""
        if not self.ready(timeout=5) or self._proc.poll() is not None:
            return False
        try:
            self._proc.send_signal(signal.SIGUSR1)
        except OSError:
            return False
        # Reaped in the background: never left to the garbage collector while it runs
        # (a ResourceWarning, an error under filterwarnings=error).
        threading.Thread(target=self._proc.wait, name="pytest-neon-reaper", daemon=True).start()
        return True

    def dismiss(self) -> None:
        """The owner cleans up itself: stop the watchdog (it does nothing then)."""
        if self._proc.poll() is not None and not self.ready(timeout=0):
            log.warning(
                "pytest-neon: the cleanup watchdog had not started (exit status %s)",
                self._proc.returncode,
            )
        with suppress(OSError):
            self._proc.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)
        if self._proc.stdout is not None and not self._proc.stdout.closed:
            self._proc.stdout.close()


def clean_up(plan: dict[str, Any], *, patience: float = 30.0) -> None:
    """Do what ``plan`` says: stop a cluster and remove its files, or drop a project;
    then remove the other paths it names (the run's coordination directory)."""
    try:
        _clean_backend(plan, patience)
    finally:
        for path in plan.get("leftovers", []):
            shutil.rmtree(path, ignore_errors=True)


def _clean_backend(plan: dict[str, Any], patience: float) -> None:
    if plan["kind"] == "cluster":
        from pytest_neon.local.cluster import remove_cluster

        remove_cluster(plan)
    elif plan["kind"] == "project":
        drop_project(plan["url"], plan["project_id"], patience)


def drop_project(url: str, project_id: str, patience: float) -> None:
    """Drop the project's databases and metadata (as ``Emulator.stop(drop=True)`` does)."""
    from pytest_neon.local.emulator import ids
    from pytest_neon.local.emulator.faults import Faults, FaultSettings
    from pytest_neon.local.emulator.plane.control_plane import ControlPlane
    from pytest_neon.local.emulator.sql.server import SqlServer

    if not ids.PATH_ID.match(project_id):
        raise ValueError(f"project_id must match {ids.PATH_ID.pattern}")
    deadline = time.monotonic() + patience
    while True:
        server: SqlServer | None = None
        plane: ControlPlane | None = None
        try:
            server = SqlServer(url)
            plane = ControlPlane(server, project_id, faults=Faults(FaultSettings()))
            # the dead run's session may still hold the project's lock for a moment
            plane.open()
        except BaseException as exc:
            _close(server, plane)
            if not isinstance(exc, Exception) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
            continue
        try:
            plane.drop_everything()
        finally:
            _close(server, plane)
        from pytest_neon.local.lazy_start import drop_login

        drop_login(url, project_id)  # the run's login role, on the kept server
        return


def _close(server: SqlServer | None, plane: ControlPlane | None) -> None:
    if plane is not None:
        plane.close()
    if server is not None:
        server.close()


def main() -> int:
    """The watchdog: read the plan, wait for the owner to go, then clean up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, _handed_over)  # (before READY: the owner waits for it)
    plan = json.loads(sys.stdin.read())
    try:
        sys.stdout.buffer.write(READY)
        sys.stdout.buffer.flush()
    except OSError:  # the owner is gone already: clean up all the same
        pass
    try:
        while os.getppid() == plan["owner"]:  # a dead owner's children are adopted by another
            time.sleep(POLL_SECONDS)
    except HandedOver:
        pass
    clean_up(plan)
    return 0


class HandedOver(Exception):
    """The owner asked for the cleanup now (SIGUSR1), and is on its way out."""


def _handed_over(signum: int, frame: object) -> None:
    raise HandedOver


if __name__ == "__main__":
    sys.exit(main())
