"""Alembic environment: DATABASE_URL, or a connection handed over in config.attributes."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from taskapp.config import database_url
from taskapp.models import Base

config = context.config
target_metadata = Base.metadata


def run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (given := config.attributes.get("connection")) is not None:
    run(given)  # pytest-neon (or any caller) passes a connection to its branch
else:
    with create_engine(database_url(), poolclass=pool.NullPool).connect() as connection:
        run(connection)
