"""The emulator's HTTP layer over raw sockets: body size cap, Content-Length validation,
chunked bodies, and that refused requests are answered (Neon-style JSON), never dropped."""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from pytest_neon.local.emulator import Emulator
from pytest_neon.local.emulator.http_server import MAX_BODY_BYTES
from tests.support.emulator_http import load_spec

TIMEOUT = 10.0  # a server that waits for bytes that never come fails the test, not hangs it


@dataclass
class Answer:
    """A response read off a raw socket, and whether the server closed the connection."""

    status: int
    headers: http.client.HTTPMessage
    body: Any
    closed: bool


def head(emulator: Emulator, method: str, suffix: str, **headers: object) -> bytes:
    """A request head for ``<base>/projects/<id><suffix>`` (headers: ``Content_Length=...``)."""
    path = f"{urlsplit(emulator.api_host).path}/projects/{emulator.project_id}{suffix}"
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: 127.0.0.1:{emulator.port}",
        f"Authorization: Bearer {emulator.api_key}",
        *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_answer(sock: socket.socket, method: str) -> Answer:
    """Read one response from ``sock``; then see whether the server closed its side."""
    response = http.client.HTTPResponse(sock, method=method)
    response.begin()
    raw = response.read()
    body = json.loads(raw) if raw else None
    closed = False
    if response.will_close:
        sock.settimeout(5)
        closed = sock.recv(1) == b""
    return Answer(response.status, response.headers, body, closed)


def exchange(emulator: Emulator, data: bytes, method: str = "POST") -> Answer:
    """Send ``data`` on a new connection and read the one answer."""
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        return read_answer(sock, method)


def assert_neon_error(answer: Answer, status: int, method: str = "POST") -> str:
    """Assert a Neon-style JSON error with ``status`` that closed the connection; its message."""
    assert answer.status == status, answer
    assert answer.headers["Content-Type"] == "application/json"
    body = answer.body
    assert isinstance(body, dict)
    assert isinstance(body["code"], str)
    assert isinstance(body["message"], str)
    assert body["request_id"] == answer.headers["X-Neon-Request-Id"]
    assert answer.headers["Connection"] == "close"
    assert answer.closed
    spec = load_spec()
    if spec is not None:
        assert not spec.errors(method, "/projects/p/branches", status, body)
    return str(body["message"])


def branch_names(emulator: Emulator) -> set[str]:
    """Branch names, by a plain request on a new connection (the server still serves)."""
    conn = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=TIMEOUT)
    try:
        path = f"{urlsplit(emulator.api_host).path}/projects/{emulator.project_id}/branches"
        conn.request("GET", path, headers={"Authorization": f"Bearer {emulator.api_key}"})
        response = conn.getresponse()
        assert response.status == 200
        return {branch["name"] for branch in json.loads(response.read())["branches"]}
    finally:
        conn.close()


def branch_body(name: str, size: int = 0) -> bytes:
    """A branch-creation body, padded with trailing spaces to ``size`` bytes."""
    return json.dumps({"branch": {"name": name}}).encode().ljust(size)


def test_a_body_of_exactly_the_cap_is_accepted(emulator: Emulator) -> None:
    body = branch_body("at-the-cap", MAX_BODY_BYTES)
    answer = exchange(
        emulator, head(emulator, "POST", "/branches", Content_Length=len(body)) + body
    )
    assert answer.status == 201, answer.body
    assert answer.body["branch"]["name"] == "at-the-cap"
    assert not answer.closed


def test_a_body_over_the_cap_gets_a_413_and_is_not_acted_on(emulator: Emulator) -> None:
    body = branch_body("too-big", MAX_BODY_BYTES + 1)
    data = head(emulator, "POST", "/branches", Content_Length=len(body), X_Request_Id="big-1")
    answer = exchange(emulator, data + body)
    assert str(MAX_BODY_BYTES) in assert_neon_error(answer, 413)
    assert answer.body["request_id"] == "big-1"
    assert "too-big" not in branch_names(emulator)


