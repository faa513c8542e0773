"""``NeonBranch``: what a test gets to connect to its branch."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from pytest_neon.redact import redact

READ_ONLY_OPTION = "-c default_transaction_read_only=on"


@dataclass(frozen=True, repr=False)
class NeonBranch:
    """A branch a test runs on. ``repr`` never shows the password."""

    branch_id: str
    project_id: str
    connection_string: str = field(compare=False)
    host: str
    parent_id: str | None
    endpoint_id: str | None = None
    database_name: str = "neondb"
    role_name: str = "neondb_owner"
    read_only: bool = False

    def __repr__(self) -> str:
        return (
            f"NeonBranch(branch_id={self.branch_id!r}, project_id={self.project_id!r}, "
            f"host={self.host!r}, parent_id={self.parent_id!r}, "
            f"endpoint_id={self.endpoint_id!r}, database_name={self.database_name!r}, "
            f"role_name={self.role_name!r}, read_only={self.read_only!r}, "
            f"connection_string={redact(self.connection_string)!r})"
        )

    @property
    def pooled_connection_string(self) -> str:
        """The connection string through Neon's pooler (``-pooler`` after the endpoint id)."""
        if not self.endpoint_id or not self.host.startswith(self.endpoint_id + "."):
            return self.connection_string
        pooled = self.endpoint_id + "-pooler" + self.host[len(self.endpoint_id) :]
        return self.connection_string.replace("@" + self.host, "@" + pooled, 1)

    def as_read_only(self) -> NeonBranch:
        """The same branch with a connection string whose sessions are all read-only."""
        if self.read_only:
            return self
        return replace(
            self,
            connection_string=with_option(self.connection_string, READ_ONLY_OPTION),
            read_only=True,
        )


def with_option(dsn: str, option: str) -> str:
    """Add a server option (``-c name=value``) to a URL DSN's ``options`` parameter."""
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    existing = [v for k, v in query if k == "options"]
    rest = [(k, v) for k, v in query if k != "options"]
    rest.append(("options", " ".join([*existing, option]).strip()))
    encoded = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in rest)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, encoded, parts.fragment))


def with_credentials(dsn: str, user: str, password: str) -> str:
    """``dsn`` with another user and password (URL-encoded)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def host_of(dsn: str) -> str:
    """The host part of a URL DSN ('' when there is none)."""
    try:
        return urlsplit(dsn).hostname or ""
    except ValueError:
        return ""


def sqlalchemy_url(dsn: str) -> str:
    """A ``postgresql+psycopg://`` URL for SQLAlchemy from a ``postgresql://`` DSN."""
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix) :]
    return dsn
