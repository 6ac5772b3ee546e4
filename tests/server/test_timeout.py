"""``RequestTimeout``: a request with no response by the deadline gets 503 ``timeout``."""

from __future__ import annotations

import asyncio
import threading
import time

import anyio.to_thread
import httpx
from starlette.types import Receive, Scope, Send

from medsecrets.server.runner import RequestTimeout


async def _never_answers(scope: Scope, receive: Receive, send: Send) -> None:
    await asyncio.Event().wait()


async def _answers_then_stalls(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.sleep(0.2)
    await send({"type": "http.response.body", "body": b"done"})


_THREAD_DONE = threading.Event()


def _slow_work() -> None:
    time.sleep(0.5)
    _THREAD_DONE.set()


async def _blocked_in_a_thread(scope: Scope, receive: Receive, send: Send) -> None:
    await anyio.to_thread.run_sync(_slow_work, abandon_on_cancel=True)
    await _fast(scope, receive, send)


async def _fast(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _get(app: RequestTimeout) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/v1/anything")

    return asyncio.run(go())


def test_no_response_in_time_is_503_timeout() -> None:
    response = _get(RequestTimeout(_never_answers, seconds=0.05))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "timeout"


def test_a_started_response_is_never_cut() -> None:
    response = _get(RequestTimeout(_answers_then_stalls, seconds=0.05))
    assert response.status_code == 200
    assert response.content == b"done"


def test_fast_requests_pass_through() -> None:
    assert _get(RequestTimeout(_fast, seconds=5)).status_code == 204


def test_a_request_blocked_in_a_worker_thread_times_out() -> None:
    response = _get(RequestTimeout(_blocked_in_a_thread, seconds=0.05))
    assert response.status_code == 503
    assert not _THREAD_DONE.is_set()  # answered without waiting for the thread
