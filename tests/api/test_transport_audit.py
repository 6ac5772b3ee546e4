"""Requests the transport refuses itself, before the core (``api.app``), are recorded as
the core records its own refusals: one request and one response record each, the
refusal's status and code, no principal, the token HMAC'd. They were answered without a
record: an unknown URL path, a wrong method, a bad URL path, a malformed, oversized or
non-JSON body, a malformed query, and a body that never came. The OpenAPI document and
the docs page, served by the transport too, are recorded as well. A refusal that cannot
be recorded is a 503 ``audit_failure``, as for the core's own refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsecrets.api import create_app
from medsecrets.api.app import MAX_URL_PATH
from medsecrets.auth.tokens import TokenStore
from medsecrets.core import Core
from medsecrets.core.routes import UNROUTED
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

from .conftest import P

Case = tuple[str, bytes, list[tuple[bytes, bytes]], list[bytes], bytes]

stack = pytest.fixture(file_audit_stack)

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
    answered, body = drive(app, method, path, headers(root, *extra), chunks, query)
    assert (answered, body["error"]["code"]) == (status, code)  # type: ignore[index]
    records = recorded(tmp_path, stack)
    assert_one_exchange(records, status, code, route)
    assert {str(r["path"]) for r in records} == {recorded_path}
    assert all(r["principal"] is None for r in records)
    assert all(str(r["accessor"]).startswith("hmac-sha256:") for r in records)
    assert root not in (tmp_path / "audit.jsonl").read_text()


def test_the_openapi_document_is_recorded_as_served(
    tmp_path: Path, store: SecretStore, tokens: TokenStore, root: str, stack: AuditStack
) -> None:
    app = create_app(Core(store, tokens, audit=stack.broker))
    answered, _ = drive(app, "GET", b"/v1/openapi.json", headers(root), [])
    assert answered == 200
    assert_one_exchange(recorded(tmp_path, stack), 200, None, "openapi")


def test_a_refusal_that_cannot_be_recorded_is_503_audit_failure(
    store: SecretStore, tokens: TokenStore, root: str
) -> None:
    app = create_app(Core(store, tokens, audit=FakeRefusingHook()))
    answered, body = drive(app, "GET", b"/v1/no/such/route", headers(root), [])
    assert (answered, body["error"]["code"]) == (503, "audit_failure")  # type: ignore[index]
    answered, body = drive(app, "PATCH", b"/v1/sys/health", headers(root), [])
    assert (answered, body["error"]["code"]) == (503, "audit_failure")  # type: ignore[index]
