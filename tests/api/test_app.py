"""The API end to end over ASGI: a tour of every route checked against the OpenAPI document,
sealed behaviour, request ids, token headers, logs and canaries."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema
import pytest

from medsecrets.api import create_app
from medsecrets.api.app import ASGIApp
from medsecrets.audit.broker import AuditBroker
from medsecrets.audit.file import FileAuditDevice
from medsecrets.audit.keys import BarrierKeySource
from medsecrets.audit.lane import Lane
from medsecrets.auth.tokens import TokenStore
from medsecrets.clock import ManualClock
from medsecrets.core import Core
from medsecrets.errors import DecryptionError, StorageError, StorageUnavailable
from medsecrets.logs import JsonFormatter
from medsecrets.server.auditsetup import AuditStack
from medsecrets.storage import sqlite as sqlite_module
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore

from .conftest import SAMPLES, P, SyncClient, url_for

CANARY = "CANARY-3c1d9e7f0a5b"


class Checker:
    """Validates responses against the served OpenAPI document."""

    def __init__(self, client: SyncClient) -> None:
        self.doc = client.get("/v1/openapi.json").json()
        self.seen: set[tuple[str, str]] = set()

    def __call__(self, method: str, template: str, response: object) -> object:
        status = str(response.status_code)  # type: ignore[attr-defined]
        op = self.doc["paths"][template][method.lower()]
        assert status in op["responses"], (method, template, status)
        spec = op["responses"][status]
        if "$ref" in spec:
            spec = self.doc["components"]["responses"][spec["$ref"].rsplit("/", 1)[1]]
        schema = spec["content"]["application/json"]["schema"]
        body = response.json()  # type: ignore[attr-defined]
        jsonschema.validate(body, {**schema, "components": self.doc["components"]})
        self.seen.add((method, template))
        return body


def audit_stack(store: SecretStore, path: Path) -> AuditStack:
    """A started audit stack with one file device, as the server builds it (no monitor)."""
    keys = BarrierKeySource(store.barrier)
    stack = AuditStack(broker=None, keys=keys, node="n1")
    lane = Lane(FileAuditDevice("file", path), node="n1", keys=keys)
    stack.broker = AuditBroker([lane], prefix="medessence", keys=keys)
    stack.start()
    return stack


@pytest.fixture
def check(client: SyncClient) -> Checker:
    return Checker(client)


def test_tour_of_every_route_matches_the_document(
    tmp_path: object, clock: ManualClock, check: Checker
) -> None:
    from pathlib import Path

    base = Path(str(tmp_path))
    store = SecretStore(SqliteStorage(base / "tour.db"), clock=clock)
    stack = audit_stack(store, base / "audit.jsonl")
    core = Core(store, TokenStore(store.barrier, clock=clock), audit=stack.broker, admin=stack)
    app = create_app(core)
    import anyio.from_thread
    import httpx

    with anyio.from_thread.start_blocking_portal() as portal:
        ac = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        c = SyncClient(portal, ac)

        def go(method: str, template: str, param: str = "", **kw: object) -> dict[str, object]:
            r = c.request(method, url_for(template, param), **kw)
            body = check(method, template, r)
            assert isinstance(body, dict)
            return body

        go("GET", "/v1/sys/health")
        go("GET", "/v1/sys/seal-status")
        assert go("GET", "/v1/sys/health")["initialized"] is False
        init = go(
            "POST",
            "/v1/sys/init",
            json={"seal": {"type": "shamir", "shares": 3, "threshold": 2}},
        )
        shares = init["shares"]
        assert isinstance(shares, list)
        h = {"X-Medsecrets-Token": str(init["root_token"])}
        go("POST", "/v1/sys/init", json={"seal": {"type": "shamir"}})  # 409
        go("GET", "/v1/catalog", headers=h)
        go("GET", "/v1/catalog/{category}", "database", headers=h)
        go("GET", "/v1/catalog/{category}", "nope", headers=h)  # 404
        go("POST", "/v1/provision", json={"environment": "development"}, headers=h)
        go("POST", "/v1/provision", json={"environment": "production"}, headers=h)  # 422
        go("GET", "/v1/secrets/{path}", P, headers=h)
        go("GET", "/v1/secrets/{path}", P + "x", headers=h)  # 404
        go("GET", "/v1/validate/{path}", P, headers=h)
        go(
            "PUT",
            "/v1/secrets/{path}",
            P,
            json={"fields": {"username": "next_user"}, "stage": "pending", "cas": 1},
            headers=h,
        )
        go("PUT", "/v1/secrets/{path}", P, json={"fields": {"username": "x"}, "cas": 1}, headers=h)
        go("GET", "/v1/metadata/{path}", P, headers=h)
        go("PATCH", "/v1/metadata/{path}", P, json={"tags": {"team": "ml"}}, headers=h)
        go("GET", "/v1/metadata", params={"tag": "team:ml", "limit": "5"}, headers=h)
        go("POST", "/v1/stages/{path}", P, json={"stage": "current", "version": 2}, headers=h)
        go("POST", "/v1/destroy/{path}", P, json={"version": 1}, headers=h)
        go("DELETE", "/v1/secrets/{path}", P, params={"recovery_days": "7"}, headers=h)
        go("GET", "/v1/secrets/{path}", P, headers=h)  # 410
        go("POST", "/v1/restore/{path}", P, headers=h)
        go("POST", "/v1/generate", json={"kind": "password"}, headers=h)
        go("GET", "/v1/sys/keys/{category}", "database", headers=h)
        go("POST", "/v1/sys/keys/{category}/rotate", "database", headers=h)
        go("POST", "/v1/sys/rewrap", json={"limit": 2}, headers=h)
        go("POST", "/v1/sys/rotate", headers=h)
        created = go(
            "POST",
            "/v1/auth/token/create",
            json={"paths": ["medessence/development/"], "capabilities": ["read"], "ttl": 60},
            headers=h,
        )
        child = {"Authorization": f"Bearer {created['token']}"}
        go("GET", "/v1/auth/token/self", headers=child)
        go("PUT", "/v1/secrets/{path}", P, json={"fields": {"username": "x"}}, headers=child)
        info = created["info"]
        assert isinstance(info, dict)
        go("POST", "/v1/auth/token/lookup", json={"accessor": info["accessor"]}, headers=h)
        go("POST", "/v1/auth/token/revoke", json={"accessor": info["accessor"]}, headers=h)
        go("GET", "/v1/auth/token/self", headers=child)  # 401
        rekey = go(
            "POST",
            "/v1/sys/rekey",
            json={"shares": shares[:2], "new_shares": 2, "new_threshold": 2},
            headers=h,
        )
        new_shares = rekey["shares"]
        assert isinstance(new_shares, list) and rekey["verify"] is True
        go("POST", "/v1/sys/rekey/verify", json={"shares": shares[:2]}, headers=h)  # 400
        go("POST", "/v1/sys/rekey/verify", json={"shares": new_shares}, headers=h)
        go("DELETE", "/v1/sys/rekey", headers=h)
        go("POST", "/v1/sys/seal", headers=h)
        go("GET", "/v1/secrets/{path}", P, headers=h)  # 503
        go("POST", "/v1/sys/unseal", json={"share": "not a share"})  # 400
        go("POST", "/v1/sys/unseal", json={"share": new_shares[0]})
        assert go("POST", "/v1/sys/unseal", json={"share": new_shares[1]})["sealed"] is False
        go("GET", "/v1/secrets/{path}", P, headers=h)
        hashed = go("POST", "/v1/sys/audit/hash", json={"input": "next_user"}, headers=h)
        go("POST", "/v1/sys/audit/hash", json={"input": "x", "device": "nope"}, headers=h)  # 404
        go("GET", "/v1/sys/audit/devices", headers=h)
        found = go("GET", "/v1/sys/audit/search", params={"operation": "secrets.write"}, headers=h)
        records = found["records"]
        assert isinstance(records, list) and records
        assert any(hashed["hash"] in json.dumps(r) for r in records)
        go("GET", "/v1/sys/audit/search", params={"since": "yesterday"}, headers=h)  # 400
        reads = go("GET", "/v1/sys/audit/who-read", params={"path": P}, headers=h)["reads"]
        assert isinstance(reads, list) and reads
        go("GET", "/v1/sys/audit/public-key", headers=h)
        assert go("GET", "/v1/sys/audit/verify", headers=h)["ok"] is True
        go("GET", "/v1/sys/audit/verify", params={"device": "nope"}, headers=h)  # 404
        go("GET", "/v1/sys/alerts", headers=h)
        portal.call(ac.aclose)
    stack.stop()
    store.close()
    documented = {
        (m.upper(), url)
        for url, ops in check.doc["paths"].items()
        for m in ops
        if url not in ("/v1/openapi.json", "/v1/docs")
    }
    assert documented == check.seen


@pytest.mark.parametrize("route", sorted(SAMPLES))
def test_sealed_server_answers_503_without_data_except_open_routes(
    route: str, core: Core, client: SyncClient, store: SecretStore, auth: dict[str, str]
) -> None:
    spec = next(s for (_, n), s in core.routes.items() if n == route)
    param, body, query = SAMPLES[route]
    store.seal()
    url = url_for(spec.url, param) + (f"?{query}" if query else "")
    for headers in (auth, {}):
        r = client.request(spec.method, url, headers=headers, json=body)
        if route in ("sys.health", "sys.seal_status", "sys.unseal"):
            assert r.status_code == 200
            assert r.json()["sealed"] is True
        elif route == "sys.init":  # initialised already: 409, sealed or not (api.md)
            assert r.status_code == 409, r.text
            assert r.json()["error"]["code"] == "already_initialized"
        else:
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "sealed"
            assert set(r.json()) == {"error", "request_id"}


def test_request_ids(client: SyncClient) -> None:
    r = client.get("/v1/sys/health", headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    for bad in ("x" * 65, "a b", "a;b", "\u00fcn".encode(), ""):
        r = client.get("/v1/sys/health", headers={"X-Request-Id": bad})
        assert re.fullmatch(r"[0-9a-f]{16}", r.headers["x-request-id"])
    ids = {client.get("/v1/sys/health").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5
    r = client.get("/v1/nope", headers={"X-Request-Id": "trace-1"})
    assert r.json()["request_id"] == "trace-1" == r.headers["x-request-id"]


def test_both_token_headers_and_response_headers(client: SyncClient, root: str) -> None:
    for headers in (
        {"Authorization": f"Bearer {root}"},
        {"Authorization": f"bearer {root}"},
        {"X-Medsecrets-Token": root},
    ):
        r = client.get("/v1/auth/token/self", headers=headers)
        assert r.status_code == 200 and r.json()["root"] is True
        assert r.headers["cache-control"] == "no-store"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


def _all_log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every server-side record, rendered both as JSON and plain (client loggers excluded)."""
    formatter = JsonFormatter()
    return "\n".join(
        formatter.format(r) + "\n" + logging.Formatter().format(r)
        for r in caplog.records
        if not r.name.startswith(("httpx", "httpcore"))
    )


