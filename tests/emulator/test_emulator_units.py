"""Small pieces of the emulator: id shapes, timestamps, DSNs, the rate limiter, settings."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest

from pytest_neon.local.emulator import FaultSettings, ids
from pytest_neon.local.emulator.faults import Faults, RateLimiter
from pytest_neon.local.emulator.sql.server import build_dsn
from pytest_neon.local.emulator.timestamps import parse_rfc3339, rfc3339


def test_ids_have_neons_shapes() -> None:
    assert re.fullmatch(r"br-[a-z]+-[a-z]+-[a-z0-9]{8}", ids.branch_id())
    assert re.fullmatch(r"ep-[a-z]+-[a-z]+-[a-z0-9]{8}", ids.endpoint_id())
    assert re.fullmatch(r"[a-z]+-[a-z]+-[0-9]{8}", ids.project_id())
    assert uuid.UUID(ids.operation_id()).version == 4
    assert re.fullmatch(r"nb_[0-9a-f]{12}", ids.real_database_name())
    assert re.fullmatch(r"npg_[A-Za-z0-9]{12}", ids.password())
    for make in (ids.branch_id, ids.endpoint_id, ids.project_id):
        assert ids.PATH_ID.match(make())
    assert len({ids.branch_id() for _ in range(200)}) == 200


def test_rfc3339() -> None:
    moment = datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert rfc3339(moment) == "2031-02-03T04:05:06Z"
    assert parse_rfc3339("2031-02-03T04:05:06Z") == moment
    assert parse_rfc3339("2031-02-03T06:05:06+02:00") == moment
    assert parse_rfc3339("2031-02-03t04:05:06.123456789z").microsecond == 123456
    for bad in ("2031-02-03", "2031-02-03T04:05Z", "2031-02-03T04:05:06", "now", ""):
        with pytest.raises(ValueError, match="RFC 3339"):
            parse_rfc3339(bad)


def test_build_dsn() -> None:
    assert (
        build_dsn("127.0.0.1", 5432, None, "neondb_owner", "p@ss/w:rd", "nb_1")
        == "postgresql://neondb_owner:p%40ss%2Fw%3Ard@127.0.0.1:5432/nb_1"
    )
    assert build_dsn("::1", 5433, "require", "r", "p", "d") == (
        "postgresql://r:p@[::1]:5433/d?sslmode=require"
    )
    assert build_dsn("/var/run/postgresql", 5432, None, "r", "p", "d") == (
        "postgresql://r:p@:5432/d?host=%2Fvar%2Frun%2Fpostgresql"
    )


def test_rate_limiter_refuses_above_the_rate() -> None:
    limiter = RateLimiter(3)
    assert [limiter.acquire() for _ in range(3)] == [None, None, None]
    retry = limiter.acquire()
    assert retry is not None
    assert retry >= 1


def test_fault_settings_are_validated() -> None:
    for bad in (
        {"fail_rate": 1.5},
        {"request_delay": -1},
        {"operation_delay": -0.1},
        {"rate_limit": 0},
    ):
        with pytest.raises(ValueError, match="must be"):
            FaultSettings(**bad)
    faults = Faults(FaultSettings())
    assert faults.injected_failure() is None
    assert faults.configure(fail_rate=1.0, seed=1).fail_rate == 1.0
    assert faults.injected_failure() in (503, 423)


def test_a_role_given_the_password_it_has_is_left_alone(postgres_url: str) -> None:
    """A kept server's runs give the shared owner role the password it has: no ALTER ROLE
    (and never the password itself in a statement: it is sent hashed)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from pytest_neon.local.emulator.scram_keys import scram_matches
    from pytest_neon.local.emulator.sql.cluster_roles import ClusterRoles
    from pytest_neon.local.emulator.sql.server import SqlServer

    name = f"pn_unit_{uuid.uuid4().hex[:8]}"
    server = SqlServer(postgres_url)
    roles = ClusterRoles(server)

    def verifier() -> str:
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (name,))
            return str(row.fetchone()[0])  # type: ignore[index]

    def logs_in(password: str) -> bool:
        params = conninfo_to_dict(postgres_url)
        try:
            psycopg.connect(
                make_conninfo("", **{**params, "user": name, "password": password})
            ).close()
        except psycopg.OperationalError:
            return False
        return True

    try:
        assert roles.ensure(name, "first-pw") is True
        first = verifier()
        assert first.startswith("SCRAM-SHA-256$")
        assert scram_matches(first, "first-pw")
        assert not scram_matches(first, "other-pw")
        assert roles.ensure(name, "first-pw") is False
        assert verifier() == first  # unchanged: the same salt, not a new ALTER
        assert roles.ensure(name, "second-pw") is False
        assert scram_matches(verifier(), "second-pw")
        assert logs_in("second-pw")
        assert not logs_in("first-pw")
    finally:
        roles.drop(name)
        server.close()
