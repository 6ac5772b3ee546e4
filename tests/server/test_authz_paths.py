"""Token paths on a real server: a path covers itself and what lies under it, segment by
segment, never a sibling that merely starts with the same letters."""

from __future__ import annotations

from pathlib import Path

import httpx

from medsecrets.testing.serverproc import ServerProcess

OURS = "medessence/production/database"
SIBLING = "medessence/production-eu/database"


def test_a_token_path_stops_at_a_segment_boundary(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data", log_dir=tmp_path / "logs") as server:
        root = {"Authorization": f"Bearer {server.token}"}
        for path in (OURS, SIBLING):
            put = httpx.put(
                f"{server.addr}/v1/secrets/{path}",
                json={"fields": {"host": "db.internal", "password": "Canary-Sibling-Pw-9"}},
                headers=root,
            )
            assert put.status_code == 200, put.text

        def token(paths: list[str], headers: dict[str, str] = root) -> dict[str, str]:
            made = httpx.post(
                f"{server.addr}/v1/auth/token/create",
                json={"paths": paths, "capabilities": ["read", "list", "token"], "ttl": 600},
                headers=headers,
            )
            assert made.status_code == 200, made.text
            return {"Authorization": f"Bearer {made.json()['token']}"}

        production = token(["medessence/production"])
        assert httpx.get(f"{server.addr}/v1/secrets/{OURS}", headers=production).status_code == 200
        refused = httpx.get(f"{server.addr}/v1/secrets/{SIBLING}", headers=production)
        assert refused.status_code == 403
        assert "Canary" not in refused.text
        prod = token(["medessence/prod"])
        assert httpx.get(f"{server.addr}/v1/secrets/{OURS}", headers=prod).status_code == 403

        # a listing of medessence/production would name production-eu: refused, saying how
        listing = f"{server.addr}/v1/metadata"
        wide = httpx.get(listing, params={"prefix": "medessence/production"}, headers=production)
        assert wide.status_code == 403
        assert "medessence/production-eu" not in wide.text
        assert "a/b/" in wide.json()["error"]["message"]
        page = httpx.get(listing, params={"prefix": "medessence/production/"}, headers=production)
        assert page.status_code == 200, page.text
        assert [item["path"] for item in page.json()["items"]] == [OURS]

        # a child cannot widen to a sibling either
        child = httpx.post(
            f"{server.addr}/v1/auth/token/create",
            json={"paths": ["medessence/production-eu"], "capabilities": ["read"], "ttl": 60},
            headers=production,
        )
        assert child.status_code == 403, child.text
        token(["medessence/production/database"], production)  # under it: allowed


def test_a_listing_filtered_to_a_token_s_environment_needs_no_prefix(tmp_path: Path) -> None:
    """``secrets list --env production`` sends no prefix: it needed ``list`` on ``*``."""
    replica = f"{OURS}/replica"
    with ServerProcess(tmp_path / "data", log_dir=tmp_path / "logs") as server:
        root = {"Authorization": f"Bearer {server.token}"}
        for path in (OURS, replica, SIBLING):
            put = httpx.put(
                f"{server.addr}/v1/secrets/{path}", json={"fields": {"host": "h"}}, headers=root
            )
            assert put.status_code == 200, put.text

        def token(path: str) -> dict[str, str]:
            made = httpx.post(
                f"{server.addr}/v1/auth/token/create",
                json={"paths": [path], "capabilities": ["list"], "ttl": 600},
                headers=root,
            )
            assert made.status_code == 200, made.text
            return {"Authorization": f"Bearer {made.json()['token']}"}

        def listed(headers: dict[str, str], **query: str) -> int | list[str]:
            r = httpx.get(f"{server.addr}/v1/metadata", params=query, headers=headers)
            return [i["path"] for i in r.json()["items"]] if r.status_code == 200 else r.status_code

        production = token("medessence/production")
        assert listed(production, environment="production") == [OURS, replica]
        assert listed(production, environment="production", category="database") == [
            OURS,
            replica,
        ]
        assert listed(production, environment="production-eu") == 403
        assert listed(production) == 403  # everything: needs *
        assert listed(production, category="database") == 403  # a category spans environments
        narrow = token(replica)
        assert listed(narrow, environment="production", category="database") == 403
        database = token(OURS)
        assert listed(database, environment="production", category="database") == [OURS, replica]
        assert listed(database, environment="production") == 403