def test_access_log_lines_hold_no_values_tokens_or_paths(
    client: SyncClient, auth: dict[str, str], root: str, logs: pytest.LogCaptureFixture
) -> None:
    client.put(f"/v1/secrets/{P}", headers=auth, json={"fields": {"username": "canary_user"}})
    client.get(f"/v1/secrets/{P}?stage=current", headers={**auth, "X-Request-Id": "req-1"})
    access = [r for r in logs.records if r.name == "medsecrets.access"]
    assert len(access) == 2
    line = json.loads(JsonFormatter().format(access[1]))
    assert line["method"] == "GET" and line["route"] == "secrets.read"
    assert line["status"] == 200 and line["request_id"] == "req-1"
    assert line["remote"] == "127.0.0.1" and isinstance(line["duration_ms"], float)
    text = _all_log_text(logs)
    for needle in ("canary_user", root, P, "stage=current"):
        assert needle not in text


def test_canaries_never_appear_in_error_bodies_or_logs(
    client: SyncClient,
    auth: dict[str, str],
    logs: pytest.LogCaptureFixture,
) -> None:
    hostile: list[tuple[str, str, dict[str, object]]] = [
        ("PUT", f"/v1/secrets/{P}", {"json": {"fields": {"password": CANARY[:15]}}}),
        ("PUT", f"/v1/secrets/{P}", {"json": {"fields": {"port": CANARY}}}),
        ("PUT", f"/v1/secrets/{P}", {"json": {"fields": {"host": CANARY + "!"}}}),
        ("PUT", f"/v1/secrets/{P}", {"json": {"fields": {"username": CANARY}, "cas": 7}}),
        ("PUT", f"/v1/secrets/{P}", {"json": {"fields": {"username": [CANARY]}}}),
        ("PUT", f"/v1/secrets/{P}", {"json": {"fields": {"nope": CANARY}}}),
        (
            "PUT",
            f"/v1/secrets/{P}",
            {"json": {"fields": {"username": "x"}, "tags": {"t": CANARY * 30}}},
        ),
        ("PUT", f"/v1/secrets/{P}", {"content": b'{"fields": {"username": "' + CANARY.encode()}),
        (
            "PUT",
            f"/v1/secrets/{P}",
            {"content": CANARY.encode(), "headers": {"content-type": "text/plain"}},
        ),
        ("GET", f"/v1/secrets/{P}?version={CANARY}", {}),
        ("GET", f"/v1/secrets/{P}?stage={CANARY}", {}),
        ("POST", "/v1/generate", {"json": {"kind": "password", "params": {"length": CANARY}}}),
        (
            "POST",
            "/v1/generate",
            {"json": {"kind": "password", "params": {"symbol_chars": CANARY}}},
        ),
        ("POST", "/v1/sys/unseal", {"json": {"share": CANARY}}),
        ("POST", "/v1/sys/rekey", {"json": {"shares": [CANARY, CANARY]}}),
        ("POST", "/v1/auth/token/lookup", {"json": {"token": CANARY}}),
        ("POST", "/v1/auth/token/revoke", {"json": {"token": "ms." + CANARY * 3}}),
        (
            "POST",
            "/v1/provision",
            {"json": {"environment": "staging", "provided": {"database": {"password": CANARY}}}},
        ),
        (
            "POST",
            "/v1/provision",
            {"json": {"environment": "development", "provided": {"database": {"port": CANARY}}}},
        ),
    ]
    for method, url, kw in hostile:
        headers = {**auth, **kw.pop("headers", {})}  # type: ignore[dict-item]
        r = client.request(method, url, headers=headers, **kw)
        assert 400 <= r.status_code < 500, (method, url, r.status_code, r.text)
        assert CANARY not in r.text and CANARY[:12] not in r.text, (url, r.text)
    for headers in ({"Authorization": f"Bearer {CANARY}"}, {"X-Medsecrets-Token": CANARY}):
        r = client.get(f"/v1/secrets/{P}", headers=headers)
        assert r.status_code == 401 and CANARY not in r.text
    assert CANARY[:12] not in _all_log_text(logs)


