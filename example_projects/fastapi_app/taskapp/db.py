"""The database: one engine, built from ``DATABASE_URL`` when the app is imported."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from taskapp.config import database_url

engine = create_engine(database_url())
SessionLocal = sessionmaker(engine, expire_on_commit=False)


def get_db() -> Iterator[Session]:
    """FastAPI dependency: a session per request."""
    with SessionLocal() as session:
        yield session
