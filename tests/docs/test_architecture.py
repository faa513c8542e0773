"""ARCHITECTURE.md names every module of the package: the map stays true as code moves."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "pytest_neon"


def test_every_module_is_on_the_map() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    named = set(re.findall(r"`([A-Za-z_/.]+?)(?:\.py)?`", text))
    missing = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.stem not in ("__init__", "__main__")
        and path.stem not in named
        and f"{path.parent.name}/" not in named  # a package described as a whole
    ]
    assert missing == [], f"modules not in ARCHITECTURE.md: {missing}"


def test_every_module_on_the_map_exists() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    stems = {p.stem for p in PACKAGE.rglob("*.py")}
    mentioned = set(re.findall(r"`([a-z_]+)\.py`", text)) - {"conftest"}  # users' files
    assert mentioned - stems == set()
