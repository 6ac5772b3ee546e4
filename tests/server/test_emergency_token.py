"""A break-glass (emergency) token: made with `emergency`, inherited by its children, every
use flagged in the audit trail and alerted (critical), end to end on a real server."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from medsecrets.testing.serverproc import ServerProcess

SECRET = "medessence/development/database"


def test_an_emergency_token_is_flagged_and_alerted(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data", log_dir=tmp_path / "l") as server:
        root = {"Authorization": f"Bearer {server.token}"}
        created = httpx.post(
            f"{server.addr}/v1/auth/token/create",
            json={
                "paths": ["medessence/"],
                "capabilities": ["read", "token"],
                "ttl": 600,
                "display_name": "break-glass",
                "emergency": True,
            },
            headers=root,
        ).json()
        assert created["info"]["emergency"] is True
        glass = {"Authorization": f"Bearer {created['token']}"}
        child = httpx.post(
            f"{server.addr}/v1/auth/token/create",
            json={"paths": ["medessence/"], "capabilities": ["read"], "ttl": 60},
            headers=glass,
        ).json()
        assert child["info"]["emergency"] is True  # inherited
        assert httpx.get(f"{server.addr}/v1/secrets/{SECRET}", headers=glass).status_code == 200
        deadline = time.monotonic() + 30  # a safety net while the detectors run
        while True:
            alerts = httpx.get(f"{server.addr}/v1/sys/alerts", headers=root).json()["alerts"]
            emergency = [a for a in alerts if a["detector"] == "emergency"]
            if emergency:
                break
            assert time.monotonic() < deadline, "no emergency alert"
            time.sleep(0.1)
        assert emergency[0]["severity"] == "critical"
        assert emergency[0]["principal"] == "break-glass"
        records = httpx.get(
            f"{server.addr}/v1/sys/audit/search",
            params={"principal": "break-glass", "operation": "secrets.read"},
            headers=root,
        ).json()["records"]
        assert records and all(record["emergency"] is True for record in records)
        # the root token itself is no emergency token
        plain = httpx.get(
            f"{server.addr}/v1/sys/audit/search",
            params={"principal": "dev-root", "operation": "sys.alerts"},
            headers=root,
        ).json()["records"]
        assert plain and not any(record["emergency"] for record in plain)
