"""Bad input on every route gets its documented 4xx with a JSON error body; nothing is stored."""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Callable, Iterator

import pytest

from medsecrets.auth.tokens import TokenStore
from medsecrets.clock import ManualClock
from medsecrets.core import Core
from medsecrets.core.routes.base import RouteSpec
from medsecrets.store import SecretStore

from .conftest import SAMPLES, RawResponse, SyncClient, url_for

BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
ROUTES = sorted(SAMPLES)


def _spec(core: Core, name: str) -> RouteSpec:
    return next(s for (_, n), s in core.routes.items() if n == name)


def _check_error(response: object, status: int, code: str | None = None) -> dict[str, object]:
    status_code = response.status_code  # type: ignore[attr-defined]
    assert status_code == status, (status_code, response.text)  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/json"  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error", "request_id"}
    assert set(body["error"]) == {"code", "message"}
    assert body["request_id"] == response.headers["x-request-id"]  # type: ignore[attr-defined]
    if code is not None:
        assert body["error"]["code"] == code
    return body  # type: ignore[no-any-return]


def _wrong_value(tp: object) -> object:
    """A JSON value of the wrong type for ``tp``."""
    if tp is str or str in typing.get_args(tp):
        return 12345
    return "not-the-right-type"


@pytest.fixture
def snapshot(store: SecretStore) -> Iterator[Callable[[], dict[str, bytes]]]:
    def take() -> dict[str, bytes]:
        keys: list[str] = []
        after = ""
        while True:
            page = store.storage.list("", after=after, limit=1000)
            keys += page.keys
            if page.next_after is None:
                break
            after = page.next_after
        return {k: store.storage.get(k) or b"" for k in keys}

    yield take


@pytest.mark.parametrize("route", ROUTES)
def test_bad_input_on_every_route(
    route: str,
    core: Core,
    client: SyncClient,
    tokens: TokenStore,
    clock: ManualClock,
    auth: dict[str, str],
    snapshot: Callable[[], dict[str, bytes]],
    asgi: Callable[..., RawResponse],
) -> None:
    spec = _spec(core, route)
    param, body, query = SAMPLES[route]
    url = url_for(spec.url, param)
    expired = tokens.create(paths=["*"], capabilities=["read"], ttl=5, display_name="", parent=None)
    revoked = tokens.create(
        paths=["*"], capabilities=["read"], ttl=60, display_name="", parent=None
    )
    tokens.revoke(revoked[1].accessor)
    clock.advance(10)
    before = snapshot()
    m = spec.method
    json_headers = {**auth, "content-type": "application/json"}

    def send(
        *, headers: dict[str, str], content: bytes | None = None, target: str = url, q: str = query
    ) -> object:
        full = f"{target}?{q}" if q else target
        return client.request(m, full, headers=headers, content=content)

    if m in BODY_METHODS:
        _check_error(send(headers=json_headers, content=b'{"fields": '), 400, "invalid_json")
        _check_error(send(headers=json_headers, content=b"\xff\xfe{"), 400, "invalid_json")
        _check_error(send(headers=json_headers, content=b'{"a": NaN}'), 400, "invalid_json")
        _check_error(send(headers=json_headers, content=b"[" * 100_000), 400, "invalid_json")
        _check_error(
            send(headers={**auth, "content-type": "text/plain"}, content=b"{}"),
            415,
            "unsupported_media_type",
        )
        _check_error(send(headers=auth, content=b"{}"), 415, "unsupported_media_type")
        _check_error(send(headers=json_headers, content=b" " * (1_048_576 + 1)), 413, "too_large")
        _check_error(send(headers=json_headers, content=b"[]"), 400, "invalid_request")
        _check_error(send(headers=json_headers, content=b'"x"'), 400, "invalid_request")
        unknown = dict(body) if isinstance(body, dict) else {}
        unknown["zz_unknown_field"] = 1
        err = _check_error(
            send(headers=json_headers, content=json.dumps(unknown).encode()),
            400,
            "invalid_request",
        )
        assert "zz_unknown_field" in str(err["error"])
        if spec.body is not None and isinstance(body, dict):
            hints = typing.get_type_hints(spec.body)
            for f in dataclasses.fields(spec.body):
                wrong = {**body, f.name: _wrong_value(hints[f.name])}
                err = _check_error(
                    send(headers=json_headers, content=json.dumps(wrong).encode()),
                    400,
                )
                assert f.name in str(err["error"]), (f.name, err)
    if spec.query:
        err = _check_error(send(headers=auth, q="zz_bogus=1"), 400, "invalid_request")
        assert "zz_bogus" in str(err["error"])
        for qp in spec.query:
            if qp.type is not str:
                err = _check_error(send(headers=auth, q=f"{qp.name}=zz"), 400, "invalid_request")
                assert qp.name in str(err["error"])
    if "{" in spec.url:
        for bad in ("a/%2e%2e/b", "a/%2E%2E", "%2e%2e", "a%00b", "x" * 10_000, "a%2F%2e%2e"):
            bad_url = url_for(spec.url, bad)
            for headers in (auth, {}):
                _check_error(send(headers=headers, target=bad_url, content=None), 400)
        for raw in (b"a/../b", b"../../etc/passwd", b"a/.", b"a%2F..%2Fb"):
            status, _heads, payload = asgi(
                m,
                url_for(spec.url, "").encode() + raw,
                headers=[(b"authorization", auth["Authorization"].encode())],
            )
            assert status == 400, (raw, payload)
            assert b'"code":"invalid_request"' in payload
    if not spec.open:
        content = json.dumps(body).encode() if body is not None else None
        for headers in (
            {},
            {"Authorization": "Bearer garbage"},
            {"Authorization": "Bearer "},
            {"Authorization": "Basic abc"},
            {"X-Medsecrets-Token": "ms." + "x" * 43},
            {"Authorization": f"Bearer {expired[0].reveal()}"},
            {"X-Medsecrets-Token": revoked[0].reveal()},
            {"Authorization": "Bearer " + "x" * 5000},
        ):
            _check_error(
                send(headers={**headers, "content-type": "application/json"}, content=content),
                401,
                "unauthenticated",
            )
    assert snapshot() == before