@pytest.mark.parametrize(
    ("content_length", "status"),
    [
        ("1000000000000000000", 413),
        ("9" * 5000, 413),
        ("-1", 400),
        ("abc", 400),
        ("+5", 400),
        ("1e3", 400),
        ("5, 7", 400),
    ],
)
def test_an_absurd_content_length_is_answered_at_once(
    emulator: Emulator, content_length: str, status: int
) -> None:
    # No body follows: the server must answer without waiting for one.
    answer = exchange(emulator, head(emulator, "POST", "/branches", Content_Length=content_length))
    assert_neon_error(answer, status)
    assert branch_names(emulator) == {"main"}


def test_an_oversized_expect_100_request_gets_the_413_instead_of_100(emulator: Emulator) -> None:
    data = head(
        emulator, "POST", "/branches", Content_Length=MAX_BODY_BYTES + 1, Expect="100-continue"
    )
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        status_line = sock.makefile("rb").readline()
        assert status_line.startswith(b"HTTP/1.1 413 "), status_line


def test_a_small_expect_100_request_still_gets_100_continue(emulator: Emulator) -> None:
    body = branch_body("expected")
    data = head(emulator, "POST", "/branches", Content_Length=len(body), Expect="100-continue")
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"HTTP/1.1 100 ")
        assert reader.readline() == b"\r\n"
        sock.sendall(body)
        answer = read_answer(sock, "POST")
    assert answer.status == 201, answer.body
    assert answer.body["branch"]["name"] == "expected"


def test_a_body_cut_short_gets_a_400(emulator: Emulator) -> None:
    body = branch_body("cut-short")
    data = head(emulator, "POST", "/branches", Content_Length=len(body) + 50) + body
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = read_answer(sock, "POST")
    assert "ended after" in assert_neon_error(answer, 400)
    assert "cut-short" not in branch_names(emulator)


def test_keep_alive_serves_several_requests_on_one_connection(emulator: Emulator) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=TIMEOUT)
    path = f"{urlsplit(emulator.api_host).path}/projects/{emulator.project_id}/branches"
    auth = {"Authorization": f"Bearer {emulator.api_key}"}
    try:
        conn.request("POST", path, body=branch_body("kept-alive"), headers=auth)
        first = conn.getresponse()
        assert first.status == 201
        first.read()
        sock = conn.sock
        assert sock is not None
        conn.request("GET", path, headers=auth)
        second = conn.getresponse()
        assert second.status == 200
        assert second.getheader("Connection") is None
        assert "kept-alive" in {b["name"] for b in json.loads(second.read())["branches"]}
        assert conn.sock is sock  # the same connection, not a reconnect
    finally:
        conn.close()


def chunked(*chunks: bytes, extension: bytes = b"", trailer: bytes = b"") -> bytes:
    """``chunks`` in chunked transfer coding, with a chunk extension and trailer fields."""
    framed = b"".join(b"%x%s\r\n%s\r\n" % (len(c), extension, c) for c in chunks)
    return framed + b"0\r\n" + trailer + b"\r\n"


def test_a_chunked_body_is_decoded_and_the_connection_kept(emulator: Emulator) -> None:
    body = chunked(
        b'{"branch": ', b'{"name": "chu', b'nky"}}', extension=b";x=1", trailer=b"T: 1\r\n"
    )
    data = head(emulator, "POST", "/branches", Transfer_Encoding="chunked") + body
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        created = read_answer(sock, "POST")
        # The framing was consumed exactly: the next request on this connection is answered.
        sock.sendall(head(emulator, "GET", "/branches"))
        listed = read_answer(sock, "GET")
    assert created.status == 201, created.body
    assert created.body["branch"]["name"] == "chunky"
    assert listed.status == 200
    assert "chunky" in {b["name"] for b in listed.body["branches"]}


