"""Requests the transport refuses itself, before the core (``api.app``), are recorded as
the core records its own refusals: one request and one response record each, the
refusal's status and code, no principal, the token HMAC'd. They were answered without a
record: an unknown URL path, a wrong method, a bad URL path, a malformed, oversized or
non-JSON body, a malformed query, and a body that never came. The OpenAPI document and
the docs page, served by the transport too, are recorded as well. A refusal that cannot
be recorded is a 503 ``audit_failure``, as for the core's own refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from medsecrets.api import create_app
from medsecrets.api.app import MAX_URL_PATH
from medsecrets.auth.tokens import TokenStore
from medsecrets.core import Core
from medsecrets.core.routes import UNROUTED
from medsecrets.errors import AuditFailure
from medsecrets.store import SecretStore

from .conftest import P
from .test_app import AuditStack, audit_stack

RID = "transport-refusal-1"
Case = tuple[str, bytes, list[tuple[bytes, bytes]], list[bytes], bytes]


def _drive(
    app: object,
    method: str,
    path: bytes,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
    query: bytes = b"",
) -> tuple[int, dict[str, object]]:
    """One request through the ASGI face; ``chunks`` is the body, sent as it is (after
    the last one the client goes quiet without ending the body when it is ``b"..."``)."""
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
    body = sent[1]["body"]
    assert isinstance(body, bytes)
    return int(sent[0]["status"]), json.loads(body) if body.startswith(b"{") else {}


@pytest.fixture
def stack(tmp_path: Path, store: SecretStore) -> Iterator[AuditStack]:
    found = audit_stack(store, tmp_path / "audit.jsonl")
    try:
        yield found
    finally:
        found.stop()


def _records(tmp_path: Path, stack: AuditStack) -> list[dict[str, object]]:
    stack.stop()  # every queued record written
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("request_id") == RID]


def _headers(root: str, *more: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [(b"x-medsecrets-token", root.encode()), (b"x-request-id", RID.encode()), *more]


JSON = (b"content-type", b"application/json")
SECRET_URL = f"/v1/secrets/{P}".encode()


@pytest.mark.parametrize(
    ("method", "path", "extra", "chunks", "query", "status", "code", "route", "recorded_path"),
    [
        ("GET", b"/v1/no/such/route", [], [], b"", 404, "not_found", UNROUTED, "/v1/no/such/route"),
        ("PATCH", b"/v1/sys/health", [], [], b"", 405, "method_not_allowed", UNROUTED,
         "/v1/sys/health"),
        ("GET", b"/v1/secrets/a/../b", [], [], b"", 400, "invalid_request", UNROUTED, ""),
        ("GET", b"/v1/" + b"a" * MAX_URL_PATH, [], [], b"", 400, "invalid_request", UNROUTED, ""),
        ("PUT", SECRET_URL, [JSON], [b'{"fields": {'], b"", 400, "invalid_json",
         "secrets.write", P),
        ("PUT", SECRET_URL, [JSON], [b" " * (2 << 20)], b"", 413, "too_large",
         "secrets.write", P),
        ("PUT", SECRET_URL, [(b"content-type", b"text/plain")], [b"x"], b"", 415,
         "unsupported_media_type", "secrets.write", P),
        ("GET", SECRET_URL, [], [], b"&".join([b"a=1"] * 65), 400, "invalid_request",
         "secrets.read", P),
        ("PUT", SECRET_URL, [JSON], [b'{"fields"', b"..."], b"", 503, "timeout",
         "secrets.write", P),
    ],
    ids=["unknown-route", "wrong-method", "dot-segment", "long-path", "malformed-json",
         "oversized", "media-type", "malformed-query", "body-never-ends"],
)  # fmt: skip
def test_a_refusal_before_the_core_is_recorded_once_of_each_kind(
    tmp_path: Path,
    store: SecretStore,
    tokens: TokenStore,
    root: str,
    stack: AuditStack,
    method: str,
    path: bytes,
    extra: list[tuple[bytes, bytes]],
    chunks: list[bytes],
    query: bytes,
    status: int,
    code: str,
    route: str,
    recorded_path: str,
) -> None:
    app = create_app(Core(store, tokens, audit=stack.broker), request_timeout=0.5)
    answered, body = _drive(app, method, path, _headers(root, *extra), chunks, query)
    assert (answered, body["error"]["code"]) == (status, code)  # type: ignore[index]
    records = _records(tmp_path, stack)
    assert sorted(str(r["kind"]) for r in records) == ["request", "response"]
    response = next(r for r in records if r["kind"] == "response")
    assert (response["status"], response["error"]) == (status, code)
    assert {str(r["operation"]) for r in records} == {route}
    assert {str(r["path"]) for r in records} == {recorded_path}
    assert all(r["principal"] is None for r in records)
    assert all(str(r["accessor"]).startswith("hmac-sha256:") for r in records)
    assert root not in (tmp_path / "audit.jsonl").read_text()


def test_the_openapi_document_is_recorded_as_served(
    tmp_path: Path, store: SecretStore, tokens: TokenStore, root: str, stack: AuditStack
) -> None:
    app = create_app(Core(store, tokens, audit=stack.broker))
    answered, _ = _drive(app, "GET", b"/v1/openapi.json", _headers(root), [])
    assert answered == 200
    records = _records(tmp_path, stack)
    assert sorted((str(r["kind"]), r["status"]) for r in records) == [
        ("request", None),
        ("response", 200),
    ]
    assert {str(r["operation"]) for r in records} == {"openapi"}


class Refusing:
    """An audit hook that cannot record anything (a device down)."""

    def on_request(self, request: object, principal: object) -> None:
        raise AuditFailure("no device took the record")

    def on_response(self, *args: object, **kwargs: object) -> None:
        raise AuditFailure("no device took the record")


def test_a_refusal_that_cannot_be_recorded_is_503_audit_failure(
    store: SecretStore, tokens: TokenStore, root: str
) -> None:
    app = create_app(Core(store, tokens, audit=Refusing()))
    answered, body = _drive(app, "GET", b"/v1/no/such/route", _headers(root), [])
    assert (answered, body["error"]["code"]) == (503, "audit_failure")  # type: ignore[index]
    answered, body = _drive(app, "PATCH", b"/v1/sys/health", _headers(root), [])
    assert (answered, body["error"]["code"]) == (503, "audit_failure")  # type: ignore[index]
