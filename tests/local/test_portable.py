"""Process lookups and the cluster's directory, as on any platform: real processes, the
choice macOS gets (no ``/proc``, no ``/dev/shm``) made on this machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pytest_neon.local.binaries import find_pg_bindir
from pytest_neon.local.launcher import start_postgres
from pytest_neon.local.processes import child_pids, pid_alive, pids_mentioning
from pytest_neon.local.space import default_base_dir, ram_dir


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process with ``tmp_path`` as its last argument."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(tmp_path)])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- processes


def test_a_running_child_is_found_and_alive(
    sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    assert pid_alive(sleeper.pid)
    assert sleeper.pid in child_pids(os.getpid())
    assert pids_mentioning(tmp_path, os.geteuid()) == [sleeper.pid]
    assert pids_mentioning(tmp_path, os.geteuid() + 1) == []  # another user's: none
    # an argument equal to the path, not one that contains it or that it contains
    assert pids_mentioning(Path(str(tmp_path)[:-1]), os.geteuid()) == []
    assert pids_mentioning(tmp_path / "data", os.geteuid()) == []

    sleeper.kill()
    sleeper.wait()
    assert not pid_alive(sleeper.pid)
    assert sleeper.pid not in child_pids(os.getpid())
    assert pids_mentioning(tmp_path, os.geteuid()) == []
    assert child_pids(sleeper.pid) == []  # a parent that is gone has none


def test_a_zombie_is_not_alive(sleeper: subprocess.Popen[bytes], tmp_path: Path) -> None:
    sleeper.kill()  # and not waited for: a zombie until the fixture reaps it
    deadline = time.monotonic() + 10
    while psutil.Process(sleeper.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the killed child did not become a zombie"
        time.sleep(0.01)
    assert not pid_alive(sleeper.pid)
    assert pids_mentioning(tmp_path, os.geteuid()) == []


def test_this_process_is_never_among_those_mentioning_a_path() -> None:
    own = psutil.Process().cmdline()
    arg = next((a for a in own if os.path.isabs(a) and str(Path(a)) == a), None)
    if arg is None:
        pytest.skip(f"no absolute path among this process's arguments: {own}")
    assert os.getpid() not in pids_mentioning(Path(arg), os.geteuid())


def test_pids_that_are_no_process_are_not_alive() -> None:
    assert not pid_alive(0)
    assert not pid_alive(-1)
    assert pid_alive(os.getpid())


# --------------------------------------------------------------------------- directories


def test_macos_has_no_ram_dir_and_uses_the_temp_dir() -> None:
    assert ram_dir("darwin") is None
    assert ram_dir("win32") is None
    assert default_base_dir("darwin") is None  # None: tempfile's directory


def test_linux_uses_dev_shm_when_it_has_room() -> None:
    shm = Path("/dev/shm")  # noqa: S108 - the directory under test
    if sys.platform != "linux" or not shm.is_dir():
        pytest.skip("no /dev/shm on this system")
    if shutil.disk_usage(shm).free < 1 << 30 or not os.access(shm, os.W_OK | os.X_OK):
        assert ram_dir("linux") is None
    else:
        assert ram_dir("linux") == shm
    assert ram_dir() == ram_dir(sys.platform)


@pytest.mark.skipif(find_pg_bindir() is None, reason="no PostgreSQL server binaries")
def test_a_cluster_in_the_temp_dir_stops_and_leaves_nothing() -> None:
    assert default_base_dir("darwin") is None  # macOS: the temp dir
    temp = Path(tempfile.gettempdir()).resolve()
    pg = start_postgres(prefer="system", base_dir=temp)
    try:
        assert pg.data_dir is not None
        data_dir = pg.data_dir
        assert data_dir.parent.parent == temp
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
        uid = psutil.Process(postmaster).uids().effective  # postgres's user, as root
        assert pids_mentioning(data_dir, uid) == [postmaster]
        assert pid_alive(postmaster)
        assert child_pids(postmaster)  # checkpointer, walwriter, ...
    finally:
        pg.stop()  # Cluster.stop
    assert not pid_alive(postmaster)
    assert pids_mentioning(data_dir, uid) == []
    assert not data_dir.exists()
    assert not data_dir.parent.exists()