def test_http_client_can_stream_a_chunked_body(emulator: Emulator) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=TIMEOUT)
    path = f"{urlsplit(emulator.api_host).path}/projects/{emulator.project_id}/branches"
    try:
        parts = iter([b'{"branch": {"name": ', b'"streamed"}}'])  # no length: sent chunked
        conn.request(
            "POST", path, body=parts, headers={"Authorization": f"Bearer {emulator.api_key}"}
        )
        response = conn.getresponse()
        assert response.status == 201
        assert json.loads(response.read())["branch"]["name"] == "streamed"
    finally:
        conn.close()


def test_a_chunked_body_over_the_cap_gets_a_413(emulator: Emulator) -> None:
    padding = b" " * (MAX_BODY_BYTES - len(branch_body("chunky-big")))
    body = chunked(
        branch_body("chunky-big"),
        *[padding[i : i + 65536] for i in range(0, len(padding), 65536)],
        b" ",
    )
    answer = exchange(
        emulator, head(emulator, "POST", "/branches", Transfer_Encoding="chunked") + body
    )
    assert str(MAX_BODY_BYTES) in assert_neon_error(answer, 413)
    assert "chunky-big" not in branch_names(emulator)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"zz\r\n{}\r\n0\r\n\r\n", id="not-hex"),
        pytest.param(b"-2\r\n{}\r\n0\r\n\r\n", id="negative"),
        pytest.param(b"0x2\r\n{}\r\n0\r\n\r\n", id="0x-prefix"),
        pytest.param(b"1" * 17 + b"\r\n", id="17-hex-digits"),
        pytest.param(b"2;" + b"x" * 5000 + b"\r\n{}\r\n0\r\n\r\n", id="line-too-long"),
        pytest.param(b"2\r\n{}}\r\n0\r\n\r\n", id="chunk-longer-than-its-size"),
        pytest.param(b"2\r\n{}\r\n0\r\n" + b"T: 1\r\n" * 100 + b"\r\n", id="too-many-trailers"),
    ],
)
def test_malformed_chunked_framing_gets_a_400(emulator: Emulator, body: bytes) -> None:
    answer = exchange(
        emulator, head(emulator, "POST", "/branches", Transfer_Encoding="chunked") + body
    )
    assert_neon_error(answer, 400)
    assert branch_names(emulator) == {"main"}


def test_a_chunked_body_cut_short_gets_a_400(emulator: Emulator) -> None:
    data = head(emulator, "POST", "/branches", Transfer_Encoding="chunked") + b"20\r\n{}"
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = read_answer(sock, "POST")
    assert_neon_error(answer, 400)
    assert branch_names(emulator) == {"main"}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Transfer_Encoding": "gzip"}, 501),
        ({"Transfer_Encoding": "gzip, chunked"}, 501),
        ({"Transfer_Encoding": "identity"}, 501),
        ({"Transfer_Encoding": "chunked", "Content_Length": "2"}, 400),
    ],
)
def test_other_transfer_encodings_are_refused(
    emulator: Emulator, headers: dict[str, str], status: int
) -> None:
    data = head(emulator, "POST", "/branches", **headers) + chunked(branch_body("encoded"))
    answer = exchange(emulator, data)
    assert "Transfer-Encoding" in assert_neon_error(answer, status)
    assert "encoded" not in branch_names(emulator)


def test_the_servers_own_refusals_are_neon_errors_too(emulator: Emulator) -> None:
    unknown = exchange(emulator, head(emulator, "OPTIONS", "/branches"), method="OPTIONS")
    assert "Unsupported method ('OPTIONS')" in assert_neon_error(unknown, 501, "OPTIONS")
    garbled = exchange(emulator, b"GET /a b c HTTP/1.1\r\n\r\n", method="GET")
    assert "Bad request syntax" in assert_neon_error(garbled, 400, "GET")
