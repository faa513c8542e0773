"""The end-of-run summary: counters from every process, merged and printed."""

from __future__ import annotations

from typing import Any

from pytest_neon.branches import NeonRun

_COUNTS = (
    "branches_created",
    "branches_swept",
    "resets_done",
    "resets_skipped",
    "api_calls",
    "api_retries",
)


def summary_of(run: NeonRun) -> dict[str, Any]:
    """The counters of one process's run, as plain JSON-able data."""
    c = run.counters
    stats = run.client.stats
    return {
        "branches_created": c.branches_created,
        "branches_swept": c.branches_swept,
        "resets_done": c.resets_done,
        "resets_skipped": c.resets_skipped,
        "api_calls": stats.calls,
        "api_retries": stats.retries,
        "waiting_seconds": stats.waiting_seconds,
        "phases": dict(c.phases),
        "migration_cache": c.migration_cache,
        "calls": dict(stats.by_call),
    }


def merge_summary(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Add ``other``'s counters to ``into``."""
    for key in _COUNTS:
        into[key] = into.get(key, 0) + int(other.get(key, 0))
    into["waiting_seconds"] = into.get("waiting_seconds", 0.0) + float(
        other.get("waiting_seconds", 0.0)
    )
    if other.get("migration_cache"):
        into["migration_cache"] = other["migration_cache"]
    for group in ("phases", "calls"):
        target = into.setdefault(group, {})
        for name, value in (other.get(group) or {}).items():
            target[name] = target.get(name, 0) + value


def summary_lines(summary: dict[str, Any], *, verbose: bool) -> list[str]:
    """Human lines for the terminal summary section."""
    lines = [
        f"branches created: {summary.get('branches_created', 0)}, "
        f"resets: {summary.get('resets_done', 0)} done / "
        f"{summary.get('resets_skipped', 0)} skipped, "
        f"API calls: {summary.get('api_calls', 0)} "
        f"({summary.get('api_retries', 0)} retried), "
        f"waiting on Neon: {summary.get('waiting_seconds', 0.0):.2f}s"
    ]
    if summary.get("branches_swept"):
        lines[0] += f", stale branches swept: {summary['branches_swept']}"
    if summary.get("migration_cache"):
        lines[0] += f", migration cache: {summary['migration_cache']}"
    if verbose:
        for name, seconds in sorted((summary.get("phases") or {}).items()):
            lines.append(f"  {name}: {seconds:.3f}s")
        calls = summary.get("calls") or {}
        if calls:
            lines.append("  calls: " + ", ".join(f"{k}={v}" for k, v in sorted(calls.items())))
    return lines