def test_unexpected_errors_are_generic_500s_logged_without_messages(
    core: Core,
    client: SyncClient,
    auth: dict[str, str],
    store: SecretStore,
    logs: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def explode(*args: object, **kw: object) -> object:
        raise RuntimeError(f"boom {CANARY}")

    monkeypatch.setattr(store.secrets, "get", explode)
    r = client.get(f"/v1/secrets/{P}", headers={**auth, "X-Request-Id": "req-500"})
    assert r.status_code == 500
    assert r.json()["error"] == {
        "code": "internal",
        "message": "internal error (request id req-500)",
    }
    errors = [rec for rec in logs.records if rec.name == "medsecrets.api"]
    assert len(errors) == 1
    line = json.loads(JsonFormatter().format(errors[0]))
    assert line["request_id"] == "req-500" and line["error_type"] == "RuntimeError"
    assert any("explode" in frame for frame in line["traceback"])
    assert CANARY not in _all_log_text(logs)
    for error in (DecryptionError(), StorageError(f"disk {CANARY}")):

        def fail(*args: object, _e: Exception = error, **kw: object) -> object:
            raise _e

        monkeypatch.setattr(store.secrets, "get", fail)
        r = client.get(f"/v1/secrets/{P}", headers=auth)
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal"
        assert CANARY not in r.text
    assert CANARY not in _all_log_text(logs)
    # a database out of reach for now is a 503 that says so (retry), not a bug's 500
    busy = StorageUnavailable("postgres get failed: no connection in time, nothing was sent")

    def unavailable(*args: object, **kw: object) -> object:
        raise busy

    monkeypatch.setattr(store.secrets, "get", unavailable)
    r = client.get(f"/v1/secrets/{P}", headers=auth)
    assert r.status_code == 503
    assert r.json()["error"] == {"code": "storage_unavailable", "message": str(busy)}


def test_failing_audit_hook_refuses_with_503_and_no_secret(
    store: SecretStore, tokens: TokenStore, root: str
) -> None:
    import anyio.from_thread
    import httpx

    class Broken:
        def on_request(self, request: object, principal: object) -> None:
            return None

        def on_response(self, *args: object) -> None:
            raise OSError("audit disk full")

    store.secrets.put(P, {"username": CANARY[:20].replace("-", "_")})
    app: ASGIApp = create_app(Core(store, tokens, audit=Broken()))
    with anyio.from_thread.start_blocking_portal() as portal:
        ac = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        r = portal.call(
            lambda: ac.get(f"/v1/secrets/{P}", headers={"Authorization": f"Bearer {root}"})
        )
        portal.call(ac.aclose)
    assert r.status_code == 503 and r.json()["error"]["code"] == "audit_failure"
    assert CANARY[:12].replace("-", "_") not in r.text


def test_secret_changes_and_reads_run_on_the_loop_other_changes_in_a_thread(
    client: SyncClient,
    auth: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    store: SecretStore,
    tokens: TokenStore,
) -> None:
    import threading

    threads: dict[str, tuple[str, bool]] = {}
    storage = store.storage
    assert isinstance(storage, SqliteStorage)

    def spy(name: str, real: Callable[..., object]) -> Callable[..., object]:
        def call(*a: object, **kw: object) -> object:
            deferring = sqlite_module._DEFERRING.get() is storage
            threads[name] = (threading.current_thread().name, deferring)
            return real(*a, **kw)

        return call

    for name in ("put", "get", "update_metadata", "delete", "restore"):
        monkeypatch.setattr(store.secrets, name, spy(name, getattr(store.secrets, name)))
    monkeypatch.setattr(tokens, "create", spy("token", tokens.create))
    assert (
        client.put(f"/v1/secrets/{P}", headers=auth, json={"fields": {"username": "u"}}).status_code
        == 200
    )
    assert client.get(f"/v1/secrets/{P}", headers=auth).status_code == 200
    patch = client.request("PATCH", f"/v1/metadata/{P}", headers=auth, json={"description": "d"})
    assert patch.status_code == 200
    assert client.request("DELETE", f"/v1/secrets/{P}", headers=auth).status_code == 200
    assert client.post(f"/v1/restore/{P}", headers=auth).status_code == 200
    token = client.post(
        "/v1/auth/token/create",
        headers=auth,
        json={"paths": ["*"], "capabilities": ["read"], "ttl": 60},
    )
    assert token.status_code == 200
    loop_thread = threads["get"][0]
    assert threads["get"] == (loop_thread, False)
    for change in ("put", "update_metadata", "delete", "restore"):  # loop_write: deferred
        assert threads[change] == (loop_thread, True), change
    assert threads["token"][0] != loop_thread  # in a worker thread, durable on return
    assert threads["token"][1] is False


@contextlib.contextmanager
def _client(app: ASGIApp) -> Iterator[SyncClient]:
    """A ``SyncClient`` on ``app`` (the ``client`` fixture, for an app built in the test)."""
    import anyio.from_thread
    import httpx

    with anyio.from_thread.start_blocking_portal() as portal:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4242))
        async_client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        try:
            yield SyncClient(portal, async_client)
        finally:
            portal.call(async_client.aclose)


