"""How pytest-neon names and marks the branches it creates.

Ephemeral branches are named ``pytest-neon-<run id>-<suffix>`` (the run id is shared by
every process of an xdist run) and carry two annotations: who made them and which run.
Branches kept on purpose across runs (the migration cache) start with
``pytest-neon-cache-`` and are never swept. A failing test's kept branch
(``--neon-keep-failed``) is ``pytest-neon-failed-<test>-<run id>``: another annotation
than the run's, so that no run deletes it or counts it as a live run's before it expires.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_neon.api.types import Branch

BRANCH_PREFIX = "pytest-neon-"
#: kept on purpose across runs (the migration cache): never swept
KEPT_PREFIX = BRANCH_PREFIX + "cache-"
ANNOTATION_KEY = "created-by"
ANNOTATION_VALUE = "pytest-neon"
RUN_ANNOTATION = "pytest-neon-run"
#: a failing test's kept branch: swept like the rest once expired, never before
FAILED_PREFIX = BRANCH_PREFIX + "failed-"
FAILED_ANNOTATION = "pytest-neon-failed-run"
#: Neon's limit on a branch name; PostgreSQL's on a database name (bytes)
MAX_BRANCH_NAME = 256
MAX_DATABASE_NAME = 63
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def branch_name(run_id: str, suffix: str) -> str:
    """The name of an ephemeral branch of run ``run_id``."""
    return f"{BRANCH_PREFIX}{run_id}-{suffix}"


def run_annotations(run_id: str) -> dict[str, str]:
    """The annotations every ephemeral branch of run ``run_id`` carries."""
    return {ANNOTATION_KEY: ANNOTATION_VALUE, RUN_ANNOTATION: run_id}


def made_by_us(branch: Branch) -> bool:
    """Whether ``branch`` carries pytest-neon's annotation."""
    return branch.annotations.get(ANNOTATION_KEY) == ANNOTATION_VALUE


def of_run(branch: Branch, run_id: str) -> bool:
    """Whether ``branch`` is an ephemeral branch of run ``run_id`` (name and annotation)."""
    return (
        branch.name.startswith(branch_name(run_id, ""))
        and branch.annotations.get(RUN_ANNOTATION) == run_id
    )


def ephemeral_of_another_run(branch: Branch, run_id: str) -> bool:
    """An ephemeral branch that pytest-neon made for a run other than ``run_id``."""
    return (
        branch.name.startswith(BRANCH_PREFIX)
        and not branch.name.startswith(KEPT_PREFIX)
        and made_by_us(branch)
        and branch.annotations.get(RUN_ANNOTATION) != run_id
        and not (branch.default or branch.protected)
    )


def failed_test_name(nodeid: str, run_id: str, *, limit: int = MAX_BRANCH_NAME) -> str:
    """``pytest-neon-failed-<test>-<run id>`` for test ``nodeid``, at most ``limit``
    characters (a cut test id ends with a hash of the whole, so names stay apart)."""
    test = nodeid.replace(".py::", "-").replace("::", "-").removesuffix(".py")
    test = _UNSAFE.sub("-", test).strip("-._") or "test"
    room = limit - len(FAILED_PREFIX) - len(run_id) - 1
    if len(test) > room:
        digest = hashlib.sha256(nodeid.encode()).hexdigest()[:8]
        test = test[: room - len(digest) - 1].rstrip("-._") + "-" + digest
    return f"{FAILED_PREFIX}{test}-{run_id}"


def failed_database_name(nodeid: str, run_id: str) -> str:
    """The local backend's kept database of test ``nodeid`` (a plain PostgreSQL name)."""
    name = failed_test_name(nodeid, run_id, limit=MAX_DATABASE_NAME).lower()
    return name.replace("-", "_").replace(".", "_")


def failed_annotations(run_id: str) -> dict[str, str]:
    """The annotations of a failing test's kept branch (not the run's: see the module)."""
    return {ANNOTATION_KEY: ANNOTATION_VALUE, FAILED_ANNOTATION: run_id}
