"""ini keys that take native TOML values on every pytest version the plugin supports.

pytest 9 reads ``[tool.pytest]`` in ``pyproject.toml`` with native TOML types
(``neon_keep_branches = false``, ``neon_branch_expiry = 300``) and checks them against
the type a key was registered with; ``[tool.pytest.ini_options]`` and ini files give
strings. Keys are registered so that both are accepted: as unions (``bool | str``) from
pytest 9.2, as strings before it, where a value of another type is read as written.
The plugin converts and checks what it gets, with its own one-line errors.
"""

from __future__ import annotations

import shlex
from typing import Any, Literal

import pytest

Kind = Literal["string", "bool", "int", "float", "args", "linelist"]

#: pytest 9.2 takes type expressions such as ``bool | str`` for ini keys
_UNIONS = pytest.version_tuple >= (9, 2)
_MISSING = object()


def add_ini(parser: pytest.Parser, name: str, help: str, kind: Kind, default: Any = None) -> None:
    """Register ini key ``name`` so that ``kind`` values come as native TOML or as text."""
    type_: Any = None  # a string; unset, pytest before 9 gives "" (for "string" it gives [])
    if kind == "bool" and _UNIONS:
        type_ = bool | str
    elif kind == "int" and _UNIONS:
        type_ = int | str
    elif kind == "float" and _UNIONS:
        type_ = float | str
    elif kind in ("args", "linelist"):
        type_ = kind
    parser.addini(name, help, type=type_, default=default)


def read_ini(config: pytest.Config, name: str) -> Any:
    """The value of ini key ``name`` as written: text, or a native TOML value.

    Before pytest 9.2, pytest refuses a native value whose type is not the registered
    one: that value is taken as it is, for the plugin to check.
    """
    try:
        return config.getini(name)
    except (pytest.UsageError, TypeError, ValueError):
        raw = _raw_value(config, name)
        if raw is _MISSING:
            raise
        return raw


def read_list(config: pytest.Config, name: str, kind: Literal["args", "linelist"]) -> list[str]:
    """The list ini key ``name`` holds: a TOML list, or text split as ``kind`` says."""
    value = read_ini(config, name)
    if isinstance(value, str):
        if kind == "args":
            return shlex.split(value)
        return [line.strip() for line in value.splitlines() if line.strip()]
    return [str(v) for v in value or ()]


def _raw_value(config: pytest.Config, name: str) -> Any:
    # pytest keeps what the configuration file says in ``_inicfg`` (9.x, values wrapped in
    # an object with ``.value``) or ``inicfg`` (earlier); only read when getini refused.
    table = getattr(config, "_inicfg", None)
    if table is None:
        table = getattr(config, "inicfg", None)
    if table is None or name not in table:
        return _MISSING
    value = table[name]
    return getattr(value, "value", value)