def _gated_store(tmp_path: Path, clock: ManualClock, fsync: Callable[[int], None]) -> SecretStore:
    from medsecrets.schema.seal import KeyFileSealConfig

    s = SecretStore(SqliteStorage(tmp_path / "gated.db", _fsync=fsync), clock=clock)
    s.initialize(KeyFileSealConfig(str(tmp_path / "gated.key")))
    return s


def test_a_loop_write_is_answered_and_recorded_only_once_durable(
    tmp_path: Path, clock: ManualClock
) -> None:
    import os
    import threading
    import time

    events: list[str] = []
    slow = threading.Event()

    def fsync(fd: int) -> None:
        if slow.is_set():
            time.sleep(0.3)  # an answer not waiting for this would come first
        os.fsync(fd)
        events.append("fsync done")

    store = _gated_store(tmp_path, clock, fsync)
    tokens = TokenStore(store.barrier, clock=clock)
    core = Core(store, tokens)
    real = core._on_response

    def on_response(*a: object, **kw: object) -> object:
        events.append("response record")
        return real(*a, **kw)  # type: ignore[arg-type]

    core._on_response = on_response  # type: ignore[method-assign]
    root = tokens.create_root()[0].reveal()
    try:
        with _client(create_app(core)) as client:
            events.clear()
            slow.set()
            answer = client.put(
                f"/v1/secrets/{P}",
                headers={"Authorization": f"Bearer {root}"},
                json={"fields": {"username": "u"}},
            )
            events.append("answered")
        assert answer.status_code == 200
        assert (
            events.index("fsync done") < events.index("response record") < events.index("answered")
        )
    finally:
        store.close()


