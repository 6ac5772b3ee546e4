"""Driving the API's transport (``medsecrets.api.app``) over its ASGI face, one request at
a time, and reading back the audit records it wrote for that request.

Used by the transport's audit tests (``tests/api/test_transport_audit*.py``): every request
they send carries the request id ``RID``, and ``recorded`` returns the records of that id
only. ``file_audit_stack`` is a fixture body (``stack = pytest.fixture(file_audit_stack)``
in a test module): the real audit stack of ``tests.api.test_app.audit_stack`` with one
file device at ``tmp_path / AUDIT_FILE``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio

from medsecrets.errors import AuditFailure
from medsecrets.server.auditsetup import AuditStack
from medsecrets.store import SecretStore
from tests.api.test_app import audit_stack

RID = "transport-refusal-1"
"""The request id of every request ``headers`` makes (what ``recorded`` selects)."""

AUDIT_FILE = "audit.jsonl"
"""The file device's file, in the test's ``tmp_path``."""

JSON = (b"content-type", b"application/json")


def headers(root: str, *more: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """A request's headers: the token ``root``, the request id ``RID``, then ``more``."""
    return [(b"x-medsecrets-token", root.encode()), (b"x-request-id", RID.encode()), *more]


def drive(
    app: object,
    method: str,
    path: bytes,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
    query: bytes = b"",
) -> tuple[int, dict[str, object]]:
    """One request through the ASGI face; ``chunks`` is the body, sent as it is (after
    the last one the client goes quiet without ending the body when it is ``b"..."``).
    Returns the status and the JSON body (``{}`` for a body that is not a JSON object)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path.decode("utf-8", "replace"),
        "raw_path": path,
        "root_path": "",
        "query_string": query,
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    pending = list(chunks)
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        if not pending or pending == [b"..."]:
            await anyio.sleep_forever()
        chunk = pending.pop(0)
        more = bool(pending)
        return {"type": "http.request", "body": chunk, "more_body": more}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    anyio.run(app, scope, receive, send)  # type: ignore[arg-type]
    status, body = sent[0]["status"], sent[1]["body"]
    assert isinstance(status, int) and isinstance(body, bytes)
    return status, json.loads(body) if body.startswith(b"{") else {}


def file_audit_stack(tmp_path: Path, store: SecretStore) -> Iterator[AuditStack]:
    """A started audit stack with one file device at ``tmp_path / AUDIT_FILE``, stopped
    after the test (a fixture body: wrap it with ``pytest.fixture``)."""
    found = audit_stack(store, tmp_path / AUDIT_FILE)
    try:
        yield found
    finally:
        found.stop()


def recorded(tmp_path: Path, stack: AuditStack) -> list[dict[str, object]]:
    """The records of request ``RID`` in the file device's file, once ``stack`` stopped
    (every queued record written)."""
    stack.stop()
    lines = (tmp_path / AUDIT_FILE).read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("request_id") == RID]


def assert_one_exchange(
    records: list[dict[str, object]], status: int, code: str | None, route: str
) -> None:
    """``records`` are one request record (no status) and one response record, of the
    operation ``route``, the response saying ``status`` and the error code ``code``."""
    kinds = sorted((str(r["kind"]), r["status"]) for r in records)
    assert kinds == [("request", None), ("response", status)]
    response = next(r for r in records if r["kind"] == "response")
    assert response["error"] == code
    assert {str(r["operation"]) for r in records} == {route}


class FakeRefusingHook:
    """A FAKE audit hook that cannot record anything, as the broker does when no device
    takes a record (every device down). A fake, not a real broker with its devices broken,
    so that the refusal is certain and immediate, with no device's retry or timeout."""

    def on_request(self, request: object, principal: object) -> None:
        raise AuditFailure("no device took the record")

    def on_response(self, *args: object, **kwargs: object) -> None:
        raise AuditFailure("no device took the record")
