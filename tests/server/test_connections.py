"""Connection limits: idle, slow or silent clients cannot starve the others.

granian's embedded defaults served 128 connections at once and gave each 30 s to send its
request head (also between two requests on a keep-alive connection), and a connection that
sent nothing at all kept its place for good: one client, without a token, blocked everyone.
Now ``max_connections``, ``listen_backlog`` and ``header_read_timeout`` are set on purpose
(the tests configure a short timeout, so they stay fast).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from medsecrets.server.config import load_settings
from medsecrets.testing.serverproc import ServerProcess


def _open(server: ServerProcess, count: int, first: bytes, stack: ExitStack) -> list[socket.socket]:
    """``count`` connections that each sent ``first`` (maybe nothing) and then wait."""
    opened = []
    for _ in range(count):
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", server.port), 10))
        if first:
            sock.sendall(first)
        opened.append(sock)
    return opened


def _idle_keep_alive(server: ServerProcess, count: int, stack: ExitStack) -> list[socket.socket]:
    """``count`` keep-alive connections that made one request each, now idle."""
    opened = _open(server, count, b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n", stack)
    for sock in opened:
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    return opened


def _health(server: ServerProcess, seconds: float) -> int:
    """The status of a health request from a new connection, waiting at most ``seconds``."""
    with httpx.Client(timeout=seconds) as client:
        return client.get(f"{server.addr}/v1/sys/health").status_code


def _closed_by_server(sockets: list[socket.socket], seconds: float) -> bool:
    """Whether the server closes every one of ``sockets`` within ``seconds``."""
    deadline = time.monotonic() + seconds
    for sock in sockets:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            while sock.recv(65536):  # an answer (a 408, say) before the close is fine
                pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
    return True


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with the default connection limit and a 1 s head timeout."""
    base = tmp_path_factory.mktemp("roomy")
    env = {"MEDSECRETS_HEADER_READ_TIMEOUT": "1"}
    with ServerProcess(base / "data", env=env, log_dir=base / "l") as server:
        yield server


def test_hundreds_of_idle_half_open_or_silent_connections_starve_no_one(
    roomy: ServerProcess,
) -> None:
    """More than the old limit of 128 of each kind, from one client: health still answers."""
    with ExitStack() as stack:
        _open(roomy, 150, b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n", stack)  # no blank line
        _open(roomy, 150, b"", stack)  # connected, nothing sent
        _idle_keep_alive(roomy, 150, stack)
        assert _health(roomy, 5.0) == 200


def test_idle_and_unfinished_connections_are_closed_after_the_head_timeout(
    roomy: ServerProcess,
) -> None:
    with ExitStack() as stack:
        half_open = _open(roomy, 5, b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n", stack)
        silent = _open(roomy, 5, b"", stack)
        idle = _idle_keep_alive(roomy, 5, stack)
        assert _closed_by_server(half_open + silent + idle, 10.0)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_full_server_frees_its_places_within_the_head_timeout(
    tmp_path: Path, workers: str
) -> None:
    """``max_connections`` silent connections per worker and more: each gives its place up
    after ``header_read_timeout``, so a client waiting behind them is served (workers too)."""
    env = {
        "MEDSECRETS_HEADER_READ_TIMEOUT": "1",
        "MEDSECRETS_MAX_CONNECTIONS": "16",
        "MEDSECRETS_WORKERS": workers,
    }
    with (
        ServerProcess(tmp_path / "data", env=env, log_dir=tmp_path / "l") as server,
        ExitStack() as stack,
    ):
        silent = _open(server, 40 * int(workers), b"", stack)
        assert _health(server, 30.0) == 200
        assert _closed_by_server(silent, 30.0)


def test_uvicorn_closes_idle_keep_alive_connections_after_the_head_timeout(
    tmp_path: Path,
) -> None:
    env = {"MEDSECRETS_BACKEND": "uvicorn", "MEDSECRETS_HEADER_READ_TIMEOUT": "1"}
    with (
        ServerProcess(tmp_path / "data", env=env, log_dir=tmp_path / "l") as server,
        ExitStack() as stack,
    ):
        idle = _idle_keep_alive(server, 5, stack)
        assert _closed_by_server(idle, 3.0)  # uvicorn's own default is 5 s
        assert _health(server, 5.0) == 200


def test_granian_gets_the_limits_for_both_the_embedded_server_and_the_workers(
    tmp_path: Path,
) -> None:
    from granian.constants import HTTPModes
    from granian.server import MPServer
    from granian.server.embed import Server

    from medsecrets.server.runner import _granian_kwargs

    env = {
        "MEDSECRETS_HEADER_READ_TIMEOUT": "2.5",
        "MEDSECRETS_MAX_CONNECTIONS": "300",
        "MEDSECRETS_LISTEN_BACKLOG": "2048",
    }
    settings = load_settings(None, env=env, overrides={"dev": True, "data_dir": str(tmp_path)})
    kwargs = _granian_kwargs(settings)
    embedded = Server(object(), **kwargs)  # type: ignore[arg-type]
    workers = MPServer(
        "medsecrets.server.runner:worker_app",
        factory=True,
        workers=2,
        **kwargs,  # type: ignore[arg-type]
    )
    for server in (embedded, workers):
        assert server.backlog == 2048
        assert server.backpressure == 300  # per worker
        assert server.http == HTTPModes.http1
        assert server.http1_settings is not None
        assert server.http1_settings.header_read_timeout == 2500
