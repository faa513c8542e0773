"""The migration cache: a migrated branch kept across runs, keyed on the migration inputs.

A run whose migrations did not change finds ``pytest-neon-cache-<key>`` and starts its
tests from it without running any migration. The key covers the fingerprint of the
migration inputs, the parent branch, the database and the role. The newest other cache
branch is kept (another CI job may still use it); older ones are pruned.
"""

from __future__ import annotations

import hashlib
import logging

from pytest_neon.api.types import Branch
from pytest_neon.branch_ops import BranchOps
from pytest_neon.errors import NeonError
from pytest_neon.naming import ANNOTATION_KEY, ANNOTATION_VALUE, KEPT_PREFIX, made_by_us

log = logging.getLogger("pytest_neon.cache")

CACHE_PREFIX = KEPT_PREFIX  # never swept by other runs
CACHE_ANNOTATION = "pytest-neon-cache"
KEEP_OTHERS = 1


def cache_key(ops: BranchOps, fingerprint: str) -> str:
    """The cache key of ``fingerprint`` for this run's parent branch, database and role."""
    parts = (fingerprint, ops.parent_id, ops.settings.database, ops.settings.role)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _cache_branches(ops: BranchOps) -> list[Branch]:
    return [
        b
        for b in ops.client.list_branches(ops.project_id, search=CACHE_PREFIX)
        if b.name.startswith(CACHE_PREFIX) and made_by_us(b)
    ]


def find_cached(ops: BranchOps, key: str) -> str | None:
    """The id of the cache branch for ``key``, if one exists and is ready."""
    with ops.counters.phase("migration cache lookup"):
        for branch in _cache_branches(ops):
            if branch.name == CACHE_PREFIX + key and branch.current_state != "init":
                return branch.id
    return None


def save_cache(ops: BranchOps, key: str, migrated_id: str) -> str:
    """Keep the migrated state as ``pytest-neon-cache-<key>`` (no expiry); return its id."""
    with ops.counters.phase("migration cache save"):
        cache_id = ops.create_kept_copy(
            CACHE_PREFIX + key,
            annotations={ANNOTATION_KEY: ANNOTATION_VALUE, CACHE_ANNOTATION: key},
            source_id=migrated_id,
        )
    prune(ops, key)
    return cache_id


def prune(ops: BranchOps, key: str) -> None:
    """Delete cache branches of other keys but the newest ``KEEP_OTHERS``."""
    try:
        others = [b for b in _cache_branches(ops) if b.name != CACHE_PREFIX + key]
        others.sort(key=lambda b: b.created_at.timestamp() if b.created_at else 0.0, reverse=True)
        for branch in others[KEEP_OTHERS:]:
            ops.client.delete_branch(ops.project_id, branch.id)
            log.info("pruned migration cache branch %s", branch.name)
    except NeonError as exc:
        log.warning("could not prune old migration cache branches: %s", exc)
