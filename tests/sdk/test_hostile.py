"""Both clients against hostile or broken peers: real sockets on 127.0.0.1 (``RawPeer``).

Each case runs with ``Client`` and ``AsyncClient`` (parity by construction is
the design; these check it). ``pytest.mark.timeout`` only guards against a
hang: without the bounds under test the calls never end.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from tests.support.peers import EndlessAnswer, FixedAnswer, RawPeer, answer, read_head

from medsecrets.errors import MedsecretsError
from medsecrets.sdk import (
    AsyncClient,
    Client,
    ServerError,
    ServerUnavailableError,
    UnexpectedResponseError,
)

PATH = "medessence/development/database"
TOKEN = "ms.canary-token-5e1f"


@pytest.fixture(params=["sync", "async"])
def call(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``call(addr, method, *args, **client_kw)``: one call with a sync or async client."""

    def run(addr: str, method: str, *args: object, **kw: Any) -> Any:
        settings: dict[str, Any] = {"env": {}, "retries": 0, **kw}
        if request.param == "sync":
            with Client(addr, TOKEN, **settings) as client:
                return getattr(client, method)(*args)

        async def main() -> Any:
            async with AsyncClient(addr, TOKEN, **settings) as client:
                return await getattr(client, method)(*args)

        return asyncio.run(main())

    return run


@pytest.fixture
def endless() -> Iterator[EndlessAnswer]:
    peer = EndlessAnswer(drip=False)
    yield peer
    peer.stop()


@pytest.fixture
def drip() -> Iterator[EndlessAnswer]:
    peer = EndlessAnswer(drip=True)
    yield peer
    peer.stop()


@pytest.mark.timeout(60)
def test_an_endless_body_is_cut_at_max_response_bytes(
    call: Callable[..., Any], endless: EndlessAnswer
) -> None:
    """The whole body was read into memory: 6 MB/s of growth until the process died."""
    addr = f"http://127.0.0.1:{endless.port}"
    with pytest.raises(UnexpectedResponseError, match="over 1048576 bytes"):
        call(addr, "get", PATH, max_response_bytes=1 << 20, timeout=30.0)


@pytest.mark.timeout(60)
def test_a_body_dripped_byte_by_byte_ends_within_the_timeout(
    call: Callable[..., Any], drip: EndlessAnswer
) -> None:
    """Each read came in time, so httpx's per-read timeout never fired: no call ever ended."""
    addr = f"http://127.0.0.1:{drip.port}"
    with pytest.raises(ServerUnavailableError, match="ReadTimeout"):
        call(addr, "get", PATH, timeout=0.5)


class Trickle(RawPeer):
    """Reads each request (counting them in ``requests``), then sends ``head`` and ``body``
    in ``pieces`` pieces each (``None``: byte by byte), ``gap`` seconds before each."""

    def __init__(self, head: bytes, body: bytes, *, gap: float, pieces: int | None) -> None:
        self.parts = [*self._split(head, pieces), *self._split(body, pieces)]
        self.gap = gap
        self.requests = 0
        super().__init__()
        self.addr = f"http://127.0.0.1:{self.port}"

    @staticmethod
    def _split(data: bytes, pieces: int | None) -> list[bytes]:
        size = 1 if pieces is None else -(-len(data) // pieces)
        return [data[i : i + size] for i in range(0, len(data), size)]

    def serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if read_head(conn) is None:
                return
            self.requests += 1
            for part in self.parts:
                if self.stopping.wait(self.gap):
                    return
                conn.sendall(part)


DRIPPED_HEAD = b"HTTP/1.1 200 OK\r\nX-Leak: " + b"leak" * 25_000  # ~30 min at a byte a 20 ms
CANARY = "canary-value-8c2d"


@pytest.fixture
def dripped_head() -> Iterator[Trickle]:
    peer = Trickle(DRIPPED_HEAD, b"", gap=0.02, pieces=None)
    yield peer
    peer.stop()


@pytest.mark.timeout(60)
def test_a_head_dripped_byte_by_byte_ends_within_the_timeout(
    call: Callable[..., Any], dripped_head: Trickle
) -> None:
    """httpx's read timeout is per read: a status line and headers sent a byte at a time
    (each read in time) held a call for ever, as a dripped body did before."""
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError) as caught:
        call(dripped_head.addr, "get", PATH, timeout=0.5)
    assert time.monotonic() - started < 10 * 0.5  # generous: it only proves "no hang"
    assert "did not answer in time (ReadTimeout)" in str(caught.value)
    told = "".join(traceback.format_exception(caught.value))
    assert TOKEN not in told and "leak" not in told.lower()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("method", "args", "attempts"),
    [("get", (PATH,), 3), ("put", (PATH, {"password": CANARY}), 1)],
    ids=["retry-safe", "not-retry-safe"],
)
def test_a_dripped_head_is_a_read_timeout_under_the_retry_rules(
    call: Callable[..., Any],
    dripped_head: Trickle,
    method: str,
    args: tuple[object, ...],
    attempts: int,
) -> None:
    """The request reached the server: retried (with ``retries=2``) only for a call that
    may be repeated; a write is not sent twice, and its error names none of its values."""
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError, match=re.escape("(ReadTimeout)")) as caught:
        call(dripped_head.addr, method, *args, timeout=0.5, retries=2, backoff=0.0)
    assert time.monotonic() - started < 10 * 0.5 * attempts
    assert dripped_head.requests == attempts
    told = "".join(traceback.format_exception(caught.value))
    assert TOKEN not in told and CANARY not in told