def test_unknown_routes_and_methods(client: SyncClient, auth: dict[str, str]) -> None:
    for path in ("/", "/v1", "/v2/sys/health", "/v1/secrets", "/v1/secrets/", "/v1/nope"):
        _check_error(client.get(path, headers=auth), 404, "not_found")
    r = client.patch("/v1/sys/health")
    _check_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET"
    r = client.post("/v1/secrets/medessence/development/database", headers=auth)
    _check_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "DELETE, GET, PUT"
    assert client.request("HEAD", "/v1/sys/health").status_code == 405
    _check_error(client.post("/v1/openapi.json"), 405, "method_not_allowed")


def test_oversized_content_length_refused_before_reading(
    asgi: Callable[..., RawResponse], root: str
) -> None:
    status, _, payload = asgi(
        "PUT",
        b"/v1/secrets/medessence/development/database",
        headers=[
            (b"authorization", f"Bearer {root}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", b"999999999"),
        ],
        body=b"{}",
    )
    assert status == 413 and b"too_large" in payload


def test_value_over_64k_is_413(client: SyncClient, auth: dict[str, str]) -> None:
    r = client.put(
        "/v1/secrets/medessence/development/database",
        headers=auth,
        json={"fields": {"username": "a_user", "notes_x": "y" * 70_000}},
    )
    assert r.status_code in (413, 422), r.text
    r = client.put(
        "/v1/secrets/medessence/development/ai-providers",
        headers=auth,
        json={"fields": {"openai_api_key": "sk-" + "y" * 70_000}},
    )
    assert r.status_code in (413, 422), r.text


def test_too_many_query_fields_is_400(client: SyncClient, auth: dict[str, str]) -> None:
    q = "&".join(f"tag=a{i}:b" for i in range(100))
    _check_error(client.get(f"/v1/metadata?{q}", headers=auth), 400, "invalid_request")
