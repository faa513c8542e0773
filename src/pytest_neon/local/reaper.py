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
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_neon.local.emulator.plane.control_plane import ControlPlane
    from pytest_neon.local.emulator.sql.server import SqlServer

POLL_SECONDS = 0.5


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
        assert self._proc.stdout is not None
        self._proc.stdin.write(json.dumps({**plan, "owner": os.getpid()}).encode())
        self._proc.stdin.close()
        ready = select.select([self._proc.stdout], [], [], READY_TIMEOUT)[0]
        if not ready or self._proc.stdout.read(1) != READY:
            self._proc.kill()
            with suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            raise OSError(f"the cleanup watchdog did not start (exit status {self._proc.poll()})")
        self._proc.stdout.close()

    @property
    def pid(self) -> int:
        """The watchdog's process id."""
        return self._proc.pid

    def dismiss(self) -> None:
        """The owner cleans up itself: stop the watchdog (it does nothing then)."""
        with suppress(OSError):
            self._proc.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)


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
        return


def _close(server: SqlServer | None, plane: ControlPlane | None) -> None:
    if plane is not None:
        plane.close()
    if server is not None:
        server.close()


def main() -> int:
    """The watchdog: read the plan, wait for the owner to go, then clean up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    plan = json.loads(sys.stdin.read())
    sys.stdout.buffer.write(READY)
    sys.stdout.buffer.flush()
    while os.getppid() == plan["owner"]:  # a dead owner's children are adopted by another
        time.sleep(POLL_SECONDS)
    clean_up(plan)
    return 0


if __name__ == "__main__":
    sys.exit(main())
