"""Unseal shares through a real server: refusals and a reset never echo, log or store a share."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from medsecrets.testing.serverproc import ServerProcess


def test_shares_are_never_echoed_logged_or_stored(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text("tls_disable = true\n")
    with ServerProcess(
        tmp_path / "data", dev=False, extra_args=["--config", str(config)], log_dir=tmp_path / "l"
    ) as server:
        unseal = f"{server.addr}/v1/sys/unseal"
        init = httpx.post(
            f"{server.addr}/v1/sys/init",
            json={"seal": {"type": "shamir", "shares": 5, "threshold": 3}},
        ).json()
        shares, token = init["shares"], init["root_token"]
        sealed = httpx.post(f"{server.addr}/v1/sys/seal", headers={"X-Medsecrets-Token": token})
        assert sealed.status_code == 200, sealed.text
        assert httpx.post(unseal, json={"share": shares[0]}).json()["progress"] == 1
        typo = shares[1].split()
        typo[3] = "zzzz"
        swapped = shares[1].split()
        swapped[3], swapped[4] = swapped[4], swapped[3]
        refused = [
            httpx.post(unseal, json={"share": " ".join(typo)}),
            httpx.post(unseal, json={"share": " ".join(swapped)}),
            httpx.post(unseal, json={"share": shares[0]}),  # a duplicate
            httpx.post(unseal, json={"share": shares[1], "extra": shares[2]}),
        ]
        assert [r.status_code for r in refused] == [400] * 4
        assert httpx.get(f"{server.addr}/v1/sys/seal-status").json()["progress"] == 1
        # open, as in Vault: anyone who reaches the port may reset the progress
        assert httpx.post(unseal, json={"reset": True}).json()["progress"] == 0
        for share in shares[:3]:
            last = httpx.post(unseal, json={"share": share}).json()
        assert last["sealed"] is False and last["progress"] == 0
        after = httpx.post(unseal, json={"share": shares[4]}).json()  # unsealed: not kept
        assert after["sealed"] is False and after["progress"] == 0
    pieces = [s for share in shares for s in (share, " ".join(share.split()[3:9]))]
    for answer in refused:
        assert not any(piece in answer.text for piece in pieces)
    for root, _, files in os.walk(tmp_path):
        for name in files:
            data = Path(root, name).read_bytes()
            assert not any(piece.encode() in data for piece in pieces), name
