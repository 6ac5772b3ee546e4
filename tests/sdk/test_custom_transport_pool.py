"""A caller's ``transport=`` and its httpcore pool: what the client's budgets still hold.

Real sockets throughout; the one stand-in is ``_RecordingBackend``, which wraps the
transport's real network backend and only notes the pauses asked of it (without
making them, so that no test waits them out).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import httpcore
import httpx
import pytest
from tests.sdk.test_custom_transport import DrippedHead
from tests.support.peers import RawPeer, read_head

from medsecrets.sdk import AsyncClient, Client, ServerUnavailableError


def _closed_port() -> str:
    """An address on which nothing listens (each connect is refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


class _RecordingBackend(httpcore.NetworkBackend):
    """A fake only in ``sleep``: notes each pause httpcore asks for and makes none; every
    connection is the real backend's."""

    def __init__(self, real: httpcore.NetworkBackend) -> None:
        self.real = real
        self.pauses: list[float] = []

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        return self.real.connect_tcp(*args, **kwargs)

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)


class _AsyncRecordingBackend(httpcore.AsyncNetworkBackend):
    """``_RecordingBackend``, awaited."""

    def __init__(self, real: httpcore.AsyncNetworkBackend) -> None:
        self.real = real
        self.pauses: list[float] = []

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return await self.real.connect_tcp(*args, **kwargs)

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_pauses_of_a_transports_own_connect_retries_stay_within_the_attempt(
    kind: str,
) -> None:
    """httpcore pauses 0, 0.5, 1, 2 and 4 s between its tries to connect
    (``retries=5``); the pauses were not cut to the attempt's budget, so an attempt of
    a 0.5 s ``timeout`` lasted 7.5 s against a closed port. Now a pause longer than what
    is left ends the attempt as a connect timeout."""
    addr, timeout = _closed_port(), 0.5
    recorder: _RecordingBackend | _AsyncRecordingBackend
    if kind == "sync":
        sync = httpx.HTTPTransport(retries=5)
        recorder = _RecordingBackend(sync._pool._network_backend)
        sync._pool._network_backend = recorder  # type: ignore[assignment]
        with (
            pytest.raises(ServerUnavailableError, match=r"cannot reach the server at"),
            Client(addr, transport=sync, env={}, retries=0, timeout=timeout) as client,
        ):
            client.health()
    else:
        shared = httpx.AsyncHTTPTransport(retries=5)
        recorder = _AsyncRecordingBackend(shared._pool._network_backend)
        shared._pool._network_backend = recorder  # type: ignore[assignment]

        async def main() -> None:
            async with AsyncClient(
                addr, transport=shared, env={}, retries=0, timeout=timeout
            ) as client:
                await client.health()

        with pytest.raises(ServerUnavailableError, match=r"cannot reach the server at"):
            asyncio.run(main())
    assert recorder.pauses, "httpcore made no pause: the test no longer tests them"
    assert sum(recorder.pauses) <= timeout, recorder.pauses


class _KeepAlive(RawPeer):
    """Answers every request on a connection with ``{}`` and keeps the connection open."""

    def __init__(self) -> None:
        super().__init__()
        self.addr = f"http://127.0.0.1:{self.port}"

    def serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while read_head(conn) is not None:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")


@pytest.fixture
def keep_alive() -> Iterator[_KeepAlive]:
    peer = _KeepAlive()
    yield peer
    peer.stop()


@pytest.fixture
def dripping() -> Iterator[DrippedHead]:
    peer = DrippedHead()
    yield peer
    peer.stop()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_transport_with_pooled_connections_is_refused(kind: str, keep_alive: _KeepAlive) -> None:
    """Its pooled connection was reused by the client's first call, unbounded (a server
    that answered one request and then dripped the next head held that call for ever)."""
    if kind == "sync":
        sync = httpx.HTTPTransport()
        with httpx.Client(transport=sync) as plain:
            assert plain.get(keep_alive.addr).status_code == 200
            with pytest.raises(ValueError, match=r"^transport= \(HTTPTransport\) has connections"):
                Client(keep_alive.addr, transport=sync, env={})
        return

    async def main() -> None:
        shared = httpx.AsyncHTTPTransport()
        async with httpx.AsyncClient(transport=shared) as plain:
            assert (await plain.get(keep_alive.addr)).status_code == 200
            with pytest.raises(ValueError, match=r"^transport= \(AsyncHTTPTransport\) has conn"):
                AsyncClient(keep_alive.addr, transport=shared, env={})

    asyncio.run(main())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_used_transport_once_closed_is_taken_and_bounded(
    kind: str, keep_alive: _KeepAlive, dripping: DrippedHead
) -> None:
    """Closing a transport empties its pool: the client takes it, and each connection it
    opens then obeys the attempt's budget."""
    timeout_message = r"did not answer in time \(ReadTimeout\)"
    if kind == "sync":
        sync = httpx.HTTPTransport()
        with httpx.Client(transport=sync) as plain:
            assert plain.get(keep_alive.addr).status_code == 200
        with (
            pytest.raises(ServerUnavailableError, match=timeout_message),
            Client(dripping.addr, transport=sync, env={}, retries=0, timeout=0.5) as client,
        ):
            client.health()
        return

    async def main() -> None:
        shared = httpx.AsyncHTTPTransport()
        async with httpx.AsyncClient(transport=shared) as plain:
            assert (await plain.get(keep_alive.addr)).status_code == 200
        async with AsyncClient(
            dripping.addr, transport=shared, env={}, retries=0, timeout=0.5
        ) as client:
            await client.health()

    with pytest.raises(ServerUnavailableError, match=timeout_message):
        asyncio.run(main())


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_transport_without_the_pool_the_client_needs_is_named_at_construction(
    kind: str,
) -> None:
    """An httpx whose transport keeps no ``_pool._network_backend`` (here: removed) is a
    ``RuntimeError`` naming ``transport=``, never a client without bounds."""
    transport: Any = httpx.HTTPTransport() if kind == "sync" else httpx.AsyncHTTPTransport()
    del transport._pool
    client_class: Any = Client if kind == "sync" else AsyncClient
    with pytest.raises(RuntimeError, match=r"^cannot bound the attempts over transport= \("):
        client_class("http://127.0.0.1:1", transport=transport, env={})


def test_a_transport_of_the_other_kind_is_refused_at_construction() -> None:
    """An async transport given to ``Client`` (or a sync one to ``AsyncClient``) was
    taken, and the first call failed with an ``AttributeError`` (no ``handle_request``)."""
    with pytest.raises(TypeError, match=r"^transport= of Client must be an httpx\.BaseTrans"):
        Client("http://127.0.0.1:1", transport=httpx.AsyncHTTPTransport(), env={})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^transport= of AsyncClient must be an httpx\.Async"):
        AsyncClient("http://127.0.0.1:1", transport=httpx.HTTPTransport(), env={})  # type: ignore[arg-type]
