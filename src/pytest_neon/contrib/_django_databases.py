# mypy: disable-error-code="import-untyped"
"""The Django integration's view of ``DATABASES``: entries rewritten from a branch's
connection string, and which aliases follow the branch in this process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

INI_DATABASES = "neon_django_databases"
POSTGRES_ENGINE = "django.db.backends.postgresql"
ALL_ALIASES = "__all__"

# Parameters that send a connection somewhere else than the branch: dropped from OPTIONS
# unless the branch's connection string sets them itself.
_RETARGETING = ("service", "passfile", "hostaddr", "sslmode")
_CONNECTION_KEYS = ("host", "port", "dbname", "user", "password")


def database_settings(dsn: str, current: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A ``DATABASES`` entry for ``dsn``, keeping what else ``current`` sets.

    ``HOST``, ``PORT``, ``NAME``, ``USER``, ``PASSWORD`` and ``TEST["NAME"]`` come from
    the connection string; its other parameters (``sslmode``, ``options``…) go to
    ``OPTIONS``, replacing the same keys. ``OPTIONS`` that would reach another server
    (``service``, ``passfile``, ``hostaddr``, an ``sslmode`` the string does not set) are
    dropped; the rest (``isolation_level``, ``pool``…) are kept. A non-PostgreSQL
    ``ENGINE`` becomes ``django.db.backends.postgresql``.
    """
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    entry = dict(current or {})
    engine = str(entry.get("ENGINE") or "")
    if "postg" not in engine.lower():
        engine = POSTGRES_ENGINE
    options = {k: v for k, v in dict(entry.get("OPTIONS") or {}).items() if k not in _RETARGETING}
    options.update({k: v for k, v in params.items() if k not in _CONNECTION_KEYS})
    name = params.get("dbname", "")
    test = dict(entry.get("TEST") or {})
    test["NAME"] = name
    entry.update(
        ENGINE=engine,
        NAME=name,
        USER=params.get("user", ""),
        PASSWORD=params.get("password", ""),
        HOST=params.get("host", ""),
        PORT=params.get("port", ""),
        OPTIONS=options,
        TEST=test,
        # A reset cuts server connections: a persistent one is checked before reuse.
        CONN_HEALTH_CHECKS=True,
    )
    return entry


def point_databases(dsn: str, aliases: Iterable[str]) -> None:
    """Point Django's ``aliases`` at ``dsn`` (in place) and close this thread's connections."""
    from django.conf import settings
    from django.db import connections

    connections.close_all()
    for alias in aliases:
        entries = [settings.DATABASES.setdefault(alias, {})]
        configured = connections.settings.get(alias)
        if configured is not None and configured is not entries[0]:
            entries.append(configured)
        for entry in entries:
            engine = entry.get("ENGINE")
            entry.update(database_settings(dsn, entry))
            if engine != entry["ENGINE"]:
                with contextlib.suppress(AttributeError):
                    del connections[alias]  # the wrapper was built for another backend


def close_connections() -> None:
    """Close Django's connections of this thread."""
    from django.db import connections

    connections.close_all()


class DjangoState:
    """What the Django integration knows in this process."""

    managed: tuple[str, ...] | None = None  # resolved once Django's settings are loaded
    migrating: bool = False
    wrote: bool = False  # a TransactionTestCase teardown ran on a managed alias
    ready: bool = False  # django_db_setup is done: the aliases point at the worker branch
    pointed: str | None = None  # the connection string the aliases point at

    def __init__(self, requested: tuple[str, ...], migrate: bool) -> None:
        self.requested = requested
        self.migrate = migrate

    def note_write(self) -> None:
        """A ``TransactionTestCase`` teardown ran on an alias on the branch."""
        self.wrote = True

    def point(self, dsn: str) -> None:
        """Point the managed aliases at ``dsn`` (see :func:`point_databases`)."""
        point_databases(dsn, self.aliases())
        self.pointed = dsn

    def aliases(self) -> tuple[str, ...]:
        """The aliases on the branch: those asked for, plus their test mirrors."""
        if self.managed is None:
            from django.conf import settings

            known = list(settings.DATABASES)
            wanted = known if ALL_ALIASES in self.requested else list(self.requested)
            missing = [a for a in wanted if a not in known and a != "default"]
            if missing:
                raise pytest.UsageError(
                    f"pytest-neon: {INI_DATABASES} names {', '.join(missing)}, which "
                    f"settings.DATABASES does not define (it has: {', '.join(known) or 'none'})"
                )
            for alias in known:
                mirror = (settings.DATABASES[alias].get("TEST") or {}).get("MIRROR")
                if mirror in wanted and alias not in wanted:
                    wanted.append(alias)
            self.managed = tuple(dict.fromkeys(wanted))
        return self.managed


#: the Django integration's state of this process, on ``config.stash``
DJANGO_STATE = pytest.StashKey[DjangoState]()


def django_state(config: pytest.Config) -> DjangoState:
    """The Django integration's state of this process."""
    return config.stash[DJANGO_STATE]
