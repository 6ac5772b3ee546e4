"""What a token without ``list`` learns of a secret's metadata, on a real server.

``GET /v1/metadata/{path}`` needs ``list``; a ``write`` token could still read the whole
metadata (description, owner, tags, versions, last access) with an empty
``PATCH /v1/metadata/{path}`` ``{}``, which changed nothing but ``updated_at``.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from medsecrets.testing.serverproc import ServerProcess

SECRET = "medessence/production/database"


def test_an_empty_metadata_patch_is_refused_and_reveals_nothing(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data", log_dir=tmp_path / "logs") as server:
        root = {"Authorization": f"Bearer {server.token}"}
        put = httpx.put(
            f"{server.addr}/v1/secrets/{SECRET}",
            json={"fields": {"host": "db.internal"}, "description": "d-canary", "owner": "o"},
            headers=root,
        )
        assert put.status_code == 200, put.text
        made = httpx.post(
            f"{server.addr}/v1/auth/token/create",
            json={"paths": ["medessence/production/"], "capabilities": ["write"], "ttl": 600},
            headers=root,
        )
        writer = {"Authorization": f"Bearer {made.json()['token']}"}
        meta = f"{server.addr}/v1/metadata/{SECRET}"
        before = httpx.get(meta, headers=root).json()
        assert httpx.get(meta, headers=writer).status_code == 403  # no list
        for body in ({}, {"clear_rotation_override": False}):
            r = httpx.patch(meta, json=body, headers=writer)
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == "invalid_request"
            assert "d-canary" not in r.text
        # the same answer for a secret that does not exist
        missing = httpx.patch(
            f"{server.addr}/v1/metadata/medessence/production/auth", json={}, headers=writer
        )
        assert missing.status_code == 400
        assert httpx.get(meta, headers=root).json()["updated_at"] == before["updated_at"]
        # a real change still works
        r = httpx.patch(meta, json={"owner": "ops"}, headers=writer)
        assert r.status_code == 200 and r.json()["owner"] == "ops"
