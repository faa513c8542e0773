"""The in-process transport answers exactly as the emulator does over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_neon.api import NeonClient
from pytest_neon.errors import NeonAuthError, NeonNotFoundError
from pytest_neon.local.emulator import Emulator
from pytest_neon.local.transport import in_process_session

KEY = "transport-test-key-5c1e"


@pytest.fixture
def emulator(postgres_url: str) -> Iterator[Emulator]:
    with Emulator(postgres_url, api_key=KEY) as emu:
        yield emu
        emu.stop(drop=True)


def _clients(emu: Emulator, key: str = KEY) -> tuple[NeonClient, NeonClient]:
    over_http = NeonClient(key, api_host=emu.api_host)
    in_process = NeonClient(
        key, api_host=emu.api_host, session=in_process_session(emu.api_host, emu.api)
    )
    return over_http, in_process


def test_same_answers_as_over_http(emulator: Emulator) -> None:
    over_http, in_process = _clients(emulator)
    pid = emulator.project_id
    made = in_process.create_branch(pid, name="in-process", parent_id=emulator.default_branch_id)
    in_process.wait_for_operations(pid, made.operations)
    assert over_http.get_branch(pid, made.branch.id).name == "in-process"
    assert {b.id for b in over_http.list_branches(pid)} == {
        b.id for b in in_process.list_branches(pid)
    }
    restored = in_process.restore_branch(
        pid, made.branch.id, source_branch_id=emulator.default_branch_id
    )
    in_process.wait_for_operations(pid, restored.operations)
    for client in (over_http, in_process):
        with pytest.raises(NeonNotFoundError) as caught:
            client.get_branch(pid, "br-no-such-branch")
        assert caught.value.status == 404
        assert caught.value.request_id  # the emulator's X-Neon-Request-Id made it through
    assert in_process.stats.by_call == {  # counted like calls over HTTP
        "create_branch": 1,
        "list_branches": 1,
        "restore_branch": 1,
        "get_branch": 1,
    }


def test_a_wrong_key_is_refused_in_process_too(emulator: Emulator) -> None:
    _, in_process = _clients(emulator, key="not-the-key-at-all")
    with pytest.raises(NeonAuthError):
        in_process.get_project(emulator.project_id)


def test_only_the_emulator_is_answered_in_process(emulator: Emulator) -> None:
    session = in_process_session(emulator.api_host, emulator.api)
    with pytest.raises(ConnectionError, match="not the emulator"):
        session.request(
            "GET", "http://127.0.0.1:9/not-the-emulator", params=None, json=None, timeout=(2, 2)
        )


def test_the_local_backend_never_imports_requests(pytester: pytest.Pytester) -> None:
    """The in-process session is all a local run needs: ``requests`` (a tenth of a
    second to import) stays out of a run that has no Neon to talk to."""
    pytester.makepyfile(
        """
        import sys
        def test_branch(neon_branch_readwrite):
            assert "requests" not in sys.modules
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--neon-backend=local", "-p", "no:postgresql"
    )
    result.assert_outcomes(passed=1)
