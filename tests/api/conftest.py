"""API fixtures: the ASGI app over a real SQLite-backed store, clients and sample calls."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import anyio
import anyio.from_thread
import httpx
import pytest

from medsecrets.api import create_app
from medsecrets.api.app import ASGIApp
from medsecrets.auth.tokens import TokenStore
from medsecrets.clock import ManualClock
from medsecrets.core import Core
from medsecrets.store import SecretStore

P = "medessence/development/database"

# route name -> (URL path parameter, sample body, sample query string)
SAMPLES: dict[str, tuple[str, object, str]] = {
    "sys.health": ("", None, ""),
    "sys.seal_status": ("", None, ""),
    "sys.init": ("", {"seal": {"type": "shamir", "shares": 1, "threshold": 1}}, ""),
    "sys.unseal": ("", {"reset": True}, ""),
    "sys.seal": ("", None, ""),
    "sys.rotate": ("", None, ""),
    "sys.rekey": ("", {"shares": [], "new_shares": 1, "new_threshold": 1}, ""),
    "sys.rekey.verify": ("", {"shares": []}, ""),
    "sys.rekey.cancel": ("", None, ""),
    "sys.keys.read": ("database", None, ""),
    "sys.keys.rotate": ("database", None, ""),
    "sys.rewrap": ("", {"limit": 10}, ""),
    "secrets.write": (P, {"fields": {"username": "app_user"}}, ""),
    "secrets.read": (P, None, ""),
    "secrets.delete": (P, None, "recovery_days=7"),
    "metadata.read": (P, None, ""),
    "metadata.update": (P, {"description": "d"}, ""),
    "metadata.list": ("", None, "prefix=medessence/development/"),
    "stages.update": (P, {"stage": "pending", "remove": True}, ""),
    "secrets.restore": (P, None, ""),
    "secrets.destroy": (P, {"version": 1}, ""),
    "secrets.validate": (P, None, ""),
    "catalog.read": ("", None, ""),
    "catalog.category": ("database", None, ""),
    "generate": ("", {"kind": "password"}, ""),
    "provision": ("", {"environment": "development"}, ""),
    "tokens.create": ("", {"paths": ["*"], "capabilities": ["read"], "ttl": 60}, ""),
    "tokens.self": ("", None, ""),
    "tokens.lookup": ("", {"accessor": "0" * 32}, ""),
    "tokens.revoke": ("", {"accessor": "0" * 32}, ""),
    "sys.audit.hash": ("", {"input": "x"}, ""),
    "sys.audit.devices": ("", None, ""),
    "sys.audit.search": ("", None, "operation=secrets.read"),
    "sys.audit.who_read": ("", None, f"path={P}"),
    "sys.audit.public_key": ("", None, ""),
    "sys.audit.verify": ("", None, ""),
    "sys.alerts": ("", None, "limit=5"),
}


def url_for(template: str, param: str) -> str:
    """``template`` with its ``{path}``/``{category}`` parameter filled in."""
    return template.replace("{path}", param).replace("{category}", param)


@pytest.fixture
def tokens(store: SecretStore, clock: ManualClock) -> TokenStore:
    return TokenStore(store.barrier, clock=clock)


@pytest.fixture
def core(store: SecretStore, tokens: TokenStore) -> Core:
    return Core(store, tokens)


@pytest.fixture
def app(core: Core) -> ASGIApp:
    return create_app(core)


class SyncClient:
    """A synchronous face on ``httpx.AsyncClient(transport=ASGITransport(app))``."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, client: httpx.AsyncClient) -> None:
        self._portal = portal
        self._client = client

    def request(self, method: str, url: str, **kw: object) -> httpx.Response:
        return self._portal.call(functools.partial(self._client.request, method, url, **kw))  # type: ignore[arg-type]

    def get(self, url: str, **kw: object) -> httpx.Response:
        return self.request("GET", url, **kw)

    def put(self, url: str, **kw: object) -> httpx.Response:
        return self.request("PUT", url, **kw)

    def post(self, url: str, **kw: object) -> httpx.Response:
        return self.request("POST", url, **kw)

    def patch(self, url: str, **kw: object) -> httpx.Response:
        return self.request("PATCH", url, **kw)

    def delete(self, url: str, **kw: object) -> httpx.Response:
        return self.request("DELETE", url, **kw)


@pytest.fixture
def client(app: ASGIApp) -> Iterator[SyncClient]:
    with anyio.from_thread.start_blocking_portal() as portal:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4242))
        async_client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        yield SyncClient(portal, async_client)
        portal.call(async_client.aclose)


@pytest.fixture
def root(tokens: TokenStore) -> str:
    return tokens.create_root()[0].reveal()


@pytest.fixture
def auth(root: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {root}"}


RawResponse = tuple[int, dict[str, str], bytes]


@pytest.fixture
def asgi(app: ASGIApp) -> Callable[..., RawResponse]:
    """Drive the ASGI app directly with an exact (un-normalised) path."""

    def run(
        method: str,
        raw_path: bytes,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
    ) -> RawResponse:
        from urllib.parse import unquote_to_bytes

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote_to_bytes(raw_path).decode("utf-8", "replace"),
            "raw_path": raw_path,
            "root_path": "",
            "query_string": b"",
            "headers": headers or [],
            "client": ("127.0.0.1", 1234),
            "server": ("testserver", 80),
        }
        sent: list[dict[str, object]] = []
        delivered = False

        async def receive() -> dict[str, object]:
            nonlocal delivered
            if delivered:
                await anyio.sleep_forever()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        anyio.run(app, scope, receive, send)  # type: ignore[arg-type]
        start = sent[0]
        heads = {
            k.decode(): v.decode()
            for k, v in start["headers"]  # type: ignore[attr-defined]
        }
        payload = b"".join(m.get("body", b"") for m in sent[1:])  # type: ignore[misc]
        return int(start["status"]), heads, payload  # type: ignore[call-overload]

    return run
