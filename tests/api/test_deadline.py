"""The request timeout (``api.deadline``): unanswered by the deadline means 503 ``timeout``."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest

from medsecrets.api import create_app
from medsecrets.api.deadline import Deadlines
from medsecrets.core import Core

PATH = "/v1/secrets/medessence/development/database/slow"


def _put(core: Core, root: str, seconds: float) -> httpx.Response:
    app = create_app(core, request_timeout=seconds)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.put(
                PATH,
                json={"fields": {"username": "svc"}},
                headers={"Authorization": f"Bearer {root}"},
            )

    return asyncio.run(go())


def test_a_request_blocked_in_a_worker_thread_times_out(
    core: Core, root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = threading.Event()

    real_put = core.store.secrets.put

    def slow_put(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.5)
        done.set()
        return real_put(*args, **kwargs)

    monkeypatch.setattr(core.store.secrets, "put", slow_put)
    response = _put(core, root, 0.05)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "timeout"
    assert not done.is_set()  # answered without waiting for the thread
    assert done.wait(5)  # which finishes on its own: "outcome unknown"


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
