"""Whether the local backend can get a PostgreSQL at all (without starting one)."""

from __future__ import annotations

from pytest_neon.local.binaries import find_pg_bindir
from pytest_neon.local.pip_package import find_package
from pytest_neon.redact import redact


def local_postgres_available(postgres_url: str | None, source: str = "auto") -> tuple[bool, str]:
    """Whether the local backend can get a PostgreSQL, and a one-line reason."""
    if postgres_url:
        from pytest_neon.local.given_server import check_postgres_url

        try:
            check_postgres_url(postgres_url)
        except Exception as exc:
            return False, str(exc)
        return True, f"PostgreSQL at {redact(postgres_url)}"
    bindir = find_pg_bindir() if source in ("auto", "system") else None
    if bindir is not None:
        return True, f"PostgreSQL binaries in {bindir}"
    if source == "system":
        return False, "no PostgreSQL server binaries found"
    package = find_package()
    if package is None:
        return False, "no PostgreSQL server binaries and no PostgreSQL package (local extra)"
    return True, package.label
