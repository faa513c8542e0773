"""A reservation on the kept server: what it shows of itself."""

from __future__ import annotations

from pathlib import Path

from pytest_neon.local.lazy_start import Reservation, login_role


def test_a_reservation_shows_no_password_and_gives_dsns() -> None:
    password = "pw/with:odd@chars-913"
    reservation = Reservation(
        root=Path("/srv/kept"),
        port=5433,
        project_id="pytest-neon-r1",
        branch_name="b",
        database="pytest_neon_r1",
        password=password,
    )
    shown = repr(reservation)
    assert password not in shown
    assert "913" not in shown
    assert "port=5433" in shown
    assert "database='pytest_neon_r1'" in shown
    assert reservation.login == login_role("pytest-neon-r1")
    assert reservation.dsn == (
        f"postgresql://{login_role('pytest-neon-r1')}:pw%2Fwith%3Aodd%40chars-913"
        "@127.0.0.1:5433/pytest_neon_r1"
    )
