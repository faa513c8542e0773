"""Local-PostgreSQL tests keep their directories outside pytest's base temp directory."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A fresh directory directly under the system temp dir.

    pytest puts ``/tmp/pytest-of-<user>`` back to mode 0700 whenever a pytest process starts
    (the example suites run some); as root, the ``postgres`` user running a test cluster
    could then no longer reach data directories below it.
    """
    path = Path(tempfile.mkdtemp(prefix="pytest-neon-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
