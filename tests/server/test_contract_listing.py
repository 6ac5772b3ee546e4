"""docs/api.md, ``GET /v1/metadata``: filters, ordering, pagination and its edges, and
what a malformed prefix answers, against one real server process."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from medsecrets.testing.serverproc import ServerProcess

ENV = "medessence/listing/"
NAMES = [f"{ENV}external-services/n{i}" for i in range(5)]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    base = tmp_path_factory.mktemp("contract-listing")
    with ServerProcess(base / "data", log_dir=base / "logs") as server:
        headers = {"Authorization": f"Bearer {server.token}"}
        with httpx.Client(base_url=server.addr, headers=headers, timeout=30) as client:
            for path in reversed(NAMES):  # written out of order
                n = path[-1]
                tags = {"team": "a" if int(n) % 2 else "b", "n": n}
                r = client.put(
                    f"/v1/secrets/{path}", json={"fields": {"monitoring_tokens": "v"}, "tags": tags}
                )
                assert r.status_code == 200, r.text
            yield client


def _page(api: httpx.Client, **params: object) -> tuple[list[str], str | None]:
    r = api.get("/v1/metadata", params={"prefix": ENV, **params})  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"items", "next_after"}
    return [m["path"] for m in body["items"]], body["next_after"]


def test_sorted_by_path_default_limit_and_exact_last_page(api: httpx.Client) -> None:
    assert _page(api) == (NAMES, None)
    assert _page(api, limit=5) == (NAMES, None)  # a full last page says it is the last
    assert _page(api, limit=1000) == (NAMES, None)


def test_pagination_with_after(api: httpx.Client) -> None:
    seen: list[str] = []
    after = ""
    while True:
        items, after_next = _page(api, limit=2, after=after)
        seen += items
        if after_next is None:
            break
        assert after_next == items[-1]
        after = after_next
    assert seen == NAMES
    assert _page(api, limit=1) == (NAMES[:1], NAMES[0])
    assert _page(api, after=NAMES[-1]) == ([], None)  # at the end
    assert _page(api, after="zzz") == ([], None)  # past the end
    assert _page(api, after=NAMES[1] + "x") == (NAMES[2:], None)  # a path that is not there


@pytest.mark.parametrize("limit", ["0", "1001", "-1"])
def test_limit_bounds(api: httpx.Client, limit: str) -> None:
    r = api.get("/v1/metadata", params={"prefix": ENV, "limit": limit})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "query parameter 'limit' must be from 1 to 1000"


def test_filters(api: httpx.Client) -> None:
    assert _page(api, environment="listing")[0] == NAMES
    assert _page(api, environment="other")[0] == []
    assert _page(api, category="external-services")[0] == NAMES
    assert _page(api, category="database")[0] == []
    assert _page(api, tag="team:a")[0] == [NAMES[1], NAMES[3]]
    assert _page(api, tag=["team:a", "n:1"])[0] == [NAMES[1]]  # every tag must match
    assert _page(api, tag=["team:a", "n:2"])[0] == []
    r = api.get("/v1/metadata", params={"tag": "nocolon"})
    assert r.status_code == 400


def test_a_tag_key_given_twice_is_refused(api: httpx.Client) -> None:
    """``tag=team:a&tag=team:b`` took the last one silently (team:b); it can mean neither
    "both" (nothing matches) nor "either", so it is refused, as a repeated JSON key is."""
    r = api.get("/v1/metadata", params={"prefix": ENV, "tag": ["team:a", "team:b"]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == "query parameter 'tag' names the key 'team' twice"


def test_scheduled_deletions_only_with_include_deleted(api: httpx.Client) -> None:
    path = f"{ENV}database/gone"
    api.put(f"/v1/secrets/{path}", json={"fields": {"host": "db"}})
    assert api.delete(f"/v1/secrets/{path}").status_code == 200
    assert path not in _page(api)[0]
    assert path in _page(api, include_deleted="true")[0]


@pytest.mark.parametrize(
    "prefix", ["/medessence/listing/", "medessence//listing/", "medessence/listing//", "/"]
)
def test_a_malformed_prefix_is_refused_not_an_empty_page(api: httpx.Client, prefix: str) -> None:
    """A listing prefix follows the path rules: with a leading '/' or an empty segment it
    names no secret, and answered an empty page (root) or 403 (another token)."""
    r = api.get("/v1/metadata", params={"prefix": prefix})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_request"
    made = api.post(
        "/v1/auth/token/create",
        json={"paths": ["medessence/listing/"], "capabilities": ["list"], "ttl": 60},
    ).json()
    lister = {"Authorization": f"Bearer {made['token']}"}
    r = api.get("/v1/metadata", params={"prefix": prefix}, headers=lister)
    assert r.status_code == 400, r.text  # before authorization, as a path is


def test_partial_prefixes_are_string_prefixes(api: httpx.Client) -> None:
    assert _page(api, prefix="medessence/listing")[0] == NAMES
    assert _page(api, prefix="medessence/listing/external-services/n")[0] == NAMES
