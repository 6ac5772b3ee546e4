"""Every route answers only the error statuses its OpenAPI operation lists
(``api.openapi.error_statuses``), and every status a route declares as its own
(``RouteSpec.statuses``) is one a case here provokes, so a declaration cannot go stale.

Each route of the core's route table is driven through the ASGI app with inputs that
provoke its error cases: its sample, no token, an unknown token, a token without the
capability, unknown and malformed query parameters, bad bodies, unknown names, while
sealed and while uninitialised; then cases aimed at each declared status, over real
SQLite stores, a real audit trail (a file device) and real KMS clients (boto3) talking to
a refusing peer on 127.0.0.1 (``tests.support.peers``). The few declared statuses that
only a race can bring about are in ``UNPROVOKED``, each with its reason.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import anyio.from_thread
import httpx
import pytest

from medsecrets.api import create_app
from medsecrets.api.openapi import error_statuses
from medsecrets.audit.broker import AuditBroker
from medsecrets.audit.file import FileAuditDevice
from medsecrets.audit.keys import BarrierKeySource
from medsecrets.audit.lane import Lane
from medsecrets.audit.stdout import StdoutAuditDevice
from medsecrets.auth.tokens import TokenStore
from medsecrets.clock import ManualClock
from medsecrets.core import Core
from medsecrets.core.routes.base import RouteSpec
from medsecrets.schema.seal import KeyFileSealConfig
from medsecrets.server.auditsetup import AuditStack
from medsecrets.storage.base import Put
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore
from tests.keys.test_awskms import kms_catalog
from tests.keys.test_awskms_hostile import _client as _kms_client
from tests.support.peers import FixedAnswer, answer

from .conftest import SAMPLES, P, SyncClient, url_for

UNPROVOKED: dict[str, dict[int, str]] = {
    # Declared statuses no case here provokes: each needs a race between two requests (a
    # check-and-set that lost), which no single-threaded case can bring about reliably.
    "sys.rotate": {409: "another rotation changed the keyring between read and write"},
    "sys.rekey": {409: "another rekey changed the seal between read and write"},
    "sys.rekey.verify": {409: "another rekey changed the seal between read and write"},
    "sys.rekey.cancel": {409: "the pending rekey replaced again and again while it is cancelled"},
    "sys.keys.rotate": {409: "another rotation added the KEK version between read and write"},
    "sys.rewrap": {409: "a secret changing faster than rewrap's retries"},
    "secrets.delete": {409: "a secret changing faster than the engine's retries"},
    "metadata.update": {409: "a secret changing faster than the engine's retries"},
    "provision": {
        409: "a secret created and purged again faster than the engine's retries",
        410: "a secret deleted between provision's check that it exists and its write",
    },
}

_KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/0a1b2c3d-0000-0000-0000-000000000000"
_KMS_JSON = "Content-Type: application/x-amz-json-1.1"
_REFUSAL = answer(
    "400 Bad Request",
    json.dumps({"__type": "DisabledException", "message": "the key is disabled"}).encode(),
    _KMS_JSON,
)
_ENCRYPTED = answer(
    "200 OK",
    json.dumps(
        {"CiphertextBlob": base64.b64encode(b"\x01" * 64).decode(), "KeyId": _KEY_ARN}
    ).encode(),
    _KMS_JSON,
)
"""What KMS answers an ``Encrypt``: every call to this peer succeeds as one (a ``Decrypt``
then finds no ``Plaintext``: "malformed answer")."""
_UNKNOWN_TOKEN = "ms." + "A" * 43
_MAX_BODY = 1_048_576
"""``create_app``'s default ``max_body_bytes``."""
_OTHER = "medessence/development/auth"


def _own(spec: RouteSpec) -> frozenset[int]:
    """The statuses ``spec``'s operation lists for its own work: beyond those that follow from
    its declaration (open, method, URL parameter)."""
    return error_statuses(spec) - error_statuses(dataclasses.replace(spec, statuses=()))


@dataclasses.dataclass
class Seen:
    """Every answer: by route, the statuses seen; and the answers no operation lists."""

    statuses: dict[str, set[int]] = dataclasses.field(default_factory=dict)
    undocumented: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)


