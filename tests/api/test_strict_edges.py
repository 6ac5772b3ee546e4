"""Edges the route specs alone do not cover: ``who-read``'s path is a secret path (400
otherwise, as on the secret routes), range messages name only the bounds there are, and
the routes served by the transport itself (metrics, the OpenAPI document, the docs page)
are as strict as the core's: unknown query parameters are 400, other methods 405 with
``Allow``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio.from_thread
import httpx
import pytest

from medsecrets.api import create_app
from medsecrets.api.metrics import Metrics
from medsecrets.auth.tokens import TokenStore
from medsecrets.clock import ManualClock
from medsecrets.core import Core, Request
from medsecrets.errors import InvalidRequest
from medsecrets.schema.tokens import TokenInfo
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore

from .conftest import P, SyncClient
from .test_app import audit_stack
from .test_bad_input import _check_error

WHO_READ = "/v1/sys/audit/who-read"


class Recorder:
    """An audit hook that keeps (route, status, code) of every response record."""

    def __init__(self) -> None:
        self.responses: list[tuple[str, int, str | None]] = []

    def on_request(self, request: Request, principal: TokenInfo | None) -> None:
        return None

    def on_response(
        self,
        request: Request,
        principal: TokenInfo | None,
        status: int,
        code: str | None,
        version: int | None = None,
    ) -> None:
        self.responses.append((request.route, status, code))


def _client(app: object) -> Iterator[SyncClient]:
    with anyio.from_thread.start_blocking_portal() as portal:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4242))  # type: ignore[arg-type]
        async_client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        yield SyncClient(portal, async_client)
        portal.call(async_client.aclose)


@pytest.fixture
def audited(
    tmp_path: Path, store: SecretStore, tokens: TokenStore, clock: ManualClock
) -> Iterator[SyncClient]:
    """A client of an app whose core has an audit trail (a file device) to query."""
    stack = audit_stack(store, tmp_path / "audit.jsonl")
    core = Core(store, tokens, audit=stack.broker, admin=stack)
    try:
        yield from _client(create_app(core))
    finally:
        stack.stop()


@pytest.mark.parametrize(
    "path",
    [
        "bad path/é",
        "medessence/../x",
        "medessence/./development/database",
        "medessence//development/database",
        "medessence/development",
        "other/development/database",
        "medessence/Dev Env/database",
        "medessence/development/database/" + "a" * 200,
        "medessence/development/database\t",
    ],
)
def test_who_read_refuses_a_path_no_secret_can_have(
    path: str, audited: SyncClient, auth: dict[str, str], store: SecretStore
) -> None:
    body = _check_error(
        audited.get(WHO_READ, params={"path": path}, headers=auth), 400, "invalid_request"
    )
    # ... for the very reason the secret routes give for it (one check for both).
    with pytest.raises(InvalidRequest) as refused:
        store.secrets.parse(path)
    assert body["error"] == {"code": "invalid_request", "message": refused.value.message}


def test_who_read_of_a_valid_path_still_answers_with_its_canonical_form(
    audited: SyncClient, auth: dict[str, str]
) -> None:
    r = audited.put(f"/v1/secrets/{P}", headers=auth, json={"fields": {"username": "app_user"}})
    assert r.status_code == 200, r.text
    assert audited.get(f"/v1/secrets/{P}", headers=auth).status_code == 200
    for path in (P, f"/{P}/"):
        r = audited.get(WHO_READ, params={"path": path}, headers=auth)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["path"] == P and len(body["reads"]) == 1
    # a valid path nobody read is an empty answer, not an error
    r = audited.get(WHO_READ, params={"path": f"{P}/never-written"}, headers=auth)
    assert r.status_code == 200 and r.json()["reads"] == []


# -- integer ranges ----------------------------------------------------------------------
def test_range_messages_name_only_the_bounds_there_are(
    client: SyncClient, auth: dict[str, str]
) -> None:
    for version in ("0", "-3"):
        body = _check_error(
            client.get(f"/v1/secrets/{P}?version={version}", headers=auth), 400, "invalid_request"
        )
        assert body["error"]["message"] == "query parameter 'version' must be 1 or more"
    body = _check_error(client.get("/v1/metadata?limit=0", headers=auth), 400, "invalid_request")
    assert body["error"]["message"] == "query parameter 'limit' must be from 1 to 1000"


# -- metrics, the OpenAPI document and the docs page ---------------------------------------
@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def metrics_client(
    store: SecretStore, tokens: TokenStore, recorder: Recorder
) -> Iterator[SyncClient]:
    yield from _client(create_app(Core(store, tokens, audit=recorder), metrics=Metrics()))


@pytest.fixture
def open_metrics_client(store: SecretStore, tokens: TokenStore) -> Iterator[SyncClient]:
    app = create_app(Core(store, tokens), metrics=Metrics(), metrics_unauthenticated=True)
    yield from _client(app)


TRANSPORT_ROUTES = ("/v1/sys/metrics", "/v1/openapi.json", "/v1/docs")


@pytest.mark.parametrize("url", TRANSPORT_ROUTES)
@pytest.mark.parametrize("query", ["x=1", "x", "limit=5&x=2", "format=json"])
def test_transport_routes_refuse_unknown_query_parameters(
    url: str, query: str, metrics_client: SyncClient, auth: dict[str, str]
) -> None:
    assert metrics_client.get(url, headers=auth).status_code == 200
    body = _check_error(metrics_client.get(f"{url}?{query}", headers=auth), 400, "invalid_request")
    # the very answer a core route gives
    core_body = _check_error(
        metrics_client.get(f"/v1/sys/health?{query}", headers=auth), 400, "invalid_request"
    )
    assert body["error"] == core_body["error"]


def test_a_metrics_scrape_with_an_unknown_parameter_is_audited_and_checks_the_token_first(
    metrics_client: SyncClient, auth: dict[str, str], recorder: Recorder
) -> None:
    _check_error(metrics_client.get("/v1/sys/metrics?x=1", headers=auth), 400, "invalid_request")
    _check_error(metrics_client.get("/v1/sys/metrics?x=1"), 401, "unauthenticated")
    assert recorder.responses == [
        ("sys.metrics", 400, "invalid_request"),
        ("sys.metrics", 401, "unauthenticated"),
    ]


def test_open_metrics_refuse_unknown_query_parameters_too(open_metrics_client: SyncClient) -> None:
    assert open_metrics_client.get("/v1/sys/metrics").status_code == 200
    _check_error(open_metrics_client.get("/v1/sys/metrics?x=1"), 400, "invalid_request")


@pytest.mark.parametrize("url", TRANSPORT_ROUTES)
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
def test_transport_routes_answer_other_methods_405_with_allow(
    url: str, method: str, metrics_client: SyncClient, auth: dict[str, str]
) -> None:
    r = metrics_client.request(method, url, headers=auth)
    assert r.status_code == 405
    assert r.headers["allow"] == "GET"
    if method != "HEAD":  # a HEAD answer carries no body
        _check_error(r, 405, "method_not_allowed")


def test_the_document_lists_400_for_itself_and_the_docs_page(client: SyncClient) -> None:
    paths = client.get("/v1/openapi.json").json()["paths"]
    for url in ("/v1/openapi.json", "/v1/docs"):
        assert {"200", "400", "405"} <= set(paths[url]["get"]["responses"]), url


def test_metrics_of_a_sealed_or_uninitialised_server_say_so_before_asking_for_a_token(
    metrics_client: SyncClient,
    auth: dict[str, str],
    store: SecretStore,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    """As on every core route: 503 ``sealed`` / ``not_initialized``, not 401 (no token can
    be checked then). Open metrics stay served (a scraper sees ``medsecrets_sealed``)."""
    store.seal()
    for headers in (auth, {}):
        _check_error(metrics_client.get("/v1/sys/metrics", headers=headers), 503, "sealed")
    fresh_store = SecretStore(SqliteStorage(tmp_path / "fresh.db"), clock=clock)
    try:
        fresh = create_app(
            Core(fresh_store, TokenStore(fresh_store.barrier, clock=clock)), metrics=Metrics()
        )
        for client in _client(fresh):
            _check_error(client.get("/v1/sys/metrics"), 503, "not_initialized")
    finally:
        fresh_store.close()
    opened = create_app(
        Core(store, TokenStore(store.barrier, clock=clock)),
        metrics=Metrics(),
        metrics_unauthenticated=True,
    )
    for client in _client(opened):
        assert client.get("/v1/sys/metrics").status_code == 200


def test_a_repeated_key_deeper_than_json_reads_is_still_a_400(
    client: SyncClient, auth: dict[str, str]
) -> None:
    """orjson reads 1024 levels, the ``json`` module that looks for the repeated key fewer:
    such a body is refused as invalid JSON, never a 500."""
    depth = 1020
    body = b"[" * depth + b'{"a":1,"a":2}' + b"]" * depth
    r = client.put(
        f"/v1/secrets/{P}",
        content=body,
        headers={**auth, "Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_json"
