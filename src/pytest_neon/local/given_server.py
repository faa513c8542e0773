"""A PostgreSQL given by URL: check that it answers, in one line and without its password."""

from __future__ import annotations

from pytest_neon.local.unavailable import PostgresUnavailableError, one_line
from pytest_neon.redact import redact, register_secret


def check_postgres_url(url: str, timeout: float = 5.0) -> None:
    """Raise :class:`PostgresUnavailableError` (one line, no password) unless ``url`` connects."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise PostgresUnavailableError(
            f"invalid PostgreSQL URL {redact(url)!r}: {one_line(str(exc))}"
        ) from None
    password = params.get("password")
    if isinstance(password, str):
        register_secret(password)
    where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
    who = (
        f"user {params.get('user') or '(default)'}, database {params.get('dbname') or '(default)'}"
    )
    try:
        with psycopg.connect(url, connect_timeout=max(2, round(timeout)), autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise PostgresUnavailableError(
            f"cannot connect to PostgreSQL at {where} ({who}): {one_line(str(exc))}"
        ) from None
