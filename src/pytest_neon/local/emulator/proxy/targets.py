"""What a connection to an endpoint leads to (:class:`Target`), or why not
(:class:`Refusal`): the control plane answers, the proxy asks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Target:
    """The real login behind an endpoint's role and logical database."""

    role: str
    password: str | None  # None: no such role (the login fails as a wrong password would)
    database: str  # the real database
    read_only: bool  # a read-only endpoint: its sessions may not write


class Refusal(Exception):
    """The connection is refused with this SQLSTATE and message (sent to the client)."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message


class Directory(Protocol):
    """Where the proxy looks up an endpoint's connections."""

    def target(self, endpoint_id: str, role: str, database: str) -> Target:
        """The login for ``role`` on the logical ``database`` through ``endpoint_id``;
        raises :class:`Refusal` (endpoint gone or suspended, no such database)."""
        ...
