"""Core pipeline: seal check first, authentication, authorization matrix, default deny."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from medsecrets.auth.tokens import CAPABILITIES, TokenStore
from medsecrets.clock import ManualClock
from medsecrets.core import Core, Request
from medsecrets.errors import (
    AlreadyInitializedError,
    AuthenticationError,
    InvalidRequest,
    MedsecretsError,
    NotFoundError,
    NotInitializedError,
    PermissionDenied,
    SealedError,
)
from medsecrets.store import SecretStore

from .conftest import SAMPLES, P

OPEN_WHILE_SEALED = {"sys.health", "sys.seal_status", "sys.unseal"}
OPEN = {*OPEN_WHILE_SEALED, "sys.init"}


def test_samples_cover_every_route(core: Core) -> None:
    assert {name for _, name in core.routes} == set(SAMPLES)
    assert {name for (_, name), spec in core.routes.items() if spec.open} == OPEN


def _token(tokens: TokenStore, caps: list[str], paths: list[str] | None = None) -> tuple[str, str]:
    token, info = tokens.create(
        paths=paths or ["*"], capabilities=caps, ttl=600, display_name="t", parent=None
    )
    return token.reveal(), info.accessor


@pytest.mark.parametrize("route", sorted(SAMPLES))
def test_each_capability_allows_its_routes_and_nothing_else(
    route: str,
    core: Core,
    tokens: TokenStore,
    root: str,
    call: Callable[..., object],
    sample: Callable[..., Request],
) -> None:
    call("secrets.write", root, path=P, body={"fields": {"username": "a_user"}})
    call("secrets.write", root, path=P, body={"fields": {"username": "b_user"}})
    spec = next(s for (_, name), s in core.routes.items() if name == route)
    # Denied capabilities first: the allowed call may seal or delete things.
    for cap in sorted(CAPABILITIES, key=lambda c: c == spec.capability):
        token, accessor = _token(tokens, [cap])
        request = sample(core, route, token, accessor, cap)
        allowed = spec.open or spec.capability is None or spec.capability == cap
        if allowed:
            try:
                core.handle(request)
            except PermissionDenied:  # pragma: no cover - the failure this test looks for
                pytest.fail(f"{cap!r} should be allowed on {route}")
            except MedsecretsError:
                pass  # e.g. a conflict: allowed, just not applicable here
        else:
            with pytest.raises(PermissionDenied):
                core.handle(request)


@pytest.mark.parametrize("route", sorted(set(SAMPLES) - OPEN))
def test_missing_garbage_expired_and_revoked_tokens_are_401(
    route: str,
    core: Core,
    tokens: TokenStore,
    clock: ManualClock,
    sample: Callable[..., Request],
) -> None:
    expired, _ = _token(tokens, list(CAPABILITIES))
    revoked, revoked_accessor = _token(tokens, list(CAPABILITIES))
    tokens.revoke(revoked_accessor)
    for bad in [None, "", "garbage", "ms." + "x" * 43, revoked]:
        with pytest.raises(AuthenticationError):
            core.handle(sample(core, route, bad))
    clock.advance(601)
    with pytest.raises(AuthenticationError):
        core.handle(sample(core, route, expired))


@pytest.mark.parametrize("route", sorted(SAMPLES))
def test_sealed_refuses_every_route_but_the_open_ones(
    route: str, core: Core, store: SecretStore, root: str, sample: Callable[..., Request]
) -> None:
    store.seal()
    for token in (root, None):
        request = sample(core, route, token)
        if route in OPEN_WHILE_SEALED:
            core.handle(request)
        elif route == "sys.init":  # initialised already, sealed or not: 409 as api.md says
            with pytest.raises(AlreadyInitializedError):
                core.handle(request)
        else:
            with pytest.raises(SealedError):
                core.handle(request)
    assert store.barrier.sealed


@pytest.mark.parametrize("route", sorted(SAMPLES))
def test_uninitialised_refuses_every_route_but_open_ones_and_init(
    route: str, fresh_store: SecretStore, clock: ManualClock, sample: Callable[..., Request]
) -> None:
    core = Core(fresh_store, TokenStore(fresh_store.barrier, clock=clock))
    request = sample(core, route, "ms." + "x" * 43)
    if route in OPEN_WHILE_SEALED or route == "sys.init":
        core.handle(request)
    else:
        with pytest.raises(NotInitializedError):
            core.handle(request)


def test_init_returns_shares_and_a_working_root_token(
    fresh_store: SecretStore, clock: ManualClock
) -> None:
    core = Core(fresh_store, TokenStore(fresh_store.barrier, clock=clock))
    body = core.handle(
        Request(
            method="POST",
            route="sys.init",
            body={"seal": {"type": "shamir", "shares": 3, "threshold": 2}},
        )
    ).body
    assert isinstance(body, dict)
    assert len(body["shares"]) == 3 and body["threshold"] == 2
    token = body["root_token"]
    info = core.handle(Request(method="GET", route="tokens.self", token=token)).body
    assert isinstance(info, dict) and info["root"] is True and info["expires_at"] is None
    # Sealed again, shares unseal it, and the root token still works.
    core.handle(Request(method="POST", route="sys.seal", token=token))
    with pytest.raises(SealedError):
        core.handle(Request(method="GET", route="tokens.self", token=token))
    for share in body["shares"][:2]:
        core.handle(Request(method="POST", route="sys.unseal", body={"share": share}))
    core.handle(Request(method="GET", route="tokens.self", token=token))


def test_unknown_route_is_not_found(core: Core, root: str) -> None:
    with pytest.raises(NotFoundError):
        core.handle(Request(method="GET", route="nope", token=root))
    with pytest.raises(NotFoundError):
        core.handle(Request(method="DELETE", route="sys.health", token=root))


def test_paths_restrict_where_a_capability_applies(
    core: Core, tokens: TokenStore, root: str, call: Callable[..., object]
) -> None:
    call("secrets.write", root, path=P, body={"fields": {"username": "a_user"}})
    staging = "medessence/staging/database"
    call("secrets.write", root, path=staging, body={"fields": {"username": "a_user"}})
    dev, _ = _token(tokens, ["read", "list", "write"], ["medessence/development/"])
    call("secrets.read", dev, path=P)
    with pytest.raises(PermissionDenied):
        call("secrets.read", dev, path=staging)
    with pytest.raises(InvalidRequest, match="no leading or trailing '/'"):
        call("secrets.read", dev, path="/" + P)
    # a token scoped to a prefix ending in '/' does not reach the secret that prefix names
    below, _ = _token(tokens, ["read", "write", "delete", "destroy"], [P + "/"])
    for shape in (P + "/", P + "//", "/" + P, P.replace("/", "//", 1)):
        with pytest.raises(InvalidRequest):
            call("secrets.read", below, path=shape)
        with pytest.raises(InvalidRequest):
            call("secrets.write", below, path=shape, body={"fields": {"username": "x"}})
    with pytest.raises(PermissionDenied):
        call("secrets.read", below, path=P)
    page = call("metadata.list", dev, query={"prefix": ("medessence/development/",)})
    assert isinstance(page, dict) and [i["path"] for i in page["items"]] == [P]
    for prefix in ({}, {"prefix": ("medessence/",)}, {"prefix": ("medessence/development",)}):
        with pytest.raises(PermissionDenied):
            call("metadata.list", dev, query=prefix)
    with pytest.raises(PermissionDenied):
        call("provision", dev, body={"environment": "staging"})
    call("provision", dev, body={"environment": "development"})
    # sudo needs the sys/ paths
    sudo_secrets, _ = _token(tokens, ["sudo"], ["medessence/"])
    with pytest.raises(PermissionDenied):
        call("sys.rotate", sudo_secrets)
    sudo_sys, _ = _token(tokens, ["sudo"], ["sys/"])
    call("sys.rotate", sudo_sys)


def test_default_deny_for_capability_free_tokens_on_capability_routes(
    core: Core, tokens: TokenStore
) -> None:
    only_token, _ = _token(tokens, ["token"])
    for (_, name), spec in core.routes.items():
        if spec.capability not in (None, "token"):
            with pytest.raises(PermissionDenied):
                core.handle(
                    Request(
                        method=spec.method,
                        route=name,
                        path=SAMPLES[name][0],
                        token=only_token,
                        body=SAMPLES[name][1],
                        query=SAMPLES[name][2],
                    )
                )


def test_child_token_cannot_escalate(
    core: Core, tokens: TokenStore, call: Callable[..., object]
) -> None:
    parent, _ = _token(tokens, ["read", "token"], ["medessence/development/"])
    for body in (
        {"paths": ["*"], "capabilities": ["read"], "ttl": 60},
        {"paths": ["medessence/"], "capabilities": ["read"], "ttl": 60},
        {"paths": ["medessence/development/"], "capabilities": ["write"], "ttl": 60},
        {"paths": ["medessence/development/"], "capabilities": ["sudo"], "ttl": 60},
    ):
        with pytest.raises(PermissionDenied):
            call("tokens.create", parent, body=body)
    created = call(
        "tokens.create",
        parent,
        body={"paths": ["medessence/development/db"], "capabilities": ["read"], "ttl": 60},
    )
    assert isinstance(created, dict)
    child = created["token"]
    with pytest.raises(PermissionDenied):
        call("tokens.create", child, body={"paths": ["*"], "capabilities": ["read"], "ttl": 1})
    info = call("tokens.self", child)
    assert isinstance(info, dict) and info["parent"] == created["info"]["parent"]


def test_an_erase_without_recovery_needs_destroy(
    core: Core, tokens: TokenStore, root: str, call: Callable[..., object]
) -> None:
    """``DELETE ?force=true`` erases every version at once: ``delete`` alone may only
    schedule a deletion that can be undone."""
    call("secrets.write", root, path=P, body={"fields": {"username": "a_user"}})
    deleter, _ = _token(tokens, ["delete"], [P])
    with pytest.raises(PermissionDenied, match="'destroy'"):
        call("secrets.delete", deleter, path=P, query={"force": ("true",)})
    assert call("metadata.read", root, path=P)  # still there
    call("secrets.delete", deleter, path=P)  # a recoverable deletion is its to make
    call("secrets.restore", root, path=P)
    eraser, _ = _token(tokens, ["delete", "destroy"], [P])
    call("secrets.delete", eraser, path=P, query={"force": ("true",)})
    with pytest.raises(NotFoundError):
        call("metadata.read", root, path=P)