def test_a_failed_log_fsync_fails_the_loop_write_and_its_record_says_so(
    tmp_path: Path, clock: ManualClock
) -> None:
    import errno
    import os

    fail = [False]

    def fsync(fd: int) -> None:
        if fail[0]:
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(fd)

    store = _gated_store(tmp_path, clock, fsync)
    tokens = TokenStore(store.barrier, clock=clock)
    core = Core(store, tokens)
    statuses: list[int] = []
    real = core._on_response

    def on_response(
        request: object, principal: object, status: int, code: object, version: object = None
    ) -> object:
        statuses.append(status)
        return real(request, principal, status, code, version)  # type: ignore[arg-type]

    core._on_response = on_response  # type: ignore[method-assign]
    root = tokens.create_root()[0].reveal()
    try:
        with _client(create_app(core)) as client:
            fail[0] = True
            statuses.clear()
            answer = client.put(
                f"/v1/secrets/{P}",
                headers={"Authorization": f"Bearer {root}"},
                json={"fields": {"username": "u"}},
            )
        assert answer.status_code == 500
        assert answer.json()["error"]["code"] == "internal"  # storage failures are 500s
        assert statuses == [500]  # the outcome recorded is the failure, not the route's 200
    finally:
        fail[0] = False
        store.close()


def test_a_loop_write_that_finds_the_write_lock_taken_runs_again_in_a_thread(
    client: SyncClient, auth: dict[str, str], store: SecretStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3
    import threading

    storage = store.storage
    assert isinstance(storage, SqliteStorage)
    runs: list[tuple[str, bool]] = []
    released: list[bool] = []  # for the run in a thread: the lock was released when it wrote
    real_put = store.secrets.put
    other = sqlite3.connect(storage._path, isolation_level=None, check_same_thread=False)
    released_at = threading.Event()

    def release() -> None:
        other.execute("ROLLBACK")
        released_at.set()

    # Another process's write lock, held until 0.3 s after the run in a thread starts (not
    # after a fixed time: on a loaded machine the request may reach the store later).
    releaser = threading.Timer(0.3, release)

    def put(*a: object, **kw: object) -> object:
        deferred = sqlite_module._DEFERRING.get() is storage
        runs.append((threading.current_thread().name, deferred))
        if deferred:
            return real_put(*a, **kw)  # type: ignore[arg-type]
        releaser.start()
        try:
            return real_put(*a, **kw)  # type: ignore[arg-type]
        finally:
            released.append(released_at.is_set())

    monkeypatch.setattr(store.secrets, "put", put)
    other.execute("BEGIN IMMEDIATE")
    try:
        answer = client.put(f"/v1/secrets/{P}", headers=auth, json={"fields": {"username": "u"}})
        assert answer.status_code == 200
        assert released == [True]  # it waited for the lock, in the thread
    finally:
        if releaser.ident is None:  # never started
            other.execute("ROLLBACK")
        else:
            releaser.join()
        other.close()
    assert runs[0][1] is True  # first on the loop, deferred: refused at once
    assert runs[-1][1] is False and runs[-1][0] != runs[0][0]  # then in a worker thread
    assert store.secrets.describe(P).current_version == 1


def test_an_rsgi_client_that_goes_away_mid_body_gets_a_400_not_a_500(
    app: ASGIApp, auth: dict[str, str]
) -> None:
    import asyncio

    answers: list[tuple[int, bytes]] = []

    class Scope:
        proto = "http"
        method = "PUT"
        path = f"/v1/secrets/{P}"
        query_string = ""
        client = "127.0.0.1:5555"
        headers = {
            "authorization": auth["Authorization"],
            "content-type": "application/json",
            "content-length": "100",
        }

    class Protocol:
        async def __call__(self) -> bytes:
            raise RuntimeError("RSGIProtocolClosed")  # what granian raises

        def __aiter__(self) -> Protocol:
            return self

        async def __anext__(self) -> bytes:
            raise RuntimeError("RSGIProtocolClosed")

        def response_bytes(self, status: int, headers: object, body: bytes) -> None:
            answers.append((status, body))

    asyncio.run(app.__rsgi__(Scope(), Protocol()))  # type: ignore[attr-defined,arg-type]
    assert answers and answers[0][0] == 400
    assert b"client disconnected" in answers[0][1]
    Scope.headers = {k: v for k, v in Scope.headers.items() if k != "content-length"}
    asyncio.run(app.__rsgi__(Scope(), Protocol()))  # type: ignore[attr-defined,arg-type]
    assert answers[1][0] == 400  # the chunked path too
