"""A Shamir rekey through a real server takes effect only once its new shares come back
(``POST /v1/sys/rekey/verify``): a server killed between the rekey and the verification
still opens with the old shares, refusals change nothing, and a cancel drops the rekey."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from medsecrets.testing.serverproc import ServerProcess


def _server(tmp_path: Path) -> ServerProcess:
    config = tmp_path / "server.toml"
    config.write_text("tls_disable = true\n")
    return ServerProcess(
        tmp_path / "data", dev=False, extra_args=["--config", str(config)], log_dir=tmp_path / "l"
    )


def _unseal(addr: str, shares: list[str]) -> httpx.Response:
    httpx.post(f"{addr}/v1/sys/unseal", json={"reset": True})
    answer = httpx.post(f"{addr}/v1/sys/unseal", json={"share": shares[0]})
    for share in shares[1:]:
        answer = httpx.post(f"{addr}/v1/sys/unseal", json={"share": share})
    return answer


def test_a_sigkill_between_rekey_and_verify_leaves_the_old_shares_working(
    tmp_path: Path,
) -> None:
    with _server(tmp_path) as server:
        a = server.addr
        init = httpx.post(
            f"{a}/v1/sys/init", json={"seal": {"type": "shamir", "shares": 3, "threshold": 2}}
        ).json()
        old, root = init["shares"], {"X-Medsecrets-Token": init["root_token"]}
        done = httpx.post(
            f"{a}/v1/sys/rekey",
            json={"shares": old[:2], "new_shares": 2, "new_threshold": 2},
            headers=root,
        )
        assert done.status_code == 200, done.text
        new = done.json()["shares"]  # lost with the server, as far as the store knows
        server.restart(sig=signal.SIGKILL)
        a = server.addr
        assert httpx.get(f"{a}/v1/sys/seal-status").json()["sealed"] is True
        assert _unseal(a, new).status_code == 400  # pending shares do not unseal
        opened = _unseal(a, old[1:])
        assert opened.status_code == 200 and opened.json()["sealed"] is False, opened.text
        # the pending rekey survived: verifying it switches over
        verify = f"{a}/v1/sys/rekey/verify"
        verified = httpx.post(verify, json={"shares": new}, headers=root)
        assert verified.status_code == 200, verified.text
        assert httpx.post(f"{a}/v1/sys/seal", headers=root).status_code == 200
        assert _unseal(a, old[:2]).status_code == 400
        assert _unseal(a, new).json()["sealed"] is False


def test_verify_refusals_nothing_pending_and_cancel(tmp_path: Path) -> None:
    with _server(tmp_path) as server:
        a = server.addr
        init = httpx.post(
            f"{a}/v1/sys/init", json={"seal": {"type": "shamir", "shares": 3, "threshold": 2}}
        ).json()
        old, root = init["shares"], {"X-Medsecrets-Token": init["root_token"]}
        verify = f"{a}/v1/sys/rekey/verify"
        nothing = httpx.post(verify, json={"shares": old[:2]}, headers=root)
        assert nothing.status_code == 400, nothing.text
        assert nothing.json()["error"]["code"] == "invalid_request"
        assert "no rekey is pending" in nothing.json()["error"]["message"]
        cancel = httpx.delete(f"{a}/v1/sys/rekey", headers=root)
        assert cancel.status_code == 200 and cancel.json() == {"cancelled": False}

        new = httpx.post(
            f"{a}/v1/sys/rekey",
            json={"shares": old[:2], "new_shares": 3, "new_threshold": 2},
            headers=root,
        ).json()["shares"]
        for shares in (old[:2], new[:1], [new[0], new[0]], ["not a share", new[1]]):
            refused = httpx.post(verify, json={"shares": shares}, headers=root)
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["code"] == "invalid_share"
        assert httpx.delete(f"{a}/v1/sys/rekey", headers=root).json() == {"cancelled": True}
        assert httpx.post(verify, json={"shares": new[:2]}, headers=root).status_code == 400
        assert httpx.post(f"{a}/v1/sys/seal", headers=root).status_code == 200
        assert _unseal(a, new[:2]).status_code == 400
        assert _unseal(a, old[1:]).json()["sealed"] is False
