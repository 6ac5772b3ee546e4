"""``sys/rekey``, ``sys/rotate`` and the KEK routes through a real server: refusals change
nothing, the new shares unseal and the old ones are refused, every call needs ``sudo`` and is
audited by route, and no share reaches a log, the audit file or the store."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from medsecrets.testing.serverproc import ServerProcess


def test_rekey_refusals_new_shares_sudo_and_audit(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text("tls_disable = true\n")
    with ServerProcess(
        tmp_path / "data", dev=False, extra_args=["--config", str(config)], log_dir=tmp_path / "l"
    ) as server:
        a = server.addr
        init = httpx.post(
            f"{a}/v1/sys/init", json={"seal": {"type": "shamir", "shares": 5, "threshold": 3}}
        ).json()
        old, root = init["shares"], {"X-Medsecrets-Token": init["root_token"]}

        def rekey(body: object) -> httpx.Response:
            return httpx.post(f"{a}/v1/sys/rekey", json=body, headers=root)

        other = old[1].split()
        other[3] = "zzzz"
        refused = [
            rekey({"shares": [old[0], old[0], old[1]]}),  # given twice
            rekey({"shares": old[:2]}),  # too few
            rekey({"shares": [" ".join(other), *old[:2]]}),  # malformed
            rekey({"shares": old[:3], "new_shares": 2, "new_threshold": 3}),
        ]
        assert [r.status_code for r in refused] == [400] * 4
        assert [r.json()["error"]["code"] for r in refused[:3]] == ["invalid_share"] * 3
        done = rekey({"shares": old[1:4], "new_shares": 4, "new_threshold": 2})
        assert done.status_code == 200, done.text
        new = done.json()["shares"]
        assert done.json()["verify"] is True
        verify = f"{a}/v1/sys/rekey/verify"
        verified = httpx.post(verify, json={"shares": new[2:]}, headers=root)
        assert verified.status_code == 200, verified.text
        assert verified.json()["threshold"] == 2 and verified.json()["shares"] == 4
        assert rekey({"shares": old[:3]}).status_code == 400  # another share set now
        denied = httpx.post(
            f"{a}/v1/auth/token/create",
            headers=root,
            json={"paths": ["sys/"], "capabilities": ["read", "write"], "display_name": "ns"},
        ).json()["token"]
        for route, body in [
            ("sys/rotate", None),
            ("sys/rekey", {"shares": new[:2], "new_shares": 1, "new_threshold": 1}),
            ("sys/keys/database/rotate", None),
            ("sys/rewrap", {}),
        ]:
            nosudo = {"X-Medsecrets-Token": denied}
            answer = httpx.post(f"{a}/v1/{route}", json=body, headers=nosudo)
            assert answer.status_code == 403, (route, answer.text)
        nosudo = {"X-Medsecrets-Token": denied}
        assert httpx.post(verify, json={"shares": new[:2]}, headers=nosudo).status_code == 403
        assert httpx.delete(f"{a}/v1/sys/rekey", headers=nosudo).status_code == 403
        assert httpx.post(f"{a}/v1/sys/rotate", headers=root).json()["term"] == 2
        assert httpx.post(f"{a}/v1/sys/seal", headers=root).status_code == 200
        unseal = f"{a}/v1/sys/unseal"
        assert httpx.post(unseal, json={"share": old[0]}).status_code == 400
        for share in new[:2]:
            status = httpx.post(unseal, json={"share": share}).json()
        assert status["sealed"] is False and status["term"] == 2
    audit = (tmp_path / "data" / "audit" / "audit.jsonl").read_text()
    for operation in ("sys.rekey", "sys.rekey.verify", "sys.rotate", "sys.keys.rotate"):
        assert f'"operation":"{operation}"' in audit
    pieces = [p for share in old + new for p in (share, " ".join(share.split()[3:9]))]
    for directory, _, files in os.walk(tmp_path):
        for name in files:
            data = Path(directory, name).read_bytes()
            assert not any(piece.encode() in data for piece in pieces), name
