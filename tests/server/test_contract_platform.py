"""docs/api.md, "Catalog, generate, provision", "Tokens" and "System": shapes, limits
and edges against one real server process."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from medsecrets.testing.serverproc import ServerProcess


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    base = tmp_path_factory.mktemp("contract-platform")
    with ServerProcess(base / "data", log_dir=base / "logs") as server:
        headers = {"Authorization": f"Bearer {server.token}"}
        with httpx.Client(base_url=server.addr, headers=headers, timeout=30) as client:
            yield client


def _code(r: httpx.Response) -> tuple[int, str | None]:
    body = r.json()
    return r.status_code, body["error"]["code"] if "error" in body else None


def test_catalog_and_category_shapes(api: httpx.Client) -> None:
    catalog = api.get("/v1/catalog").json()
    assert set(catalog) == {"prefix", "development_environments", "categories"}
    category = api.get("/v1/catalog/database").json()
    assert set(category) == {"name", "description", "fields", "rotation", "kek"}
    assert set(category["fields"][0]) == {
        "name",
        "description",
        "source",
        "generator",
        "validators",
        "template",
    }
    assert set(category["rotation"]) == {"interval_days", "strategy", "keep_previous"}
    assert set(category["kek"]) == {"provider", "key_id"}
    assert _code(api.get("/v1/catalog/nope")) == (404, "not_found")


def test_generate(api: httpx.Client) -> None:
    r = api.post("/v1/generate", json={"kind": "password", "params": {"length": 32}})
    assert r.json()["kind"] == "password" and len(r.json()["value"]) == 32
    for body in (
        {"kind": "nope"},
        {"kind": "password", "params": {"length": 3}},
        {"kind": "password", "params": {"bogus": 1}},
        {},
    ):
        assert _code(api.post("/v1/generate", json=body)) == (400, "invalid_request")


def test_provision(api: httpx.Client) -> None:
    url = "/v1/provision"
    r = api.post(url, json={"environment": "contract", "categories": ["auth"]})
    report = r.json()
    assert set(report) == {"environment", "development", "items"}
    assert report["development"] is False
    (item,) = report["items"]
    assert set(item) == {"path", "category", "status", "version", "dummy_fields"}
    assert (item["status"], item["version"], item["dummy_fields"]) == ("created", 1, [])
    # provided values of a category not selected are not written (one file for all)
    elsewhere = {"database": {"host": "db.internal"}}
    body = {"environment": "contract", "categories": ["auth"], "provided": elsewhere}
    again = api.post(url, json=body).json()
    assert [(i["status"], i["version"]) for i in again["items"]] == [("exists", None)]
    for body in (
        {"environment": "contract", "categories": []},
        {"environment": "contract", "categories": ["auth", "auth"]},
        {"environment": "contract", "categories": ["nope"]},
        {"environment": "a/b"},
    ):
        assert _code(api.post(url, json=body)) == (400, "invalid_request"), body
    # a category that needs provided fields writes nothing without them
    r = api.post(url, json={"environment": "contract2", "categories": ["auth", "database"]})
    assert _code(r) == (422, "validation_failed")
    assert api.get("/v1/metadata", params={"prefix": "medessence/contract2/"}).json() == {
        "items": [],
        "next_after": None,
    }


def _create(api: httpx.Client, **body: Any) -> httpx.Response:
    return api.post("/v1/auth/token/create", json={"paths": ["medessence/"], **body})


def test_token_ttl_bounds_and_default(api: httpx.Client) -> None:
    for ttl in (0, 0.5, -1, 31 * 86400 + 1):
        r = _create(api, capabilities=["read"], ttl=ttl)
        assert _code(r) == (400, "invalid_request"), ttl
    for ttl in (1, 31 * 86400):
        assert _create(api, capabilities=["read"], ttl=ttl).status_code == 200
    info = _create(api, capabilities=["read"]).json()["info"]
    assert set(info) == {
        "accessor",
        "display_name",
        "paths",
        "capabilities",
        "created_at",
        "expires_at",
        "parent",
        "root",
        "emergency",
    }

    lifetime = dt.datetime.fromisoformat(info["expires_at"]) - dt.datetime.fromisoformat(
        info["created_at"]
    )
    assert lifetime == dt.timedelta(hours=24)


def test_token_lookup_and_revoke_edges(api: httpx.Client) -> None:
    made = _create(api, capabilities=["read"], ttl=600).json()
    accessor = made["info"]["accessor"]
    lookup, revoke = "/v1/auth/token/lookup", "/v1/auth/token/revoke"
    assert api.post(lookup, json={"accessor": accessor}).json()["accessor"] == accessor
    assert _code(api.post(lookup, json={})) == (400, "invalid_request")
    both = {"accessor": accessor, "token": made["token"]}
    assert _code(api.post(lookup, json=both)) == (400, "invalid_request")
    assert api.post(revoke, json={"accessor": accessor}).json() == {"revoked": True}
    # a repeated revoke: the token is gone, so 404 as for an unknown one
    r = api.post(revoke, json={"accessor": accessor})
    assert _code(r) == (404, "not_found")
    assert r.json()["error"]["message"] == "no token with this accessor"
    r = api.post(lookup, json={"token": made["token"]})
    assert (_code(r), r.json()["error"]["message"]) == ((404, "not_found"), "no such token")


def test_rewrap_pages(api: httpx.Client) -> None:
    for name in ("r1", "r2", "r3"):
        api.put(
            f"/v1/secrets/medessence/rewrap/external-services/{name}",
            json={"fields": {"monitoring_tokens": "v"}},
        )
    url = "/v1/sys/rewrap"
    for limit in (0, 1001):
        assert _code(api.post(url, json={"limit": limit})) == (400, "invalid_request")
    first = api.post(url, json={"limit": 1}).json()
    assert set(first) == {"secrets", "rewrapped", "already_current", "total", "next_after"}
    assert first["secrets"] == 1 and first["next_after"] is not None
    everything = api.post(url, json={}).json()
    assert everything["next_after"] is None
    assert everything["secrets"] == everything["total"] == first["total"]
    assert api.post(url, json={"after": "zzz"}).json() == {
        "secrets": 0,
        "rewrapped": 0,
        "already_current": 0,
        "total": 0,
        "next_after": None,
    }


def test_key_versions_shape(api: httpx.Client) -> None:
    rotated = api.post("/v1/sys/keys/auth/rotate").json()
    assert set(rotated) == {"category", "version"}
    versions = api.get("/v1/sys/keys/auth").json()
    assert versions["category"] == "auth"
    assert set(versions["versions"][0]) == {"category", "version", "created_at", "key_id"}
    assert versions["versions"][-1]["version"] == rotated["version"]
    assert _code(api.get("/v1/sys/keys/nope")) == (404, "not_found")


def test_health_and_seal_status_shapes(api: httpx.Client) -> None:
    health = httpx.get(api.base_url.join("/v1/sys/health")).json()
    assert set(health) == {"initialized", "sealed", "version", "server_time"}
    status = httpx.get(api.base_url.join("/v1/sys/seal-status")).json()
    assert set(status) == {
        "initialized",
        "sealed",
        "seal_type",
        "shares",
        "threshold",
        "progress",
        "term",
        "rekey_pending",
    }
    assert _code(api.post("/v1/sys/init", json={"seal": {"type": "shamir"}})) == (
        409,
        "already_initialized",
    )
    info = api.post("/v1/sys/rotate").json()
    assert set(info) == {"term", "terms", "installed_at", "encryptions", "rotation_threshold"}
