"""Answers given before the request body was read close the connection, and say so.

Found by the mixed-load soak (``tests/server/test_soak_mixed_load.py``): an answer
given before a declared body was read (a 413 to an oversized body, an unknown route,
a wrong method) leaves the rest of the body unread, and the server then closes the
connection rather than read it. The HTTP layer said ``Connection: close`` only when it
was still receiving the body as it answered (under load, about 30% of the 413s went
without it; an unknown route's answer never had it), so a keep-alive client (httpx)
sent its next request on the connection and got "Server disconnected without sending
a response" (two soak runs in three with two workers). Raw sockets here: the request's
head and the answer's headers are exactly what was sent.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from medsecrets.testing.serverproc import ServerProcess

P = "medessence/development/ai-providers"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("keepalive")
    with ServerProcess(base / "data", log_dir=base / "logs") as proc:
        yield proc


def _exchange(server: ServerProcess, head: str, body: bytes) -> tuple[str, bool]:
    """Send ``head`` and ``body``; the answer's head (lower case) and whether the
    server then closed the connection (it is read until closed or 5 s of silence)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        conn.sendall(head.encode() + b"\r\n\r\n" + body)
        data = b""
        closed = False
        try:
            while True:
                got = conn.recv(65536)
                if not got:
                    closed = True
                    break
                data += got
                answer_head, sep, rest = data.partition(b"\r\n\r\n")
                if sep and b"content-length" in answer_head.lower():
                    length = int(answer_head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    if len(rest) >= length and b"connection: close" not in answer_head.lower():
                        break  # whole answer, kept alive
        except TimeoutError:
            pass
    return data.partition(b"\r\n\r\n")[0].decode().lower(), closed


def _head(server: ServerProcess, method: str, url: str, length: int) -> str:
    assert server.token is not None
    return "\r\n".join(
        [
            f"{method} {url} HTTP/1.1",
            "Host: 127.0.0.1",
            f"X-Medsecrets-Token: {server.token}",
            "Content-Type: application/json",
            f"Content-Length: {length}",
        ]
    )


def test_an_oversized_body_is_refused_with_connection_close(server: ServerProcess) -> None:
    head = _head(server, "PUT", f"/v1/secrets/{P}", 2_000_000)
    answer, closed = _exchange(server, head, b'{"fields": {"x": "' + b"y" * 4096)
    assert answer.startswith("http/1.1 413")
    assert "connection: close" in answer
    assert closed


@pytest.mark.parametrize(
    ("method", "url"),
    [("POST", "/v1/no/such/route"), ("DELETE", "/v1/catalog")],
    ids=["unknown-route", "wrong-method"],
)
def test_a_body_left_unread_closes_the_connection(
    server: ServerProcess, method: str, url: str
) -> None:
    head = _head(server, method, url, 200_000)
    answer, closed = _exchange(server, head, b"{" * 100)  # the rest never comes
    assert answer.startswith(("http/1.1 404", "http/1.1 405"))
    assert "connection: close" in answer
    assert closed


def test_a_body_read_whole_keeps_the_connection(server: ServerProcess) -> None:
    body = b'{"kind": "token"}'
    answer, closed = _exchange(server, _head(server, "POST", "/v1/generate", len(body)), body)
    assert answer.startswith("http/1.1 200")
    assert "connection: close" not in answer
    assert not closed


def test_a_refused_small_body_keeps_the_connection(server: ServerProcess) -> None:
    body = b'{"fields": '  # read whole, then refused: the connection stays usable
    answer, closed = _exchange(server, _head(server, "PUT", f"/v1/secrets/{P}", len(body)), body)
    assert answer.startswith("http/1.1 400")
    assert "connection: close" not in answer
    assert not closed
