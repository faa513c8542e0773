"""The end-of-run summary: counters from every process, merged and printed."""

from __future__ import annotations

from typing import Any


def merge_summary(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Add ``other``'s counters to ``into`` (numbers and per-name numbers add up)."""
    for key, value in other.items():
        if isinstance(value, dict):
            target = into.setdefault(key, {})
            for name, amount in value.items():
                target[name] = target.get(name, 0) + amount
        elif isinstance(value, list):
            into.setdefault(key, []).extend(value)
        elif isinstance(value, str):
            if value:
                into[key] = value
        else:
            into[key] = into.get(key, 0) + value


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
    phases = summary.get("phases") or {}
    others = phases.get("wait for branches", 0.0) + phases.get("wait for migrations", 0.0)
    if others >= 0.005:
        lines[0] += f", waited for other runs: {others:.2f}s"
    migrated = phases.get("migrations")
    if summary.get("migration_cache") == "hit":
        lines[0] += ", migrations: cached"
    elif migrated is not None and migrated >= 0.005:
        lines[0] += f", migrations: {migrated:.2f}s"
    lines += kept_lines(summary)
    if verbose:
        for name, seconds in sorted((summary.get("phases") or {}).items()):
            lines.append(f"  {name}: {seconds:.3f}s")
        calls = summary.get("calls") or {}
        if calls:
            lines.append("  calls: " + ", ".join(f"{k}={v}" for k, v in sorted(calls.items())))
    return lines


def kept_lines(summary: dict[str, Any]) -> list[str]:
    """The failing tests whose data was kept (``--neon-keep-failed``), and the cap's line."""
    kept = summary.get("kept_failed") or []
    lines = [f"kept the data of {len(kept)} failing test(s) (--neon-keep-failed):"] if kept else []
    lines += [f"  {line}" for line in sorted(kept)]
    capped = summary.get("kept_failed_capped", 0)
    if capped:
        cap = summary.get("kept_failed_cap", "")
        lines.append(
            f"the cap of {cap} kept per run was reached (--neon-keep-failed={cap}): "
            f"{capped} more failing test(s) not kept"
        )
    return lines
