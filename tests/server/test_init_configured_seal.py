"""``sys/init`` keeps to the seal the server's configuration names (``seal.type``).

Before, a server configured for a Shamir seal took an init with a key file: the init
succeeded, and the next start refused the store ("configured 'shamir' but the store was
initialised with a 'keyfile' seal"), so the operator found out only at the restart.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from medsecrets.testing.serverproc import ServerProcess


def test_an_init_with_another_seal_than_configured_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text('tls_disable = true\n\n[seal]\ntype = "shamir"\n')
    args = ["--config", str(config)]
    with ServerProcess(tmp_path / "data", dev=False, extra_args=args, log_dir=tmp_path / "l") as s:
        key_file = str(tmp_path / "unseal.key")
        refused = httpx.post(
            f"{s.addr}/v1/sys/init", json={"seal": {"type": "keyfile", "path": key_file}}
        )
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["code"] == "invalid_request"
        assert "configured for a shamir seal" in error["message"]
        assert not Path(key_file).exists()
        status = httpx.get(f"{s.addr}/v1/sys/seal-status").json()
        assert status["initialized"] is False
        done = httpx.post(
            f"{s.addr}/v1/sys/init", json={"seal": {"type": "shamir", "shares": 3, "threshold": 2}}
        )
        assert done.status_code == 200, done.text
        shares = done.json()["shares"]
    with ServerProcess(tmp_path / "data", dev=False, extra_args=args, log_dir=tmp_path / "l2") as s:
        for share in shares[:2]:
            answer = httpx.post(f"{s.addr}/v1/sys/unseal", json={"share": share})
            assert answer.status_code == 200, answer.text
        assert answer.json()["sealed"] is False
