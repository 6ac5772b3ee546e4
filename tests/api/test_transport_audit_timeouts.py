"""Every request keeps one request and one response record, also when its answer is a
timeout or the transport's refusal of a metrics query (``api.app``).

Found by a review of the transport's records: a request that timed out while its work
still waited for a worker thread (the pool busy: a stalled database, a slow device) had
its work cancelled before it ran, and so got a request record and no response record
(a change), or no record at all (a slow read, or any request with ``inline_reads``
off); one that timed out while its request record was awaited got no response record;
a malformed query of ``/v1/sys/metrics`` was refused with no record at all; and a
timeout refused before the core whose record could not be written was answered 503
``timeout``, not ``audit_failure`` as every other refusal that cannot be recorded.
The worker pool is the app's own (``_threads``), held busy by a job of the test.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from pathlib import Path

import pytest

from medsecrets.api import create_app
from medsecrets.api.metrics import Metrics
from medsecrets.auth.tokens import TokenStore
from medsecrets.core import Core
from medsecrets.core.request import Request
from medsecrets.schema.tokens import TokenInfo
from medsecrets.server.auditsetup import AuditStack
from medsecrets.store import SecretStore
from tests.support.transport import (
    JSON,
    FakeRefusingHook,
    assert_one_exchange,
    drive,
    file_audit_stack,
    headers,
    recorded,
)

stack = pytest.fixture(file_audit_stack)


TOKEN_CREATE = b'{"paths": ["medessence/*"], "capabilities": ["read"]}'


def _busy_pool(app: object) -> threading.Event:
    """Hold the app's worker threads busy (one thread, taken) until the event is set."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    gate = threading.Event()
    pool.submit(gate.wait)
    app._threads = pool  # type: ignore[attr-defined]
    return gate


@pytest.mark.parametrize(
    ("method", "path", "body", "inline_reads", "route"),
    [
        ("POST", b"/v1/auth/token/create", TOKEN_CREATE, True, "tokens.create"),
        ("GET", b"/v1/sys/audit/search", b"", True, "sys.audit.search"),
        ("GET", b"/v1/sys/health", b"", False, "sys.health"),
    ],
    ids=["change", "slow-read", "threaded-read"],
)
def test_a_request_timed_out_waiting_for_a_worker_thread_is_recorded_once(
    tmp_path: Path,
    store: SecretStore,
    tokens: TokenStore,
    root: str,
    stack: AuditStack,
    method: str,
    path: bytes,
    body: bytes,
    inline_reads: bool,
    route: str,
) -> None:
    app = create_app(
        Core(store, tokens, audit=stack.broker), request_timeout=0.3, inline_reads=inline_reads
    )
    gate = _busy_pool(app)
    try:
        chunks = [body] if body else []
        answered, answer = drive(app, method, path, headers(root, JSON), chunks)
    finally:
        gate.set()
        app._threads.shutdown(wait=True)  # type: ignore[attr-defined]
    assert (answered, answer["error"]["code"]) == (503, "timeout")  # type: ignore[index]
    assert_one_exchange(recorded(tmp_path, stack), 503, "timeout", route)


class _Stalled:
    """A fake audit ticket that is never answered (a device that stalls)."""

    def wait(self) -> None:
        raise AssertionError("waited on a thread")

    async def wait_async(self) -> None:
        await asyncio.Event().wait()


class StallingHook:
    """A fake audit hook: keeps what it is given; a request record's ticket stalls."""

    def __init__(self) -> None:
        self.records: list[tuple[str, int | None, str | None]] = []

    def on_request(self, request: Request, principal: TokenInfo | None) -> _Stalled:
        self.records.append(("request", None, None))
        return _Stalled()

    def on_response(
        self,
        request: Request,
        principal: TokenInfo | None,
        response_status: int,
        error_code: str | None,
        version: int | None = None,
    ) -> None:
        self.records.append(("response", response_status, error_code))


def test_a_change_timed_out_awaiting_its_request_record_gets_its_response_record(
    store: SecretStore, tokens: TokenStore, root: str
) -> None:
    hook = StallingHook()
    app = create_app(Core(store, tokens, audit=hook), request_timeout=0.3)
    path = b"/v1/auth/token/create"
    answered, answer = drive(app, "POST", path, headers(root, JSON), [TOKEN_CREATE])
    assert (answered, answer["error"]["code"]) == (503, "timeout")  # type: ignore[index]
    assert hook.records == [("request", None, None), ("response", 503, "timeout")]


def test_a_malformed_metrics_query_is_recorded(
    tmp_path: Path, store: SecretStore, tokens: TokenStore, root: str, stack: AuditStack
) -> None:
    app = create_app(Core(store, tokens, audit=stack.broker), metrics=Metrics())
    query = b"&".join([b"a=1"] * 65)
    answered, answer = drive(app, "GET", b"/v1/sys/metrics", headers(root), [], query)
    assert (answered, answer["error"]["code"]) == (400, "invalid_request")  # type: ignore[index]
    assert_one_exchange(recorded(tmp_path, stack), 400, "invalid_request", "sys.metrics")


def test_a_timeout_that_cannot_be_recorded_is_503_audit_failure(
    store: SecretStore, tokens: TokenStore, root: str
) -> None:
    app = create_app(Core(store, tokens, audit=FakeRefusingHook()), request_timeout=0.3)
    path = b"/v1/auth/token/create"
    answered, answer = drive(app, "POST", path, headers(root, JSON), [b'{"paths"', b"..."])
    assert (answered, answer["error"]["code"]) == (503, "audit_failure")  # type: ignore[index]


class GatedHook(StallingHook):
    """A fake audit hook whose request record holds the worker thread until ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def on_request(self, request: Request, principal: TokenInfo | None) -> None:  # type: ignore[override]
        self.gate.wait(10)
        self.records.append(("request", None, None))


def test_a_request_timed_out_in_its_worker_thread_is_recorded_by_the_thread_alone(
    store: SecretStore, tokens: TokenStore, root: str
) -> None:
    hook = GatedHook()
    app = create_app(Core(store, tokens, audit=hook), request_timeout=0.3, inline_reads=False)
    answered, answer = drive(app, "GET", b"/v1/sys/health", headers(root), [])
    assert (answered, answer["error"]["code"]) == (503, "timeout")  # type: ignore[index]
    hook.gate.set()
    app._threads.shutdown(wait=True)  # type: ignore[attr-defined]
    assert hook.records == [("request", None, None), ("response", 200, None)]
