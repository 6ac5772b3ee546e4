"""The request timeout (``api.deadline``): unanswered by the deadline means 503 ``timeout``."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from medsecrets.api import create_app
from medsecrets.api.deadline import Deadlines
from medsecrets.clock import ManualClock
from medsecrets.core import Core

SECRET = "medessence/development/database/slow"
PATH = f"/v1/secrets/{SECRET}"


def _call(
    core: Core, root: str, seconds: float, method: str = "PUT", url: str = PATH, body: object = None
) -> httpx.Response:
    app = create_app(core, request_timeout=seconds)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(
                method,
                url,
                json=body if body is not None else {"fields": {"username": "svc"}},
                headers={"Authorization": f"Bearer {root}"},
            )

    return asyncio.run(go())


def _put(core: Core, root: str, seconds: float) -> httpx.Response:
    return _call(core, root, seconds)


def test_a_request_blocked_in_a_worker_thread_times_out(
    core: Core, root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    done, release = threading.Event(), threading.Event()
    real_create = core.tokens.create

    def slow_create(*args: Any, **kwargs: Any) -> Any:
        assert release.wait(10)  # blocked until the answer has come, however late that is
        done.set()
        return real_create(*args, **kwargs)

    monkeypatch.setattr(core.tokens, "create", slow_create)
    body = {"paths": ["*"], "capabilities": ["read"], "ttl": 60}
    response = _call(core, root, 0.05, "POST", "/v1/auth/token/create", body)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "timeout"
    assert not done.is_set()  # answered without waiting for the thread
    release.set()
    assert done.wait(5)  # which finishes on its own: "outcome unknown"


def test_the_timeout_answer_has_the_error_shape_with_the_request_id(
    core: Core, root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """503 ``timeout`` is an error like any other: ``{"error": {...}, "request_id"}`` (the
    OpenAPI ``Error`` schema), the id the one of the ``X-Request-Id`` header."""
    import jsonschema

    from medsecrets.api.openapi import ERROR_SCHEMA

    real_create = core.tokens.create
    release = threading.Event()

    def slow_create(*args: Any, **kwargs: Any) -> Any:
        release.wait(10)  # blocked until the answer has come, however late that is
        return real_create(*args, **kwargs)

    monkeypatch.setattr(core.tokens, "create", slow_create)
    body = {"paths": ["*"], "capabilities": ["read"], "ttl": 60}
    try:
        response = _call(core, root, 0.05, "POST", "/v1/auth/token/create", body)
    finally:
        release.set()
    assert response.status_code == 503
    answer = response.json()
    jsonschema.validate(answer, ERROR_SCHEMA)
    assert answer["error"]["code"] == "timeout"
    assert answer["request_id"] == response.headers["x-request-id"]


def test_a_loop_write_waiting_for_its_fsync_times_out_and_is_still_recorded(
    tmp_path: Path, clock: ManualClock
) -> None:
    from medsecrets.auth.tokens import TokenStore
    from medsecrets.schema.seal import KeyFileSealConfig
    from medsecrets.storage.sqlite import SqliteStorage
    from medsecrets.store import SecretStore

    slow, answered = threading.Event(), threading.Event()
    events: list[str] = []

    def fsync(fd: int) -> None:
        if slow.is_set():
            assert answered.wait(10)  # held until the timeout's answer has come
            events.append("fsync done")
        os.fsync(fd)

    store = SecretStore(SqliteStorage(tmp_path / "s.db", _fsync=fsync), clock=clock)
    store.initialize(KeyFileSealConfig(str(tmp_path / "k.key")))
    tokens = TokenStore(store.barrier, clock=clock)
    core = Core(store, tokens)
    root = tokens.create_root()[0].reveal()
    statuses: list[int] = []
    real = core._on_response

    def on_response(
        request: Any, principal: Any, status: int, code: Any, version: Any = None
    ) -> Any:
        statuses.append(status)
        events.append("recorded")
        return real(request, principal, status, code, version)

    core._on_response = on_response  # type: ignore[method-assign]
    app = create_app(core, request_timeout=0.1)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answer = await client.put(
                PATH,
                json={"fields": {"username": "svc"}},
                headers={"Authorization": f"Bearer {root}"},
            )
        events.append("answered")
        answered.set()
        deadline = time.monotonic() + 10  # the server keeps running: the fsync ends meanwhile
        while "recorded" not in events and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return answer

    try:
        slow.set()
        response = asyncio.run(go())
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "timeout"
        assert statuses == [200]  # the route's outcome is recorded anyway ("outcome unknown")
        assert events[0] == "answered" and events[-1] == "recorded"  # but only once durable:
        assert "fsync done" in events[1:-1]
        slow.clear()
        assert store.secrets.describe(SECRET).current_version == 1
    finally:
        store.close()


def test_fast_requests_pass_through(core: Core, root: str) -> None:
    assert _put(core, root, 5.0).status_code == 200


def test_another_cancellation_is_not_a_timeout() -> None:
    """A task cancelled by someone else (a shutdown) is not answered 503 by the timeout."""
    deadlines = Deadlines(10.0)

    async def go() -> bool:
        task = asyncio.current_task()
        assert task is not None
        deadlines.enter(task)
        asyncio.get_running_loop().call_later(0.01, task.cancel)
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            return deadlines.leave(task)
        return True

    assert asyncio.run(go()) is False


def test_the_sweeper_cancels_only_overdue_tasks() -> None:
    deadlines = Deadlines(0.05)

    async def waiter(seconds: float) -> str:
        task = asyncio.current_task()
        assert task is not None
        deadlines.enter(task)
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            return "timed out" if deadlines.leave(task) else "cancelled"
        deadlines.leave(task)
        return "done"

    async def go() -> list[str]:
        return list(await asyncio.gather(waiter(0.0), waiter(1.0)))

    assert asyncio.run(go()) == ["done", "timed out"]


def test_a_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Deadlines(0)
