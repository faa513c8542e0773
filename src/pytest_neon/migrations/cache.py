"""The migration cache on Neon: a migrated branch kept across runs, keyed on the migration
inputs, shared by every run on the project (CI shards, laptops).

A run whose migrations did not change finds ``pytest-neon-cache-<key>`` and starts its
tests from it without running any migration. The key covers the fingerprint of the
migration inputs, the parent branch, the database and the role.

Runs that start together with the same key migrate once. The first to create the *claim*
``pytest-neon-cache-<key>-building`` (branch names are unique in a project) migrates on
it; the others see the name taken and wait for the cache (bounded by ``wait_timeout``, then
they migrate on their own, publishing nothing). Once migrated, the claim is renamed to the
cache's name and loses its expiry in one call: a cache branch is never seen before it
holds the migrated state. A claimer that dies leaves a claim that expires; one whose
migrations fail deletes it, and a waiter claims in its turn.

The newest cache of another key is kept (another CI job may still use it); older ones are
pruned, but never one that a live run of another may have started from (one whose
branches are newer than it).
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

from pytest_neon.branch_ops import BranchOps
from pytest_neon.clock import utcnow
from pytest_neon.errors import NeonConflictError, NeonError
from pytest_neon.naming import (
    ANNOTATION_KEY,
    ANNOTATION_VALUE,
    KEPT_PREFIX,
    RUN_ANNOTATION,
    branch_name,
    ephemeral_of_another_run,
    made_by_us,
)
from pytest_neon.neon_branch import NeonBranch

if TYPE_CHECKING:
    from pytest_neon.api.types import Branch

log = logging.getLogger("pytest_neon.cache")

CACHE_PREFIX = KEPT_PREFIX  # never swept by other runs
CACHE_ANNOTATION = "pytest-neon-cache"
CLAIM_SUFFIX = "-building"
KEEP_OTHERS = 1


def cache_key(ops: BranchOps, fingerprint: str) -> str:
    """The cache key of ``fingerprint`` for this run's parent branch, database and role."""
    parts = (fingerprint, ops.parent_id, ops.settings.database, ops.settings.role)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def claim_name(key: str) -> str:
    """The name of the branch a run migrates on while it builds the cache of ``key``."""
    return CACHE_PREFIX + key + CLAIM_SUFFIX


def claim_annotations(run_id: str, key: str) -> dict[str, str]:
    """The claim's annotations (the cache keeps them): who made it, the key, the run."""
    return {ANNOTATION_KEY: ANNOTATION_VALUE, CACHE_ANNOTATION: key, RUN_ANNOTATION: run_id}


def _cache_branches(ops: BranchOps) -> list[Branch]:
    return [
        b
        for b in ops.client.list_branches(ops.project_id, search=CACHE_PREFIX)
        if b.name.startswith(CACHE_PREFIX) and made_by_us(b)
    ]


def look_up(ops: BranchOps, key: str) -> tuple[str | None, bool]:
    """(the id of the ready cache branch of ``key`` or ``None``, whether a run claims it)."""
    with ops.counters.phase("migration cache lookup"):
        branches = _cache_branches(ops)
    ready = next(
        (b.id for b in branches if b.name == CACHE_PREFIX + key and b.current_state != "init"),
        None,
    )
    return ready, any(b.name == claim_name(key) for b in branches)


def claim(ops: BranchOps, key: str) -> NeonBranch | None:
    """Create the claim of ``key`` (the branch to migrate on); ``None`` when another run
    holds it."""
    try:
        return ops.create(
            "migrations",
            name=claim_name(key),
            annotations=claim_annotations(ops.run_id, key),
        )
    except NeonConflictError as exc:
        if exc.status != 409:
            raise
        return None


def claim_by_rename(ops: BranchOps, key: str, branch: NeonBranch) -> bool:
    """Claim ``key`` by renaming ``branch`` (the run's reserved migration branch: no new
    branch, so a run at the branch limit can claim); ``False`` when another run holds it."""
    try:
        ops.client.rename_branch(ops.project_id, branch.branch_id, claim_name(key))
    except NeonConflictError as exc:
        if exc.status != 409:
            raise
        return False
    return True


def publish(ops: BranchOps, key: str, claimed: NeonBranch) -> str:
    """Make the migrated claim the cache of ``key`` (renamed, no expiry); prune older caches.

    Returns the source tests start from: the cache, or the claim itself if a cache of that
    key appeared meanwhile (the claim then stays the run's, renamed as its branches are so
    that the run's end finds and deletes it).
    """
    with ops.counters.phase("migration cache save"):
        try:
            ops.client.publish_branch(ops.project_id, claimed.branch_id, CACHE_PREFIX + key)
        except NeonConflictError as exc:
            if exc.status != 409:
                raise
            log.info("a cache of %s appeared meanwhile: this run keeps its own", key)
            ops.client.rename_branch(
                ops.project_id, claimed.branch_id, branch_name(ops.run_id, "migrated")
            )
            return claimed.branch_id
    ops.forget(claimed.branch_id)  # the cache outlives the run
    prune(ops, key)
    return claimed.branch_id


def prune(ops: BranchOps, key: str) -> None:
    """Delete cache branches of other keys but the newest ``KEEP_OTHERS``, and but those
    a live run of another may have started from."""
    try:
        branches = ops.client.list_branches(ops.project_id)
        now = utcnow()
        live = [
            b.created_at
            for b in branches
            if ephemeral_of_another_run(b, ops.run_id)
            and b.created_at is not None
            and (b.expires_at is None or b.expires_at > now)
        ]
        others = [
            b
            for b in branches
            if b.name.startswith(CACHE_PREFIX)
            and made_by_us(b)
            and not b.name.endswith(CLAIM_SUFFIX)
            and b.name != CACHE_PREFIX + key
        ]
        others.sort(key=lambda b: b.created_at.timestamp() if b.created_at else 0.0, reverse=True)
        for branch in others[KEEP_OTHERS:]:
            made = branch.created_at
            if made is None or any(started >= made for started in live):
                continue  # a run started since may use it: a later publish prunes it
            ops.client.delete_branch(ops.project_id, branch.id)
            log.info("pruned migration cache branch %s", branch.name)
    except NeonError as exc:
        log.warning("could not prune old migration cache branches: %s", exc)
