"""How pytest-neon names and marks the branches it creates.

Ephemeral branches are named ``pytest-neon-<run id>-<suffix>`` (the run id is shared by
every process of an xdist run) and carry two annotations: who made them and which run.
Branches kept on purpose across runs (the migration cache) start with
``pytest-neon-cache-`` and are never swept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_neon.api.types import Branch

BRANCH_PREFIX = "pytest-neon-"
#: kept on purpose across runs (the migration cache): never swept
KEPT_PREFIX = BRANCH_PREFIX + "cache-"
ANNOTATION_KEY = "created-by"
ANNOTATION_VALUE = "pytest-neon"
RUN_ANNOTATION = "pytest-neon-run"


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
