"""A pending rekey at rest, on a real server: the SQLite file (its WAL included) and the
server's log hold no root key, unseal key, share or secret in plaintext, and the audit log
records rekey, verify and cancel without any share (only HMACs)."""

from __future__ import annotations

from pathlib import Path

import httpx

from medsecrets.barrier.aes_gcm import ROOT_KEY_KEY
from medsecrets.seal.manager import PENDING_ROOT_KEY_KEY, _unwrap_root
from medsecrets.seal.shamir import combine_shares
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.testing.serverproc import ServerProcess

CANARY = "Canary-Rekey-At-Rest-7781"


def _files(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


def test_a_pending_rekey_leaves_no_key_share_or_secret_in_plaintext(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text("tls_disable = true\n")
    data = tmp_path / "data"
    with ServerProcess(
        data, dev=False, extra_args=["--config", str(config)], log_dir=tmp_path / "l"
    ) as server:
        a = server.addr
        init = httpx.post(
            f"{a}/v1/sys/init", json={"seal": {"type": "shamir", "shares": 3, "threshold": 2}}
        ).json()
        old, root = init["shares"], {"X-Medsecrets-Token": init["root_token"]}
        put = httpx.put(
            f"{a}/v1/secrets/medessence/production/database",
            json={"fields": {"host": "db.internal", "password": CANARY}},
            headers=root,
        )
        assert put.status_code == 200, put.text
        rekey = {"shares": old[:2], "new_shares": 3, "new_threshold": 2}
        first = httpx.post(f"{a}/v1/sys/rekey", json=rekey, headers=root).json()["shares"]
        assert httpx.delete(f"{a}/v1/sys/rekey", headers=root).json() == {"cancelled": True}
        second = httpx.post(f"{a}/v1/sys/rekey", json=rekey, headers=root).json()["shares"]
        pending = _files(data)  # the second rekey still pending, the first cancelled
        verified = httpx.post(f"{a}/v1/sys/rekey/verify", json={"shares": second[:2]}, headers=root)
        assert verified.status_code == 200, verified.text
        after = _files(data)

    storage = SqliteStorage(data / "medsecrets.db")
    try:
        record = storage.get(ROOT_KEY_KEY)
        assert record is not None and storage.get(PENDING_ROOT_KEY_KEY) is None
    finally:
        storage.close()
    root_key = _unwrap_root(combine_shares(second[:2]), record).reveal()
    keys = [root_key, *(combine_shares(s[:2]).reveal() for s in (old, first, second))]
    everything = pending + after + _files(tmp_path / "l")  # the server's own log too
    assert CANARY.encode() not in everything
    for key in keys:
        assert key not in everything and key.hex().encode() not in everything
    for share in (*old, *first, *second):
        words = " ".join(share.split()[4:9]).encode()  # any run of its words
        assert share.encode() not in everything and words not in everything
    audit = [p for p in data.rglob("*.jsonl")]
    assert audit, "no audit log found"
    log = b"".join(p.read_bytes() for p in audit)
    for operation in (b'"sys.rekey"', b'"sys.rekey.verify"', b'"sys.rekey.cancel"'):
        assert operation in log
