"""The run's migrations: the gate (once per run), the cache, the schema fingerprint, and
the flow that ties them (:class:`Migrations`)."""

from pytest_neon.migrations.runner import (
    MigratedElsewhereError,
    Migrations,
    Source,
    WrongBranchError,
)

__all__ = ["MigratedElsewhereError", "Migrations", "Source", "WrongBranchError"]
