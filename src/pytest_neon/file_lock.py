"""An exclusive lock on a file, shared by the processes of a machine: ``flock`` where
there is one (nothing to import), else the ``filelock`` package (Windows)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(
    path: Path,
    *,
    timeout: float | None = None,
    busy: Callable[[], Exception] = lambda: TimeoutError("a file lock stayed taken"),
) -> Iterator[None]:
    """Hold the lock on ``path`` (made if missing). After ``timeout`` s of waiting for it
    (``None``: as long as it takes), ``busy()`` is raised."""
    if sys.platform == "win32":
        yield from _with_filelock(path, timeout, busy)
        return
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise busy() from None
                    time.sleep(0.05)
        yield  # (the lock goes with the descriptor)
    finally:
        os.close(fd)


if sys.platform == "win32":  # (type-checked there only: filelock is Windows' dependency)

    def _with_filelock(
        path: Path, timeout: float | None, busy: Callable[[], Exception]
    ) -> Iterator[None]:
        from filelock import FileLock, Timeout

        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            raise busy() from None
        try:
            yield
        finally:
            lock.release()
