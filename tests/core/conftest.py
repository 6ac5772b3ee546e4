"""Core fixtures: a Core over the real SQLite-backed store, tokens, and per-route sample calls."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from medsecrets.auth.tokens import TokenStore
from medsecrets.clock import ManualClock
from medsecrets.core import Core, Request
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore

P = "medessence/development/database"

SAMPLES: dict[str, tuple[str, object, dict[str, tuple[str, ...]]]] = {
    "sys.health": ("", None, {}),
    "sys.seal_status": ("", None, {}),
    "sys.init": ("", {"seal": {"type": "shamir", "shares": 1, "threshold": 1}}, {}),
    "sys.unseal": ("", {"reset": True}, {}),
    "sys.seal": ("", None, {}),
    "sys.rotate": ("", None, {}),
    "sys.rekey": ("", {"shares": [], "new_shares": 1, "new_threshold": 1}, {}),
    "sys.rekey.verify": ("", {"shares": []}, {}),
    "sys.rekey.cancel": ("", None, {}),
    "sys.keys.read": ("database", None, {}),
    "sys.keys.rotate": ("database", None, {}),
    "sys.rewrap": ("", {"limit": 10}, {}),
    "secrets.write": (P, {"fields": {"username": "app_user"}}, {}),
    "secrets.read": (P, None, {}),
    "secrets.delete": (P, None, {"recovery_days": ("7",)}),
    "metadata.read": (P, None, {}),
    "metadata.update": (P, {"description": "d"}, {}),
    "metadata.list": ("", None, {"prefix": ("medessence/development/",)}),
    "stages.update": (P, {"stage": "pending", "remove": True}, {}),
    "secrets.restore": (P, None, {}),
    "secrets.destroy": (P, {"version": 1}, {}),
    "secrets.validate": (P, None, {}),
    "catalog.read": ("", None, {}),
    "catalog.category": ("database", None, {}),
    "generate": ("", {"kind": "password"}, {}),
    "provision": ("", {"environment": "development"}, {}),
    "tokens.create": ("", {"paths": ["*"], "capabilities": ["read"], "ttl": 60}, {}),
    "tokens.self": ("", None, {}),
    "tokens.lookup": ("", {"accessor": "self"}, {}),
    "tokens.revoke": ("", {"accessor": "self"}, {}),
    "sys.audit.hash": ("", {"input": "x"}, {}),
    "sys.audit.devices": ("", None, {}),
    "sys.audit.search": ("", None, {"operation": ("secrets.read",)}),
    "sys.audit.who_read": ("", None, {"path": (P,)}),
    "sys.audit.public_key": ("", None, {}),
    "sys.audit.verify": ("", None, {}),
    "sys.alerts": ("", None, {"limit": ("5",)}),
}


@pytest.fixture
def tokens(store: SecretStore, clock: ManualClock) -> TokenStore:
    return TokenStore(store.barrier, clock=clock)


@pytest.fixture
def core(store: SecretStore, tokens: TokenStore) -> Core:
    return Core(store, tokens)


@pytest.fixture
def root(tokens: TokenStore) -> str:
    return tokens.create_root()[0].reveal()


@pytest.fixture
def fresh_store(tmp_path: Path, clock: ManualClock) -> SecretStore:
    """An uninitialised store."""
    s = SecretStore(SqliteStorage(tmp_path / "fresh.db"), clock=clock)
    yield s  # type: ignore[misc]
    s.close()


@pytest.fixture
def call(core: Core) -> Callable[..., object]:
    """``call(route, token, path=..., body=..., query=...)`` → response body (raises errors)."""

    def run(
        route: str,
        token: str | None,
        *,
        path: str = "",
        body: object = None,
        query: dict[str, tuple[str, ...]] | None = None,
    ) -> object:
        method = next(m for (m, name) in core.routes if name == route)
        return core.handle(
            Request(
                method=method, route=route, path=path, token=token, body=body, query=query or {}
            )
        ).body

    return run


@pytest.fixture
def sample() -> Callable[..., Request]:
    """``sample(core, route, token, accessor="", capability=None)``: a well-formed request."""

    def build(
        core: Core, route: str, token: str | None, accessor: str = "", capability: str = "read"
    ) -> Request:
        path, body, query = SAMPLES[route]
        if isinstance(body, dict) and body.get("accessor") == "self":
            body = {"accessor": accessor}
        if route == "tokens.create":
            body = {"paths": ["*"], "capabilities": [capability], "ttl": 60}
        method = next(m for (m, name) in core.routes if name == route)
        return Request(method=method, route=route, path=path, token=token, body=body, query=query)

    return build
