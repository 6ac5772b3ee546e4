"""Route behaviour through the core: strict bodies and queries, and each endpoint group."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from medsecrets.auth.tokens import TokenStore
from medsecrets.core import Core, Request
from medsecrets.core.routes.base import QueryParam, parse_query
from medsecrets.errors import (
    CasConflictError,
    ConflictError,
    InvalidRequest,
    NotFoundError,
    PermissionDenied,
    ScheduledForDeletion,
    ValidationError,
)
from medsecrets.seal.latch import LocalLatch
from medsecrets.store import SecretStore

from .conftest import P

Call = Callable[..., object]


def _d(value: object) -> dict[str, object]:
    assert isinstance(value, dict)
    return value


def test_bodies_are_strict(call: Call, root: str) -> None:
    bad_bodies: list[tuple[str, object, str]] = [
        ("secrets.write", {"fields": {"username": "a"}, "extra": 1}, "'extra'"),
        ("secrets.write", {"fields": {"username": 1}}, "body.fields"),
        ("secrets.write", {"fields": "x"}, "body.fields"),
        ("secrets.write", {"fields": {"username": "a"}, "cas": "1"}, "body.cas"),
        ("secrets.write", {"fields": {"username": "a"}, "cas": True}, "body.cas"),
        ("secrets.write", {"fields": {"username": "a"}, "stage": "previous"}, "body.stage"),
        ("secrets.write", {"fields": {"username": "a"}, "tags": {"a": 1}}, "body.tags"),
        ("secrets.write", {}, "missing field 'fields'"),
        ("secrets.write", [], "expected a JSON object"),
        ("secrets.write", None, "expected a JSON object"),
        ("metadata.update", {"rotation_days": 1.5}, "body.rotation_days"),
        ("stages.update", {"stage": "current"}, "version"),
        ("stages.update", {"stage": "bogus", "version": 1}, "body.stage"),
        ("secrets.destroy", {"version": "1"}, "body.version"),
    ]
    for route, body, needle in bad_bodies:
        with pytest.raises(InvalidRequest) as caught:
            call(route, root, path=P, body=body)
        assert needle in caught.value.message, (route, body, caught.value.message)
    for route, body, needle in [
        ("sys.init", {"seal": {"type": "shamir", "shares": 1, "bogus": 1}}, "body.seal"),
        ("sys.init", {"seal": {"type": "nope"}}, "body.seal.type"),
        ("sys.init", {"seal": "shamir"}, "body.seal"),
        ("sys.init", {"seal": {"type": "keyfile"}}, "missing field 'path'"),
        ("sys.unseal", {"share": 5}, "body.share"),
        ("sys.rewrap", {"limit": "10"}, "body.limit"),
        ("sys.rewrap", {"limit": 0}, "body.limit"),
        ("sys.seal", {"x": 1}, "'x'"),
        ("sys.seal", [1], "takes no body"),
        ("generate", {"kind": "password", "params": {"length": [1]}}, "body.params"),
        ("provision", {"environment": "development", "provided": {"database": "x"}}, "body"),
        ("tokens.create", {"paths": "*", "capabilities": ["read"]}, "body.paths"),
        ("tokens.create", {"paths": ["*"], "capabilities": ["read"], "ttl": "1"}, "body.ttl"),
        ("tokens.lookup", {}, "exactly one"),
        ("tokens.lookup", {"accessor": "a", "token": "b"}, "exactly one"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            call(route, root, body=body)
        assert needle in caught.value.message, (route, body, caught.value.message)


def test_queries_are_strict(call: Call, root: str) -> None:
    call("secrets.write", root, path=P, body={"fields": {"username": "a_user"}})
    for query, needle in [
        ({"bogus": ("1",)}, "'bogus'"),
        ({"version": ("x",)}, "'version'"),
        ({"version": ("1", "2")}, "more than once"),
        ({"stage": ("nope",)}, "'stage'"),
        ({"stage": ("current",), "version": ("1",)}, "at most one"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            call("secrets.read", root, path=P, query=query)
        assert needle in caught.value.message
    for query in [
        {"recovery_days": ("3",)},
        {"recovery_days": ("31",)},
        {"force": ("yes",)},
        {"force": ("true",), "recovery_days": ("7",)},
    ]:
        with pytest.raises(InvalidRequest):
            call("secrets.delete", root, path=P, query=query)
    for query in [{"limit": ("0",)}, {"tag": ("nocolon",)}, {"include_deleted": ("1",)}]:
        with pytest.raises(InvalidRequest):
            call("metadata.list", root, query=query)


@pytest.mark.parametrize(
    ("minimum", "maximum", "value", "message"),
    [
        (1, None, "0", "query parameter 'n' must be 1 or more"),
        (None, 5, "6", "query parameter 'n' must be 5 or less"),
        (1, 5, "9", "query parameter 'n' must be from 1 to 5"),
    ],
)
def test_integer_query_ranges_name_only_the_bounds_there_are(
    minimum: int | None, maximum: int | None, value: str, message: str
) -> None:
    param = QueryParam("n", int, minimum=minimum, maximum=maximum)
    with pytest.raises(InvalidRequest) as caught:
        parse_query((param,), {"n": (value,)})
    assert caught.value.message == message
    assert "None" not in caught.value.message


def test_who_read_checks_its_path_as_the_secret_routes_do(
    store: SecretStore, tokens: TokenStore, root: str
) -> None:
    from medsecrets.core.routes.audit import who_read
    from medsecrets.core.routes.base import Call as RouteCall
    from medsecrets.core.routes.base import Context

    class Admin:
        asked: list[str] = []

        def who_read(self, path: str, since: object) -> object:
            self.asked.append(path)
            return path

    admin = Admin()
    ctx = Context(store=store, tokens=tokens, clock=store.clock, version="t", audit=admin)  # type: ignore[arg-type]

    def run(path: str) -> object:
        request = Request(method="GET", route="sys.audit.who_read", token=root)
        return who_read(ctx, RouteCall(request, "", None, {"path": path}, None))

    for bad in ("bad path/é", "medessence/../x", "medessence/development", "other/dev/auth"):
        with pytest.raises(InvalidRequest):
            run(bad)
    assert admin.asked == []
    assert run("/" + P + "/") == P  # the canonical path is what the trail is searched for
    # a category no longer in the catalog: its past reads are still asked for
    assert run("medessence/development/retired-category/x") == (
        "medessence/development/retired-category/x"
    )


def test_secret_lifecycle(call: Call, root: str) -> None:
    v1 = _d(call("secrets.write", root, path=P, body={"fields": {"username": "one"}, "cas": 0}))
    assert _d(v1["version"])["number"] == 1
    with pytest.raises(CasConflictError):
        call("secrets.write", root, path=P, body={"fields": {"username": "x"}, "cas": 0})
    call(
        "secrets.write",
        root,
        path=P,
        body={"fields": {"username": "two"}, "stage": "pending", "tags": {"team": "ml"}},
    )
    assert _d(_d(call("secrets.read", root, path=P))["fields"]) == {"username": "one"}
    pending = _d(call("secrets.read", root, path=P, query={"stage": ("pending",)}))
    assert _d(pending["fields"]) == {"username": "two"}
    by_id = _d(call("secrets.read", root, path=P, query={"version_id": (pending["id"],)}))
    assert by_id["number"] == 2
    meta = _d(call("stages.update", root, path=P, body={"stage": "current", "version": 2}))
    assert meta["current_version"] == 2
    meta = _d(call("metadata.update", root, path=P, body={"owner": "ml", "rotation_days": 7}))
    assert meta["owner"] == "ml" and _d(meta["rotation"])["overridden"] is True
    listing = _d(call("metadata.list", root, query={"tag": ("team:ml",)}))
    assert [_d(i)["path"] for i in listing["items"]] == [P]  # type: ignore[union-attr]
    with pytest.raises(ConflictError):
        call("secrets.destroy", root, path=P, body={"version": 2})
    meta = _d(call("secrets.destroy", root, path=P, body={"version": 1}))
    assert [v["destroyed"] for v in meta["versions"]] == [True, False]  # type: ignore[union-attr]
    meta = _d(call("secrets.delete", root, path=P, query={"recovery_days": ("7",)}))
    assert meta["purge_at"] is not None
    with pytest.raises(ScheduledForDeletion):
        call("secrets.read", root, path=P)
    call("metadata.read", root, path=P)
    call("secrets.restore", root, path=P)
    call("secrets.read", root, path=P)
    call("secrets.delete", root, path=P, query={"force": ("true",)})
    with pytest.raises(NotFoundError):
        call("metadata.read", root, path=P)


def test_validate_collects_problems_without_values(
    call: Call, root: str, store: SecretStore
) -> None:
    call("provision", root, body={"environment": "development"})
    report = _d(call("secrets.validate", root, path=P))
    assert report == {"path": P, "valid": True, "problems": []}
    # A value that was valid when written but is incomplete for the catalog.
    call("secrets.write", root, path="medessence/dev/database", body={"fields": {"port": "5432"}})
    report = _d(call("secrets.validate", root, path="medessence/dev/database"))
    assert report["valid"] is False
    problems = report["problems"]
    assert isinstance(problems, list)
    fields = {p["field"] for p in problems}
    assert {"username", "password", "host"} <= fields
    assert all(p["rule"] == "required: missing" for p in problems)


def test_validation_failure_is_422_class(call: Call, root: str) -> None:
    with pytest.raises(ValidationError):
        call("secrets.write", root, path=P, body={"fields": {"port": "not-a-port"}})


def test_catalog_generate_provision(call: Call, root: str) -> None:
    catalog = _d(call("catalog.read", root))
    assert catalog["prefix"] == "medessence"
    names = [c["name"] for c in catalog["categories"]]  # type: ignore[union-attr]
    assert "database" in names
    category = _d(call("catalog.category", root, path="database"))
    assert "honeytoken" not in category
    assert all("dummy" not in f for f in category["fields"])  # type: ignore[union-attr]
    with pytest.raises(NotFoundError):
        call("catalog.category", root, path="nope")
    generated = _d(call("generate", root, body={"kind": "password", "params": {"length": 40}}))
    assert generated["kind"] == "password" and len(str(generated["value"])) == 40
    with pytest.raises(InvalidRequest):
        call("generate", root, body={"kind": "nope"})
    with pytest.raises(InvalidRequest):
        call("generate", root, body={"kind": "password", "params": {"length": 2}})
    report = _d(call("provision", root, body={"environment": "development"}))
    assert report["development"] is True
    assert {i["status"] for i in report["items"]} == {"created"}  # type: ignore[union-attr]
    again = _d(call("provision", root, body={"environment": "development"}))
    assert {i["status"] for i in again["items"]} == {"exists"}  # type: ignore[union-attr]
    with pytest.raises(InvalidRequest):
        call("provision", root, body={"environment": "../x"})
    with pytest.raises(ValidationError):
        call("provision", root, body={"environment": "production"})


def test_rewrap_is_paged_and_resumable(call: Call, root: str, store: SecretStore) -> None:
    call("provision", root, body={"environment": "development"})
    call("provision", root, body={"environment": "dev"})
    total = len(store.secrets.list(limit=1000).items)
    assert total >= 6
    call("sys.keys.rotate", root, path="database")
    keys = _d(call("sys.keys.read", root, path="database"))
    assert [v["version"] for v in keys["versions"]] == [1, 2]  # type: ignore[union-attr]
    seen = 0
    rewrapped = 0
    after = ""
    pages = 0
    while True:
        page = _d(call("sys.rewrap", root, body={"after": after, "limit": 4}))
        pages += 1
        assert page["secrets"] <= 4  # type: ignore[operator]
        seen += page["secrets"]  # type: ignore[operator]
        rewrapped += page["rewrapped"]  # type: ignore[operator]
        assert page["rewrapped"] + page["already_current"] == page["secrets"]  # type: ignore[operator]
        if page["next_after"] is None:
            break
        after = str(page["next_after"])
    assert seen == total and rewrapped == 2 and pages == -(-total // 4)
    again = _d(call("sys.rewrap", root, body={}))
    assert again["rewrapped"] == 0 and again["secrets"] == total and again["next_after"] is None
    for env in ("development", "dev"):
        meta = store.secrets.describe(f"medessence/{env}/database")
        assert all(v.kek_version == 2 for v in meta.versions)


def test_rotate_rekey_seal_unseal(fresh_store: SecretStore) -> None:
    core = Core(fresh_store, TokenStore(fresh_store.barrier))

    def run(route: str, token: str | None = None, body: object = None) -> dict[str, object]:
        method = next(m for (m, name) in core.routes if name == route)
        return _d(core.handle(Request(method=method, route=route, token=token, body=body)).body)

    init = run("sys.init", body={"seal": {"type": "shamir", "shares": 3, "threshold": 2}})
    root = str(init["root_token"])
    shares = init["shares"]
    assert isinstance(shares, list)
    assert run("sys.rotate", root)["term"] == 2
    new = run("sys.rekey", root, {"shares": shares[:2], "new_shares": 2, "new_threshold": 2})
    new_shares = new["shares"]
    assert isinstance(new_shares, list) and len(new_shares) == 2
    assert run("sys.rekey.verify", root, {"shares": new_shares})["threshold"] == 2
    assert run("sys.seal", root)["sealed"] is True
    status = run("sys.unseal", body={"share": new_shares[0]})
    assert status["progress"] == 1
    assert run("sys.unseal", body={"reset": True})["progress"] == 0
    run("sys.unseal", body={"share": new_shares[0]})
    assert run("sys.unseal", body={"share": new_shares[1]})["sealed"] is False
    health = run("sys.health")
    assert health["initialized"] is True and health["sealed"] is False
    assert run("tokens.self", root)["root"] is True


def test_token_lookup_and_revoke_rules(call: Call, tokens: TokenStore, root: str) -> None:
    parent = _d(
        call(
            "tokens.create",
            root,
            body={"paths": ["*"], "capabilities": ["read", "token"], "ttl": 600},
        )
    )
    parent_token = str(parent["token"])
    child = _d(call("tokens.create", parent_token, body={"paths": ["*"], "capabilities": ["read"]}))
    child_token = str(child["token"])
    child_accessor = _d(child["info"])["accessor"]
    stranger = _d(
        call("tokens.create", root, body={"paths": ["*"], "capabilities": ["read"], "ttl": 60})
    )
    stranger_accessor = _d(stranger["info"])["accessor"]
    # self: any token
    assert _d(call("tokens.lookup", child_token, body={"accessor": child_accessor}))["parent"]
    assert _d(call("tokens.lookup", child_token, body={"token": child_token}))
    # others: needs the token capability, and the target must descend from the caller
    with pytest.raises(PermissionDenied):
        call("tokens.lookup", child_token, body={"accessor": _d(parent["info"])["accessor"]})
    # ... refused alike whether the accessor exists or not (no existence oracle)
    for route in ("tokens.lookup", "tokens.revoke"):
        for accessor in (stranger_accessor, "0" * 32):
            with pytest.raises(PermissionDenied):
                call(route, child_token, body={"accessor": accessor})
    call("tokens.lookup", parent_token, body={"accessor": child_accessor})
    # a token outside the caller's tree answers as an unknown one, word for word
    answers = []
    for accessor in (stranger_accessor, "0" * 32):
        with pytest.raises(NotFoundError) as info:
            call("tokens.lookup", parent_token, body={"accessor": accessor})
        answers.append(str(info.value))
    assert answers[0] == answers[1]
    call("tokens.lookup", root, body={"accessor": stranger_accessor})
    # revoke the parent by token: the child goes with it
    assert call("tokens.revoke", root, body={"token": parent_token}) == {"revoked": True}
    with pytest.raises(NotFoundError):
        call("tokens.lookup", root, body={"accessor": child_accessor})
    # a token may revoke itself
    stranger_token = str(stranger["token"])
    call("tokens.revoke", stranger_token, body={"token": stranger_token})
    with pytest.raises(NotFoundError):
        call("tokens.revoke", root, body={"accessor": stranger_accessor})


def test_fast_read_path_matches_the_generic_codec(
    call: Call, root: str, store: SecretStore
) -> None:
    from medsecrets.wire import to_wire

    call("secrets.write", root, path=P, body={"fields": {"username": "a_user"}})
    assert call("secrets.read", root, path=P) == to_wire(store.secrets.get(P))
    assert call("secrets.read", root, path=P, query={"version": ("1",)}) == to_wire(
        store.secrets.get(P, version=1)
    )


def test_an_operator_seal_holds_against_an_unauthenticated_auto_unseal(
    call: Call, root: str, store: SecretStore
) -> None:
    """Anyone who reaches the port may ask for an auto-unseal (no token can be checked
    while sealed); after an operator's seal that is refused until the server restarts."""
    assert _d(call("sys.unseal", None, body={}))["sealed"] is False  # unsealed: a no-op
    assert _d(call("sys.seal", root))["sealed"] is True
    with pytest.raises(PermissionDenied, match="sealed by an operator"):
        call("sys.unseal", None, body={})
    assert store.barrier.sealed
    assert store.latch.is_set()
    # a restart starts with a latch of its own, and its start-up path auto-unseals
    store.latch = LocalLatch()
    assert store.auto_unseal().sealed is False
