"""Identifiers in the shapes Neon uses: branch, endpoint, project, operation ids and passwords."""

from __future__ import annotations

import re
import secrets
import string
import uuid

# Neon path ids (project, branch, endpoint) all match this pattern.
PATH_ID = re.compile(r"^[a-z0-9-]{1,60}$")

_ADJECTIVE_WORDS = """
    aged ancient autumn billowing bitter black blue bold broad calm cold cool crimson
    curly damp dark dawn delicate divine dry empty falling fancy flat floral fragrant
    frosty gentle green hidden holy icy jolly late lingering little lively long lucky
    misty morning muddy mute nameless noisy odd old orange patient plain polished proud
    purple quiet rapid raspy red restless rough round royal shiny shrill shy silent
    small snowy soft solitary sparkling spring square steep still summer super sweet
    throbbing tight tiny twilight wandering weathered white wild winter wispy withered
    yellow young
"""
_NOUN_WORDS = """
    art band bar base bird block boat bonus bread breeze brook bush butterfly cake cell
    cherry cloud credit darkness dawn dew disk dream dust feather field fire firefly
    flower fog forest frog frost glade glitter grass hall hat haze heart hill king lab
    lake leaf limit math meadow mode moon morning mountain mouse mud night paper pine
    poetry pond queen rain recipe resonance rice river salad scene sea shadow shape
    silence sky smoke snow snowflake sound star sun sunset surf term thunder tooth tree
    truth union unit violet voice water waterfall wave wildflower wind wood
"""
_ADJECTIVES = tuple(_ADJECTIVE_WORDS.split())
_NOUNS = tuple(_NOUN_WORDS.split())
_ALNUM = string.ascii_lowercase + string.digits


def _words() -> str:
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}"


def _suffix(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def branch_id() -> str:
    """A new branch id such as ``br-wispy-meadow-a1b2c3d4``."""
    return f"br-{_words()}-{_suffix(_ALNUM, 8)}"


def endpoint_id() -> str:
    """A new endpoint id such as ``ep-silent-smoke-a1b2c3d4``."""
    return f"ep-{_words()}-{_suffix(_ALNUM, 8)}"


def project_id() -> str:
    """A new project id such as ``floral-king-96188812``."""
    return f"{_words()}-{_suffix(string.digits, 8)}"


def operation_id() -> str:
    """A new operation id (a UUID 4, as Neon uses)."""
    return str(uuid.uuid4())


def request_id() -> str:
    """A new request id for the ``X-Neon-Request-Id`` header and error bodies."""
    return str(uuid.uuid4())


def real_database_name() -> str:
    """A unique, valid PostgreSQL identifier for a branch's real database (``nb_<12 hex>``)."""
    return f"nb_{secrets.token_hex(6)}"


def password() -> str:
    """A role password in Neon's style (``npg_`` and 12 letters or digits)."""
    return "npg_" + _suffix(string.ascii_letters + string.digits, 12)
