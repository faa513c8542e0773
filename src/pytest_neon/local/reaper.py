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
import signal
import subprocess
import sys
import time
from contextlib import suppress
from typing import Any

POLL_SECONDS = 0.5


class Reaper:
    """The owner's handle on its watchdog process."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_neon.local.reaper"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(plan).encode())
        self._proc.stdin.close()

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


def clean_up(plan: dict[str, Any]) -> None:
    """Do what ``plan`` says: stop a cluster and remove its files, or drop a project."""
    if plan["kind"] == "cluster":
        from pytest_neon.local.postgres import remove_cluster

        remove_cluster(plan)
    elif plan["kind"] == "project":
        from pytest_neon.local.emulator import Emulator

        emulator = Emulator(plan["url"], project_id=plan["project_id"], port=0)
        emulator.start()
        emulator.stop(drop=True)


def main() -> int:
    """The watchdog: read the plan, wait for the parent to go, then clean up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    plan = json.loads(sys.stdin.read())
    owner = os.getppid()
    while os.getppid() == owner:  # a dead parent's children are adopted by another
        time.sleep(POLL_SECONDS)
    clean_up(plan)
    return 0


if __name__ == "__main__":
    sys.exit(main())
