"""The kept local PostgreSQL's watchdog: stops the server once nobody used it for a while,
and drops what ended or killed runs left on it.

Started (detached, one per server) by the run that starts or reuses the server, it checks
every few seconds whether any other client is connected. Runs hold connections for as long
as they run, so a server with no client for ``idle_timeout`` seconds (the file of that name
in the server's directory, rewritten by each run) is idle: the watchdog takes the
directory's lock, so that no run starts meanwhile, and stops the server. Every 30 s, and
at once when a run that ended asks (a ``sweep`` request), it drops the projects of runs
that are gone (a run's cleanup costs it nothing) but those parked for the next run
(:mod:`pytest_neon.local.parking`), and failing tests' databases kept past their expiry
(``--neon-keep-failed``). When a run parked its project (a ``ready`` request), it makes
that project ready for the next run at once, before anything else, and keeps its login's
new password for that run. Runs ask over its socket
(:mod:`~pytest_neon.local.watchdog_socket`), or leave a file of the request's name when
the socket does not answer. Usage:
``python -m pytest_neon.local.idle_watchdog <server directory>``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from pytest_neon.local.server_link import ServerLink
from pytest_neon.local.shared_server import (
    IDLE_FILE,
    LAST_USE,
    READY_REQUEST,
    SWEEP_REQUEST,
    WATCHDOG_PID,
    locked,
    running_port,
    socket_url,
    stamped_cluster,
)
from pytest_neon.local.watchdog_socket import SOCKET, WatchdogSocket

POLL_SECONDS = 2.0
REQUEST_POLL = 0.05  # how often a run's request for a sweep is looked for
SWEEP_EVERY = 30.0


def _idle_timeout(root: Path) -> float:
    try:
        return max(10.0, float((root / IDLE_FILE).read_text().strip()))
    except (OSError, ValueError):
        return 600.0


def _since_last_use(root: Path) -> float:
    """Seconds since a run last said it counts on the server."""
    try:
        return max(0.0, time.time() - (root / LAST_USE).stat().st_mtime)
    except OSError:
        return float("inf")


def _other_clients(link: ServerLink, url: str) -> int | None:
    """Client connections other than this one (``None``: the server does not answer)."""
    import psycopg

    try:
        with link.using(url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchone()
    except psycopg.Error:
        return None
    return int(row[0]) if row else 0


def _stop(root: Path) -> None:
    cluster = stamped_cluster(root)
    if cluster is None:
        return
    args = ["pg_ctl", "-D", str(cluster.data_dir), "-m", "fast", "-w", "-t", "30", "stop"]
    with contextlib.suppress(Exception):
        cluster.run(args, timeout=40)
    cluster.stop_server()  # whatever is left


def watch(root: Path) -> None:
    """Watch the server in ``root`` until it stops (or is stopped for being idle)."""
    link = ServerLink()
    try:
        _watch(root, link)
    finally:
        link.close()


def _watch(root: Path, link: ServerLink) -> None:
    last_busy = time.monotonic()
    last_sweep = 0.0
    mailbox = WatchdogSocket(root, lambda: _server_pid(root))
    keeper = mailbox if mailbox.start() else None
    while True:
        requested = _wait_for_request(root, POLL_SECONDS, keeper)
        port = _port(root)
        if port is None:
            return  # stopped by somebody else
        url = socket_url(root, port)
        if READY_REQUEST in requested:  # the next run may be starting: first, and alone
            _make_ready(root, keeper, link, url)
            if requested == {READY_REQUEST}:
                continue
        clients = _other_clients(link, url)
        now = time.monotonic()
        if clients is None:
            continue
        if requested or now - last_sweep > SWEEP_EVERY:
            last_sweep = now
            if READY_REQUEST not in requested:  # (else done above)
                _make_ready(root, keeper, link, url)
            _sweep(root, link, url)
        if clients:
            last_busy = now
            continue
        idle = min(now - last_busy, _since_last_use(root))
        if idle < _idle_timeout(root):
            continue
        with locked(root):
            if _other_clients(link, url):
                last_busy = time.monotonic()
                continue
            link.close()
            _stop(root)
        return


def _make_ready(root: Path, keeper: WatchdogSocket | None, link: ServerLink, url: str) -> None:
    """Make the parked projects ready for the next run (on the link's connection)."""
    from pytest_neon.local.parking import make_ready

    with contextlib.suppress(Exception), link.using(url) as conn:
        make_ready(root, url, conn, keeper)


def _sweep(root: Path, link: ServerLink, url: str) -> None:
    """Drop what dead runs left, and failing tests' data (--neon-keep-failed) once expired."""
    from pytest_neon.local.dead_runs import drop_dead_projects
    from pytest_neon.local.kept_failures import drop_expired_quietly
    from pytest_neon.local.parking import protected_projects

    with contextlib.suppress(Exception), link.using(url) as conn:
        drop_dead_projects(url, lambda: protected_projects(root), conn)
    with contextlib.suppress(Exception), link.using(url) as conn:
        drop_expired_quietly(url, conn)


def _wait_for_request(root: Path, seconds: float, mailbox: WatchdogSocket | None) -> set[str]:
    """Sleep ``seconds``, or less when a run asks for something (a sweep, a parked
    project made ready): what was asked (the requests are taken). Runs ask over the
    socket; a request left as a file (when the socket did not answer) is seen within
    ``seconds``, or within :data:`REQUEST_POLL` when the socket is not there."""
    if mailbox is not None:
        return mailbox.wait(seconds) | _requests_left(root)
    deadline = time.monotonic() + seconds
    while True:
        asked = _requests_left(root)
        left = deadline - time.monotonic()
        if asked or left <= 0:
            return asked
        time.sleep(min(REQUEST_POLL, left))


def _requests_left(root: Path) -> set[str]:
    asked = set()
    for name in (READY_REQUEST, SWEEP_REQUEST):
        with contextlib.suppress(FileNotFoundError):
            (root / name).unlink()
            asked.add(name)
    return asked


def _server_pid(root: Path) -> int | None:
    from pytest_neon.local.processes import read_postmaster_pid

    cluster = stamped_cluster(root)
    return None if cluster is None else read_postmaster_pid(cluster.data_dir)


def _port(root: Path) -> int | None:
    cluster = stamped_cluster(root)
    return None if cluster is None else running_port(cluster)


def main() -> int:
    """Watch the server whose directory is the first argument."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    root = Path(sys.argv[1])
    try:
        watch(root)
    finally:
        with contextlib.suppress(OSError, ValueError):
            if int((root / WATCHDOG_PID).read_text()) == os.getpid():
                (root / WATCHDOG_PID).unlink()
                (root / SOCKET).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
