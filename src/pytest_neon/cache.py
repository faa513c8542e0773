"""The migration cache: a migrated branch kept across runs, keyed on the migration inputs.

A run whose migrations did not change finds ``pytest-neon-cache-<key>`` and starts its
tests from it without running any migration. The key covers the fingerprint of the
migration inputs, the parent branch, the database and the role. The newest other cache
branch is kept (another CI job may still use it); older ones are pruned.
"""

from __future__ import annotations

import hashlib
import logging

from pytest_neon.branches import (
    ANNOTATION_KEY,
    ANNOTATION_VALUE,
    KEPT_PREFIX,
    NeonRun,
    made_by_us,
)
from pytest_neon.errors import NeonError
from pytest_neon.models import Branch

log = logging.getLogger("pytest_neon.cache")

CACHE_PREFIX = KEPT_PREFIX  # never swept by other runs
CACHE_ANNOTATION = "pytest-neon-cache"
KEEP_OTHERS = 1


def cache_key(run: NeonRun, fingerprint: str) -> str:
    """The cache key of ``fingerprint`` for this run's parent branch, database and role."""
    parts = (fingerprint, run.parent_id, run.settings.database, run.settings.role)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _cache_branches(run: NeonRun) -> list[Branch]:
    return [
        b
        for b in run.client.list_branches(run.project_id, search=CACHE_PREFIX)
        if b.name.startswith(CACHE_PREFIX) and made_by_us(b)
    ]


def find_cached(run: NeonRun, key: str) -> str | None:
    """The id of the cache branch for ``key``, if one exists and is ready."""
    with run.phase("migration cache lookup"):
        for branch in _cache_branches(run):
            if branch.name == CACHE_PREFIX + key and branch.current_state != "init":
                return branch.id
    return None


def save_cache(run: NeonRun, key: str, migrated_id: str) -> str:
    """Keep the migrated state as ``pytest-neon-cache-<key>`` (no expiry); return its id."""
    with run.phase("migration cache save"):
        created = run.client.create_branch(
            run.project_id,
            name=CACHE_PREFIX + key,
            parent_id=run.parent_id,
            annotations={ANNOTATION_KEY: ANNOTATION_VALUE, CACHE_ANNOTATION: key},
        )
        run.client.settle(run.project_id, created)
        run.counters.branches_created += 1
        result = run.client.restore_branch(
            run.project_id, created.branch.id, source_branch_id=migrated_id
        )
        run.client.wait_for_operations(run.project_id, result.operations)
    prune(run, key)
    return created.branch.id


def prune(run: NeonRun, key: str) -> None:
    """Delete cache branches of other keys but the newest ``KEEP_OTHERS``."""
    try:
        others = [b for b in _cache_branches(run) if b.name != CACHE_PREFIX + key]
        others.sort(key=lambda b: b.created_at.timestamp() if b.created_at else 0.0, reverse=True)
        for branch in others[KEEP_OTHERS:]:
            run.client.delete_branch(run.project_id, branch.id)
            log.info("pruned migration cache branch %s", branch.name)
    except NeonError as exc:
        log.warning("could not prune old migration cache branches: %s", exc)