class Driver:
    """Calls routes by name through one app; checks each answer against its route's
    documented statuses (recorded in ``seen``) and that an error has the JSON error shape."""

    def __init__(self, client: SyncClient, specs: Mapping[str, RouteSpec], seen: Seen) -> None:
        self.client = client
        self.specs = specs
        self.seen = seen
        self.token: str | None = None

    def call(
        self,
        route: str,
        *,
        param: str | None = None,
        body: object = ...,
        query: str | None = None,
        token: str | None = "",
        content: bytes | None = None,
        content_type: str | None = None,
    ) -> httpx.Response:
        """``route`` with its sample's parameter, body and query unless given; ``token``
        ``""``: the driver's token, ``None``: none."""
        spec = self.specs[route]
        sample_param, sample_body, sample_query = SAMPLES[route]
        url = url_for(spec.url, sample_param if param is None else param)
        query = sample_query if query is None else query
        if query:
            url += f"?{query}"
        headers: dict[str, str] = {}
        bearer = self.token if token == "" else token
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        kwargs: dict[str, object] = {"headers": headers}
        if content is not None:
            kwargs["content"] = content
            if content_type is not None:
                headers["Content-Type"] = content_type
        else:
            kwargs["json"] = sample_body if body is ... else body
        response = self.client.request(spec.method, url, **kwargs)
        status = response.status_code
        self.seen.statuses.setdefault(route, set()).add(status)
        if status != 200:
            error = response.json()
            assert set(error) == {"error", "request_id"}, (route, error)
            if status not in error_statuses(spec):
                self.seen.undocumented.append((route, status, error["error"]["code"]))
        return response

    def expect(self, status: int, route: str, **kwargs: object) -> httpx.Response:
        """``call``, asserting the status."""
        response = self.call(route, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == status, (route, kwargs, response.text)
        return response


@contextlib.contextmanager
def _serving(core: Core) -> Iterator[SyncClient]:
    """A client of ``create_app(core)`` over ASGI."""
    with anyio.from_thread.start_blocking_portal() as portal:
        transport = httpx.ASGITransport(app=create_app(core), client=("127.0.0.1", 4242))
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        try:
            yield SyncClient(portal, client)
        finally:
            portal.call(client.aclose)


@contextlib.contextmanager
def _driving(core: Core, seen: Seen) -> Iterator[Driver]:
    with _serving(core) as client:
        yield Driver(client, {spec.name: spec for spec in core.routes.values()}, seen)


def _token(d: Driver, paths: list[str], capabilities: list[str]) -> tuple[str, str]:
    """A new child of the driver's token: (token, accessor)."""
    created = d.expect(
        200, "tokens.create", body={"paths": paths, "capabilities": capabilities, "ttl": 600}
    ).json()
    return str(created["token"]), str(created["info"]["accessor"])


# -- the sweep: every route, the same bad inputs -------------------------------------------
def _bad_queries(spec: RouteSpec) -> list[str]:
    """Query strings each of ``spec``'s parameters refuses."""
    bad = ["unknown=1"]
    for param in spec.query:
        if param.type is int:
            bad += [f"{param.name}=x", f"{param.name}=-99999999999999999999999"]
        elif param.type is bool:
            bad.append(f"{param.name}=maybe")
        else:
            bad.append(f"{param.name}=%00")
            if param.enum is not None:
                bad.append(f"{param.name}=no-such-value")
        bad.append(f"{param.name}=1&{param.name}=2")
    return bad


def _sweep(d: Driver, weak: str) -> None:
    """Every route with its sample, without or with an unknown or too weak token, bad query
    parameters, a missing resource, and bad bodies (``sys.seal`` last: it seals)."""
    names = [*sorted(set(d.specs) - {"sys.seal"}), "sys.seal"]
    for name in names:
        spec = d.specs[name]
        for query in _bad_queries(spec):
            d.call(name, query=query)
        if "{" in spec.url:
            d.call(name, param="no-such-category" if "{category}" in spec.url else P + "/x")
            d.call(name, param="medessence/development/no-such-category")
        if spec.method != "GET":
            d.call(name, body={"unknown_field": 1})
            d.call(name, body=[])
            d.call(name, content=b"x", content_type="text/plain")
            d.call(name, content=b'{"a":1,"a":2}', content_type="application/json")
            d.call(name, content=b"{", content_type="application/json")
            d.call(name, content=b" " * (_MAX_BODY + 1), content_type="application/json")
        d.call(name, token=None)
        d.call(name, token=_UNKNOWN_TOKEN)
        d.call(name, token=weak)
        d.call(name)


# -- cases aimed at each declared status -----------------------------------------------------
def _secret_cases(d: Driver) -> None:
    d.expect(200, "secrets.write")
    d.expect(409, "secrets.write", body={"fields": {"username": "x"}, "cas": 0})
    d.expect(422, "secrets.write", param=_OTHER, body={"fields": {"jwt_secret": "short"}})
    d.expect(404, "secrets.read", param=P + "/missing")
    d.expect(404, "stages.update", body={"stage": "previous", "version": 99})
    d.expect(409, "secrets.destroy", body={"version": 1})  # the current version
    d.expect(200, "secrets.write", body={"fields": {"username": "y"}, "cas": 1})
    d.expect(200, "secrets.destroy", body={"version": 1})
    d.expect(409, "stages.update", body={"stage": "previous", "version": 1})  # destroyed
    d.expect(409, "secrets.restore")  # not scheduled for deletion
    d.expect(200, "secrets.delete")
    d.expect(410, "secrets.delete")
    d.expect(410, "secrets.read")
    d.expect(410, "secrets.validate")
    d.expect(410, "secrets.write")
    d.expect(410, "metadata.update")
    d.expect(410, "stages.update", body={"stage": "previous", "version": 2})
    d.expect(200, "secrets.restore")
    d.expect(422, "provision", body={"environment": "production"})  # provided fields missing
    d.expect(404, "catalog.category", param="no-such-category")
    d.expect(400, "generate", body={"kind": "no-such-kind"})
    d.expect(400, "generate", body={"kind": "password", "params": {"length": 3}})
    d.expect(400, "generate", body={"kind": "password", "params": {"length": "x"}})
    d.expect(400, "generate", body={"kind": "password", "params": {"no_such": 1}})


def _token_cases(d: Driver) -> None:
    delegate, _ = _token(d, ["medessence/"], ["read", "token"])
    weak, weak_accessor = _token(d, ["medessence/"], ["read"])
    d.expect(404, "tokens.lookup", body={"accessor": "0" * 32})
    d.expect(404, "tokens.lookup", body={"accessor": "not an accessor"})
    d.expect(404, "tokens.lookup", body={"token": _UNKNOWN_TOKEN})
    d.expect(404, "tokens.revoke", body={"token": "not a token"})
    d.expect(400, "tokens.lookup", body={})
    d.expect(400, "tokens.lookup", body={"accessor": "0" * 32, "token": _UNKNOWN_TOKEN})
    d.expect(
        404, "tokens.lookup", body={"accessor": weak_accessor}, token=delegate
    )  # outside its tree
    d.expect(403, "tokens.lookup", body={"accessor": "0" * 32}, token=weak)  # no capability
    d.expect(200, "tokens.lookup", body={"token": weak}, token=weak)  # itself
    d.expect(403, "tokens.create", body={"paths": ["*"], "capabilities": ["read"]}, token=delegate)
    beyond = {"paths": ["medessence/"], "capabilities": ["write"]}
    d.expect(403, "tokens.create", body=beyond, token=delegate)
    d.expect(400, "tokens.create", body={"paths": [], "capabilities": ["read"]})
    d.expect(400, "tokens.create", body={"paths": ["*"], "capabilities": ["fly"]})
    d.expect(400, "tokens.create", body={"paths": ["*"], "capabilities": ["read"], "ttl": 0})
    d.expect(200, "tokens.revoke", body={"accessor": weak_accessor})
    d.expect(404, "tokens.revoke", body={"accessor": weak_accessor})  # gone
    d.expect(401, "tokens.self", token=weak)


def _system_cases(d: Driver) -> None:
    d.expect(409, "sys.init")  # initialised already
    d.expect(404, "sys.keys.read", param="no-such-category")
    d.expect(404, "sys.keys.rotate", param="no-such-category")
    d.expect(400, "sys.rewrap", body={"limit": 0})
    for name in sorted(d.specs):
        if name.startswith(("sys.audit.", "sys.alerts")):
            d.expect(404, name)  # this server has no audit trail


def _audit_cases(base: Path, clock: ManualClock, seen: Seen) -> None:
    """A server with an audit trail: a file device (read back) and a stdout one (not)."""
    store = SecretStore(SqliteStorage(base / "store.db"), clock=clock)
    store.initialize(KeyFileSealConfig(str(base / "unseal.key")))
    keys = BarrierKeySource(store.barrier)
    stack = AuditStack(broker=None, keys=keys, node="n1")
    file = Lane(FileAuditDevice("file", base / "audit.jsonl"), node="n1", keys=keys)
    stdout = StdoutAuditDevice("stdout", stream=io.BytesIO())
    lanes = [file, Lane(stdout, node="n1", keys=keys, required=False)]
    stack.broker = AuditBroker(lanes, prefix="medessence", keys=keys)
    stack.start()
    tokens = TokenStore(store.barrier, clock=clock)
    try:
        with _driving(Core(store, tokens, audit=stack.broker, admin=stack), seen) as d:
            d.token = tokens.create_root()[0].reveal()
            d.expect(200, "secrets.write")
            d.expect(200, "secrets.read")
            for name in sorted(d.specs):
                if name.startswith(("sys.audit.", "sys.alerts")):
                    d.expect(200, name)
            d.expect(404, "sys.audit.hash", body={"input": "x", "device": "nope"})
            d.expect(404, "sys.audit.verify", query="device=nope")
            d.expect(400, "sys.audit.verify", query="device=stdout")  # cannot be read back
            d.expect(400, "sys.audit.search", query="since=yesterday")
            d.expect(400, "sys.audit.search", query="operation=no.such.route")
            d.expect(400, "sys.audit.search", query="until=9999-12-31T23:00:00-05:00")
            d.expect(400, "sys.audit.who_read", query="")
            d.expect(400, "sys.audit.who_read", query="path=medessence")
            d.expect(400, "sys.audit.who_read", query=f"path={P}&since=0001-01-01T00:00:00+05:00")
            weak, _ = _token(d, ["medessence/"], ["read", "sudo"])  # sudo, not on sys/audit
            _sweep(d, weak)
    finally:
        stack.stop()
        store.close()


def _kek_table(store: SecretStore, versions: int) -> None:
    """Give the aws-kms category ``database`` KEK versions KMS holds (as if created)."""
    entries = [
        {"version": str(n), "created_at": "2026-01-01T00:00:00+00:00", "key_id": _KEY_ARN}
        for n in range(1, versions + 1)
    ]
    record = json.dumps({"versions": entries}).encode()
    store.barrier.batch([Put("keys/aws-kms/database", record)])
    store.seal()  # the cached table goes too
    store.auto_unseal()


def _kms_cases(base: Path, clock: ManualClock, seen: Seen, monkeypatch: pytest.MonkeyPatch) -> None:
    """``database`` on AWS KMS: without a region (no client can be made), then with a KMS
    that encrypts and later refuses (KEK versions planted: ``CreateKey`` is never asked)."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(base / "no-such-config"))
    unreachable = SecretStore(
        SqliteStorage(base / "no-client.db"), clock=clock, catalog=kms_catalog("statuses")
    )
    unreachable.initialize(KeyFileSealConfig(str(base / "no-client.key")))
    tokens = TokenStore(unreachable.barrier, clock=clock)
    try:
        with _driving(Core(unreachable, tokens), seen) as d:
            d.token = tokens.create_root()[0].reveal()
            d.expect(502, "sys.keys.read")
            d.expect(502, "sys.keys.rotate")
            d.expect(502, "secrets.write")
            d.expect(502, "provision")
    finally:
        unreachable.close()

    peer = FixedAnswer(_REFUSAL)
    store = SecretStore(
        SqliteStorage(base / "store.db"),
        clock=clock,
        catalog=kms_catalog("statuses"),
        kms_client_factory=lambda: _kms_client(peer),
    )
    store.initialize(KeyFileSealConfig(str(base / "unseal.key")))
    tokens = TokenStore(store.barrier, clock=clock)
    try:
        with _driving(Core(store, tokens), seen) as d:
            d.token = tokens.create_root()[0].reveal()
            _kek_table(store, 1)
            d.expect(502, "secrets.write")  # Encrypt refused
            d.expect(502, "sys.keys.rotate")  # CreateKey refused
            peer.answer = _ENCRYPTED
            d.expect(200, "secrets.write")
            peer.answer = _REFUSAL
            _kek_table(store, 2)  # and drops the data keys held: reads ask KMS again
            d.expect(502, "secrets.read")  # Decrypt refused
            d.expect(502, "secrets.validate")
            d.expect(502, "sys.rewrap")  # to version 2: Decrypt refused
    finally:
        peer.stop()
        store.close()


def _seal_kms_cases(
    base: Path, clock: ManualClock, seen: Seen, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uninitialised servers: every route (init's sample makes a Shamir seal), then an AWS
    KMS seal whose KMS refuses, encrypts (init), and refuses the auto-unseal after a restart."""
    store = SecretStore(SqliteStorage(base / "swept.db"), clock=clock)
    try:
        with _driving(Core(store, TokenStore(store.barrier, clock=clock)), seen) as d:
            d.expect(503, "secrets.read", token=_UNKNOWN_TOKEN)  # not initialised
            _sweep(d, _UNKNOWN_TOKEN)
    finally:
        store.close()

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    peer = FixedAnswer(_REFUSAL)
    seal = {"seal": {"type": "awskms", "key_id": _KEY_ARN, "endpoint_url": peer.addr}}
    try:
        store = SecretStore(SqliteStorage(base / "store.db"), clock=clock)
        with _driving(Core(store, TokenStore(store.barrier, clock=clock)), seen) as d:
            d.expect(502, "sys.init", body=seal)  # Encrypt refused
            peer.answer = _ENCRYPTED
            d.expect(200, "sys.init", body=seal)
        store.close()
        peer.answer = _REFUSAL
        store = SecretStore(SqliteStorage(base / "store.db"), clock=clock)  # a restart
        with _driving(Core(store, TokenStore(store.barrier, clock=clock)), seen) as d:
            d.expect(502, "sys.unseal", body={})  # Decrypt refused
        store.close()
    finally:
        peer.stop()


def test_every_answer_is_documented_and_every_declared_status_is_provoked(
    core: Core, tmp_path: Path, clock: ManualClock, root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = Seen()
    with _driving(core, seen) as d:
        d.token = root
        _secret_cases(d)
        _token_cases(d)
        _system_cases(d)
        weak, _ = _token(d, ["medessence/development/"], ["read"])
        _sweep(d, weak)  # ends sealed by an operator
        d.expect(403, "sys.unseal", body={})  # auto-unseal refused until a restart
        _sweep(d, weak)  # sealed
    for part in ("audit", "kms", "seal"):
        (tmp_path / part).mkdir()
    _audit_cases(tmp_path / "audit", clock, seen)
    _kms_cases(tmp_path / "kms", clock, seen, monkeypatch)
    _seal_kms_cases(tmp_path / "seal", clock, seen, monkeypatch)

    assert seen.undocumented == []
    specs = {spec.name: spec for spec in core.routes.values()}
    missed = {
        name: sorted(_own(spec) - seen.statuses.get(name, set()) - set(UNPROVOKED.get(name, {})))
        for name, spec in specs.items()
    }
    assert {name: statuses for name, statuses in missed.items() if statuses} == {}
    stale = {
        name: sorted(set(reasons) & seen.statuses.get(name, set()))
        for name, reasons in UNPROVOKED.items()
    }
    assert {name: statuses for name, statuses in stale.items() if statuses} == {}


def test_every_route_declares_its_own_statuses(core: Core) -> None:
    """Undeclared, a route is documented with every status some route's work may answer
    (``_UNDECLARED``): a generated client then handles errors that never come."""
    assert [spec.name for spec in core.routes.values() if spec.statuses is None] == []
    for name, reasons in UNPROVOKED.items():
        spec = next(s for s in core.routes.values() if s.name == name)
        assert set(reasons) <= _own(spec), name
