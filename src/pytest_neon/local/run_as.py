"""Which system user runs PostgreSQL: ``initdb`` and ``postgres`` refuse to run as root, so
as root they run as the ``postgres`` user, who must be able to reach their files."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import NamedTuple

RUN_AS_USER = "postgres"


class OsUser(NamedTuple):
    """A system user: name, user id and group id."""

    name: str
    uid: int
    gid: int


def user_named(name: str) -> OsUser:
    """The user ``name`` (``KeyError`` if there is none)."""
    import pwd

    entry = pwd.getpwnam(name)
    return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def unprivileged_user() -> OsUser | None:
    """The user to run PostgreSQL as when we are root (``None`` if there is none)."""
    try:
        user = user_named(RUN_AS_USER)
    except KeyError:
        return None
    return None if user.uid == 0 else user


def is_root() -> bool:
    """Whether this process runs as root."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def ensure_traversable(path: Path, user: OsUser) -> None:
    """Let ``user`` reach ``path``: add o+x (search only, not read) where it is missing."""
    groups = set(os.getgrouplist(user.name, user.gid))
    for ancestor in path.parents:
        st = ancestor.stat()
        if (
            (st.st_uid == user.uid and st.st_mode & stat.S_IXUSR)
            or (st.st_gid in groups and st.st_mode & stat.S_IXGRP)
            or st.st_mode & stat.S_IXOTH
        ):
            continue
        ancestor.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
