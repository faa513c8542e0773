"""Settings from the environment (no engine here: Alembic's env.py imports this too)."""

from __future__ import annotations

import os

DEFAULT_DATABASE_URL = "postgresql://localhost/taskapp"


def database_url() -> str:
    """``DATABASE_URL`` as a SQLAlchemy URL for psycopg 3 (``postgresql+psycopg://``)."""
    url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
