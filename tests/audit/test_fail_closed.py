"""Fail closed: no durable audit record, no secret — five ways a device can fail.

For every route that returns or changes secret material, with the only audit
device broken in one of five ways (file unwritable, disk full, database device
failing, device raising, device hanging), every request is refused with 503
``audit_failure`` and no secret in the body, and nothing changes. After the
device recovers, every 2xx has exactly one request and one response record.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio.from_thread
import httpx
import pytest

from medsecrets.api import create_app
from medsecrets.audit.broker import AuditBroker
from medsecrets.audit.database import DatabaseAuditDevice
from medsecrets.audit.device import AuditDevice, ChainHead
from medsecrets.audit.file import FileAuditDevice
from medsecrets.audit.keys import BarrierKeySource
from medsecrets.audit.lane import Lane
from medsecrets.auth.tokens import TokenStore
from medsecrets.clock import ManualClock
from medsecrets.core import Core
from medsecrets.errors import StorageError
from medsecrets.storage.base import Operation
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore
from tests.api.conftest import SAMPLES, SyncClient, url_for

P = "medessence/development/database"
CANARY = "Canary-f41l-cl0sed-9QzX"

#: Routes that return or change secret material (values, keys, tokens, versions).
MATERIAL = (
    "secrets.read",
    "secrets.write",
    "secrets.delete",
    "secrets.restore",
    "secrets.destroy",
    "stages.update",
    "metadata.update",
    "generate",
    "provision",
    "tokens.create",
    "sys.keys.rotate",
    "sys.rotate",
    "sys.rewrap",
)


class HangingDevice:
    """A test device in memory that can raise or hang on demand (no runnable peer hangs)."""

    def __init__(self) -> None:
        self.name = "mem"
        self.lines: list[bytes] = []
        self.raising = False
        self.gate = threading.Event()
        self.gate.set()

    def open(self) -> ChainHead:
        return ChainHead()

    def write(self, lines: Sequence[bytes]) -> None:
        self.gate.wait()
        if self.raising:
            raise RuntimeError("device raising")
        self.lines.extend(lines)

    def close(self) -> None:
        self.gate.set()


class BreakableStorage:
    """A real SQLite storage whose batches fail while ``broken`` (a database going away)."""

    def __init__(self, inner: SqliteStorage) -> None:
        self.inner = inner
        self.broken = False

    def batch(self, ops: Sequence[Operation]) -> dict[str, bytes]:
        if self.broken:
            raise StorageError("database unavailable")
        return self.inner.batch(ops)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@dataclass
class Way:
    device: AuditDevice
    fail: Callable[[], None]
    heal: Callable[[], None]
    lines: Callable[[], list[bytes]]


def _file_lines(path: Path) -> Callable[[], list[bytes]]:
    return lambda: path.read_bytes().splitlines() if path.is_file() else []


def unwritable(tmp_path: Path) -> Way:
    path = tmp_path / "audit" / "audit.jsonl"
    device = FileAuditDevice("file", path)
    saved = tmp_path / "saved.jsonl"

    def fail() -> None:
        shutil.move(path, saved)
        path.mkdir()  # a directory where the file was: every write fails, even for root

    def heal() -> None:
        if path.is_dir():
            path.rmdir()
            shutil.move(saved, path)

    return Way(device, fail, heal, _file_lines(path))


def disk_full(tmp_path: Path) -> Way:
    path = tmp_path / "audit.jsonl"
    state = {"full": False}

    def write(fd: int, data: memoryview) -> int:
        if state["full"]:
            os.write(fd, bytes(data[: len(data) // 2]))  # a torn half line, then ENOSPC
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    device = FileAuditDevice("file", path, _write=write)
    return Way(
        device,
        lambda: state.__setitem__("full", True),
        lambda: state.__setitem__("full", False),
        _file_lines(path),
    )


def database_failing(tmp_path: Path) -> Way:
    storage = BreakableStorage(SqliteStorage(tmp_path / "audit.db"))
    device = DatabaseAuditDevice("database", storage, node="n1")  # type: ignore[arg-type]

    def fail() -> None:
        storage.broken = True

    def heal() -> None:
        storage.broken = False

    return Way(device, fail, heal, lambda: list(device.records()))


def raising(tmp_path: Path) -> Way:
    device = HangingDevice()
    return Way(
        device,
        lambda: setattr(device, "raising", True),
        lambda: setattr(device, "raising", False),
        lambda: list(device.lines),
    )


def hanging(tmp_path: Path) -> Way:
    device = HangingDevice()
    return Way(device, device.gate.clear, device.gate.set, lambda: list(device.lines))


WAYS = {
    "unwritable": unwritable,
    "disk_full": disk_full,
    "database_failing": database_failing,
    "raising": raising,
    "hanging": hanging,
}


@pytest.fixture
def tokens(store: SecretStore, clock: ManualClock) -> TokenStore:
    return TokenStore(store.barrier, clock=clock)


@pytest.fixture(params=sorted(WAYS))
def setup(
    request: pytest.FixtureRequest, tmp_path: Path, store: SecretStore, tokens: TokenStore
) -> Iterator[tuple[Way, AuditBroker, SyncClient, dict[str, str]]]:
    way = WAYS[request.param](tmp_path)
    keys = BarrierKeySource(store.barrier)
    # A short timeout only where the test waits for it (a device in memory that hangs): a
    # file or database device fsyncs, which a loaded machine may take longer than 0.3 s to do.
    timeout = 0.3 if request.param == "hanging" else 5.0
    broker = AuditBroker(
        [Lane(way.device, node="n1", keys=keys, timeout=timeout)],
        prefix="medessence",
        keys=keys,
        timeout=timeout,
    )
    broker.start()
    core = Core(store, tokens, audit=broker)
    app = create_app(core)
    root = tokens.create_root()[0].reveal()
    with anyio.from_thread.start_blocking_portal() as portal:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4242))
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        yield way, broker, SyncClient(portal, client), {"X-Medsecrets-Token": root}
        portal.call(client.aclose)
    way.heal()
    broker.stop()


def _call(client: SyncClient, core_routes: dict[str, tuple[str, str]], route: str,
          auth: dict[str, str]) -> httpx.Response:  # fmt: skip
    method, template = core_routes[route]
    param, body, query = SAMPLES[route]
    url = url_for(template, param) + (f"?{query}" if query else "")
    kwargs: dict[str, object] = {"headers": auth}
    if body is not None:
        kwargs["json"] = body
    return client.request(method, url, **kwargs)


def _routes(store: SecretStore, tokens: TokenStore) -> dict[str, tuple[str, str]]:
    core = Core(store, tokens)
    return {spec.name: (spec.method, spec.url) for spec in core.routes.values()}


def test_every_material_route_is_refused_then_audited_once_after_recovery(
    setup: tuple[Way, AuditBroker, SyncClient, dict[str, str]],
    store: SecretStore,
    tokens: TokenStore,
) -> None:
    way, broker, client, auth = setup
    routes = _routes(store, tokens)
    created = client.put(f"/v1/secrets/{P}", headers=auth, json={"fields": {"password": CANARY}})
    assert created.status_code == 200, created.text
    versions_before = store.secrets.describe(P).current_version

    way.fail()
    for route in MATERIAL:
        response = _call(client, routes, route, auth)
        assert response.status_code == 503, (route, response.status_code, response.text)
        assert response.json()["error"]["code"] == "audit_failure", route
        assert CANARY not in response.text
    assert store.secrets.describe(P).current_version == versions_before
    assert store.secrets.get(P).fields["password"] == CANARY
    way.heal()
    deadline = time.monotonic() + 10  # recovered: no write still hanging
    while broker.health()[0]["hung"] and time.monotonic() < deadline:
        time.sleep(0.01)

    ok: list[str] = []
    for route in ("secrets.read", "secrets.write", "generate", "tokens.create", "metadata.update"):
        response = _call(client, routes, route, auth)
        assert response.status_code == 200, (route, response.text)
        ok.append(response.headers["x-request-id"])
    records = [json.loads(line) for line in way.lines()]
    for request_id in ok:
        kinds = sorted(r["kind"] for r in records if r.get("request_id") == request_id)
        assert kinds == ["request", "response"], request_id
    text = b"\n".join(way.lines())
    assert CANARY.encode() not in text
