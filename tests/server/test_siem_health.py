"""A SIEM that refuses every delivery shows in `audit devices` and in the metrics (it looked
healthy everywhere an operator is told to look), and recovers when it accepts again."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from medsecrets.testing.serverproc import ServerProcess
from tests.audit.test_forwarder import Receiver

SECRET = "medessence/development/database"


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30  # a safety net, not a timing assertion
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_refusing_siem_is_visible_and_recovers(tmp_path: Path) -> None:
    receiver = Receiver()
    receiver.refusing = True
    receiver.failing_status = 401
    data = tmp_path / "data"
    config = tmp_path / "server.toml"
    config.write_text(
        "[[audit.device]]\n"
        'type = "file"\n'
        f'path = "{data / "audit" / "audit.jsonl"}"\n'
        "[[audit.device]]\n"
        'type = "http"\n'
        'name = "siem"\n'
        "required = false\n"
        f'url = "{receiver.url}"\n'
    )
    try:
        with ServerProcess(
            data,
            extra_args=["--config", str(config)],
            env={"MEDSECRETS_METRICS_UNAUTHENTICATED": "true"},
            log_dir=tmp_path / "l",
        ) as server:
            headers = {"Authorization": f"Bearer {server.token}"}

            def siem() -> dict[str, object]:
                devices = httpx.get(f"{server.addr}/v1/sys/audit/devices", headers=headers)
                found = [d for d in devices.json()["devices"] if d["name"] == "siem"]
                return dict(found[0])

            for _ in range(3):
                assert httpx.get(f"{server.addr}/v1/secrets/{SECRET}", headers=headers).is_success
            _until(lambda: (siem()["delivery_failures"] or 0) >= 2, "failures never counted")
            health = siem()
            assert health["delivery_error"] == "HTTP 401"
            assert (health["spool_pending"] or 0) > 0
            metrics = httpx.get(f"{server.addr}/v1/sys/metrics").text
            failing = [
                line
                for line in metrics.splitlines()
                if line.startswith('medsecrets_audit_delivery_failures{device="siem"}')
            ]
            assert failing and float(failing[0].split()[-1]) >= 2
            receiver.refusing = False
            _until(lambda: siem()["delivery_failures"] == 0, "never recovered")
            _until(lambda: siem()["spool_pending"] == 0, "spool never drained")
            assert siem()["last_delivered_at"] is not None
            assert receiver.lines()
    finally:
        receiver.stop()