@pytest.mark.timeout(60)
def test_a_slow_but_honest_answer_is_read(call: Callable[..., Any]) -> None:
    """The head and the body each take ~half the timeout (together more than it): each
    is within its own budget, so the answer is read. (Timing: ~1.9 s of margin on each
    budget, for a loaded machine whose sleeps run long.)"""
    secret = {
        "path": PATH,
        "number": 1,
        "id": "v1",
        "created_at": "2026-01-01T00:00:00+00:00",
        "stages": ["current"],
        "fields": {"password": CANARY},
    }
    whole = answer("200 OK", json.dumps(secret).encode(), "Content-Type: application/json")
    head, _, body = whole.partition(b"\r\n\r\n")
    peer = Trickle(head + b"\r\n\r\n", body, gap=0.35, pieces=6)
    try:
        got = call(peer.addr, "get", PATH, timeout=4.0)
        assert got.fields["password"] == CANARY
        assert peer.requests == 1
    finally:
        peer.stop()


class Silent(RawPeer):
    """Reads a request and never answers; or, with ``hang_up``, closes without a word."""

    def __init__(self, *, hang_up: bool) -> None:
        self.hang_up = hang_up
        super().__init__()
        self.addr = f"http://127.0.0.1:{self.port}"

    def serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.recv(65536)
            if not self.hang_up:
                self.stopping.wait(30)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("hang_up", "said"),
    [(False, "did not answer in time (ReadTimeout)"), (True, "connection to the server at")],
)
def test_a_lost_answer_says_what_happened_not_cannot_reach(
    call: Callable[..., Any], hang_up: bool, said: str
) -> None:
    """The request reached the server: "cannot reach the server" sent operators looking for
    a network fault when the server was slow or had dropped the connection."""
    peer = Silent(hang_up=hang_up)
    try:
        with pytest.raises(ServerUnavailableError, match=re.escape(said)) as caught:
            call(peer.addr, "get", PATH, timeout=0.5)
        assert "cannot reach" not in str(caught.value)
    finally:
        peer.stop()


@pytest.mark.timeout(60)
def test_a_compressed_answer_is_never_inflated(call: Callable[..., Any]) -> None:
    """A gzip bomb: 10 MB of zeros in a few kilobytes; the client asked for no coding."""
    bomb = gzip.compress(b"0" * 10_000_000)
    peer = FixedAnswer(answer("200 OK", bomb, "Content-Encoding: gzip"))
    try:
        with pytest.raises(UnexpectedResponseError, match="content coding"):
            call(peer.addr, "get", PATH, max_response_bytes=1 << 20)
        assert b"accept-encoding: identity" in peer.heads[0].lower()
        peer.answer = answer("500 Internal Server Error", bomb, "Content-Encoding: gzip")
        with pytest.raises(ServerError, match="HTTP 500"):
            call(peer.addr, "get", PATH)
    finally:
        peer.stop()


@pytest.mark.timeout(60)
def test_an_endless_error_body_is_read_only_in_part_and_mapped_by_status(
    call: Callable[..., Any],
) -> None:
    head = b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\n"
    peer = FixedAnswer(head + b"Transfer-Encoding: chunked\r\n\r\n", endless=True)
    try:
        with pytest.raises(MedsecretsError, match="HTTP 502"):
            call(peer.addr, "get", PATH, timeout=30.0)
    finally:
        peer.stop()


@pytest.mark.timeout(60)
def test_a_redirect_is_not_followed_and_says_so(call: Callable[..., Any]) -> None:
    """Not followed before either, but reported as 'SecretVersion: expected an object'."""
    elsewhere = FixedAnswer(answer("200 OK", b"{}"))
    peer = FixedAnswer(answer("307 Temporary Redirect", b"", f"Location: {elsewhere.addr}/x"))
    try:
        with pytest.raises(UnexpectedResponseError, match=r"HTTP 307.*redirect") as caught:
            call(peer.addr, "get", PATH)
        assert elsewhere.heads == []
        assert TOKEN not in str(caught.value)
    finally:
        peer.stop()
        elsewhere.stop()


def _mock_call(kind: str, response: httpx.Response) -> BaseException:
    """The exception one ``get`` raises when the server answers ``response``."""

    def handler(request: httpx.Request) -> httpx.Response:
        return response

    try:
        if kind == "sync":
            transport: Any = httpx.MockTransport(handler)
            Client("http://a.test", TOKEN, transport=transport, env={}, retries=0).get(PATH)
        else:

            async def main() -> None:
                transport = httpx.MockTransport(handler)
                async with AsyncClient(
                    "http://a.test", TOKEN, transport=transport, env={}, retries=0
                ) as client:
                    await client.get(PATH)

            asyncio.run(main())
    except BaseException as exc:
        return exc
    raise AssertionError("no error raised")


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    ("status", "expected"), [(200, UnexpectedResponseError), (500, ServerError)]
)
def test_json_nested_deeper_than_the_parser_goes_is_a_documented_error(
    kind: str, status: int, expected: type[MedsecretsError]
) -> None:
    """``json.loads`` raises ``RecursionError`` (not a ``ValueError``): it escaped raw."""
    deep = b"[" * 100_000 + b"]" * 100_000
    assert isinstance(_mock_call(kind, httpx.Response(status, content=deep)), expected)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_unreadable_answer_keeps_no_part_of_the_body(kind: str) -> None:
    """The ``JSONDecodeError`` kept as context holds the whole document (``doc``)."""
    canary = b'{"fields": {"password": "canary-value-77"}, truncated'
    error = _mock_call(kind, httpx.Response(200, content=canary))
    assert isinstance(error, UnexpectedResponseError)
    assert error.__context__ is None and error.__cause__ is None
    assert "canary" not in "".join(traceback.format_exception(error))
