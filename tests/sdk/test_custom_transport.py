"""The attempt's budgets with a transport the caller gives (``transport=``): real sockets.

A custom ``httpx.HTTPTransport`` / ``AsyncHTTPTransport`` used to be taken as it
was, so a server dripping the answer's head a byte at a time (each read in time)
held a call for ever. ``pytest.mark.timeout`` only guards against that hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from tests.support.peers import RawPeer, answer, read_head

from medsecrets.sdk import AsyncClient, Client, ServerUnavailableError

PATH = "medessence/development/database"
TOKEN = "ms.canary-token-7d3a"
SECRET = (
    b'{"path":"medessence/development/database","number":1,"id":"v1",'
    b'"created_at":"2026-01-01T00:00:00+00:00","stages":["current"],"fields":{"password":"p"}}'
)


class DrippedHead(RawPeer):
    """Reads each request (counted in ``requests``), then sends an endless head one byte
    every 20 ms: every read of the client gets a byte in time."""

    def __init__(self) -> None:
        self.requests = 0
        super().__init__()
        self.addr = f"http://127.0.0.1:{self.port}"

    def serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if read_head(conn) is None:
                return
            self.requests += 1
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not self.stopping.wait(0.02):
                conn.sendall(b"x")


@pytest.fixture
def dripped_head() -> Iterator[DrippedHead]:
    peer = DrippedHead()
    yield peer
    peer.stop()


class _Wrapper(httpx.AsyncBaseTransport):
    """A caller's own async transport (not an ``AsyncHTTPTransport``): the client cannot
    reach its network operations, only cancel the attempt."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _run(kind: str, addr: str, transport: Callable[[], Any], **kw: Any) -> object:
    """One ``get`` with a sync or async client over ``transport()``."""
    settings: dict[str, Any] = {"env": {}, "retries": 0, "timeout": 0.5, **kw}
    if kind == "sync":
        with Client(addr, TOKEN, transport=transport(), **settings) as client:
            return client.get(PATH)

    async def main() -> object:
        async with AsyncClient(addr, TOKEN, transport=transport(), **settings) as client:
            return await client.get(PATH)

    return asyncio.run(main())


TRANSPORTS = {
    "sync-HTTPTransport": ("sync", httpx.HTTPTransport),
    "async-AsyncHTTPTransport": ("async", httpx.AsyncHTTPTransport),
    "async-own-transport": ("async", _Wrapper),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(TRANSPORTS))
def test_a_dripped_head_ends_within_the_timeout_over_a_custom_transport(
    case: str, dripped_head: DrippedHead
) -> None:
    """The head's budget held only for the clients' default transports."""
    kind, transport = TRANSPORTS[case]
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError, match=r"did not answer in time \(ReadTimeout\)"):
        _run(kind, dripped_head.addr, transport)
    assert time.monotonic() - started < 10 * 0.5  # generous: it only proves "no hang"
    assert dripped_head.requests == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(TRANSPORTS))
def test_a_dripped_head_over_a_custom_transport_is_retried_like_a_read_timeout(
    case: str, dripped_head: DrippedHead
) -> None:
    """A read call is retried (``retries=2``: three attempts), each one bounded."""
    kind, transport = TRANSPORTS[case]
    with pytest.raises(ServerUnavailableError, match=r"\(ReadTimeout\)"):
        _run(kind, dripped_head.addr, transport, retries=2, backoff=0.0)
    assert dripped_head.requests == 3


class Honest(RawPeer):
    """Answers every request with a secret at once."""

    def __init__(self) -> None:
        super().__init__()
        self.addr = f"http://127.0.0.1:{self.port}"

    def serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if read_head(conn) is not None:
                conn.sendall(answer("200 OK", SECRET, "Content-Type: application/json"))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_custom_transport_shared_by_two_clients_keeps_working(kind: str) -> None:
    """The client makes the transport obey its budgets once; a second client over the
    same transport, and a plain request through it outside any client, still work."""
    peer = Honest()
    try:
        if kind == "sync":
            shared = httpx.HTTPTransport()
            for _ in range(2):
                with Client(peer.addr, TOKEN, transport=shared, env={}) as client:
                    assert client.get(PATH).fields["password"] == "p"
            with httpx.Client(transport=httpx.HTTPTransport()) as plain:
                assert plain.get(peer.addr).status_code == 200
        else:

            async def main() -> None:
                shared = httpx.AsyncHTTPTransport()
                for _ in range(2):
                    client = AsyncClient(peer.addr, TOKEN, transport=shared, env={})
                    assert (await client.get(PATH)).fields["password"] == "p"
                async with httpx.AsyncClient(transport=shared) as plain:
                    assert (await plain.get(peer.addr)).status_code == 200
                await shared.aclose()

            asyncio.run(main())
    finally:
        peer.stop()


class _UnixHonest:
    """Answers each request on a Unix socket with a secret (for ``uds=`` transports)."""

    def __init__(self, path: str) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                if read_head(conn) is not None:
                    conn.sendall(answer("200 OK", SECRET, "Content-Type: application/json"))

    def stop(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_custom_unix_socket_transport_still_connects(kind: str) -> None:
    """Its connections go through the client's bounded network backend too."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s")
        peer = _UnixHonest(path)
        try:
            factory: Callable[[], Any] = (
                (lambda: httpx.HTTPTransport(uds=path))
                if kind == "sync"
                else (lambda: httpx.AsyncHTTPTransport(uds=path))
            )
            secret: Any = _run(kind, "http://localhost", factory, timeout=10.0)
            assert secret.fields["password"] == "p"
        finally:
            peer.stop()


def test_a_sync_transport_the_client_cannot_reach_is_held_to_the_head_budget() -> None:
    """A sync transport other than an ``httpx.HTTPTransport`` cannot be cut short (no
    thread can be interrupted); a head it gives after the budget is still a read
    timeout, not an answer (docs/sdk.md says so)."""
    seen: list[str] = []

    def late(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        time.sleep(0.2)  # past the 0.05 s budget of the attempt (a sleep: no threshold)
        return httpx.Response(200, content=SECRET)

    with (
        pytest.raises(ServerUnavailableError, match=r"did not answer in time \(ReadTimeout\)"),
        Client(
            "http://a.test",
            TOKEN,
            transport=httpx.MockTransport(late),
            env={},
            retries=0,
            timeout=0.05,
        ) as client,
    ):
        client.get(PATH)
    assert len(seen) == 1
