"""The detectors in the audit process (``server.auditprocess``): alerts come back.

A real audit process started by ``RemoteLane`` with the server's entry point:
reads past the rate threshold and a read of a honeytoken raise alerts there,
which arrive in the server through ``AlertReceiver`` (with the counts), and a
malformed alert message is dropped, not raised. The detectors' state outlives the
process (``monitor.state``): a rate count begun before a restart goes on after it,
unless the state file was edited.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path

from medsecrets.audit.checkpoint import CheckpointSigner
from medsecrets.audit.record import AuditEvent
from medsecrets.audit.remote import RemoteLane
from medsecrets.audit.sidecar import LaneConfig
from medsecrets.audit.waiter import Waiter
from medsecrets.catalog.loader import default_catalog
from medsecrets.monitor.alert import Alert
from medsecrets.monitor.detectors import DetectorConfig
from medsecrets.server.auditprocess import AlertReceiver, monitor_settings

DECOY = "production/database/decoy-admin"
MATERIAL = (b"m" * 32, CheckpointSigner.generate().private_bytes())


def _read(number: int, path: str) -> AuditEvent:
    return AuditEvent(
        kind="response",
        time=dt.datetime.now(dt.UTC),
        request_id=f"req-{number}",
        principal="svc-reader",
        token="tok",
        auth="token",
        remote="10.1.2.3",
        operation="secrets.read",
        path=path,
        environment=path.split("/")[1],
        category=path.split("/")[2],
        status=200,
    )


def test_alerts_raised_in_the_audit_process_reach_the_server(tmp_path: Path) -> None:
    catalog = dataclasses.replace(default_catalog(), honeytokens=frozenset({DECOY}))
    raised: list[Alert] = []
    receiver = AlertReceiver(raised.append)
    config = LaneConfig(
        name="file",
        path=str(tmp_path / "audit.jsonl"),
        node="n1",
        max_bytes=0,
        monitor=monitor_settings(catalog, detectors=DetectorConfig(rate_limit=3)),
    )
    lane = RemoteLane(
        config,
        key_material=lambda name: MATERIAL,
        entry="medsecrets.server.auditprocess",
        on_message=receiver,
    )
    lane.start()
    try:
        waiters = []
        for number in range(6):
            waiter = Waiter(1)
            lane.append(_read(number, "medessence/production/auth/api"), waiter)
            waiters.append(waiter)
        waiter = Waiter(1)
        lane.append(_read(99, f"medessence/{DECOY}"), waiter)
        waiters.append(waiter)
        for waiter in waiters:
            waiter.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and {"rate", "honeytoken"} - {a.detector for a in raised}:
            time.sleep(0.02)
    finally:
        lane.stop()
    detectors = {alert.detector for alert in raised}
    assert {"rate", "honeytoken"} <= detectors
    rate = next(alert for alert in raised if alert.detector == "rate")
    assert rate.principal == "svc-reader"
    assert receiver.counts["rate"] >= 1 and receiver.counts["honeytoken"] == 1


def test_a_malformed_alert_is_dropped() -> None:
    raised: list[Alert] = []
    receiver = AlertReceiver(raised.append)
    good = Alert(
        detector="rate",
        severity="high",
        time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        summary="s",
        key="k",
        count=3,
        details={"window": 300},
    )
    receiver(("alerts", [{"detector": "rate"}, {**good.to_dict(), "severity": "x"}], {}))
    receiver(("alerts", [good.to_dict()], {"rate": 1}))
    assert raised == [good]
    assert receiver.counts == {"rate": 1}
    assert receiver.malformed == 2  # never audited: counted (medsecrets_alerts_unaudited_total)


def _run_reads(tmp_path: Path, paths: list[str], decoy: str, state: Path | None) -> set[str]:
    """One audit process: ``paths`` read, then ``decoy`` (its honeytoken alert shows that
    every read before it was observed); the detectors that raised alerts."""
    decoys = frozenset({DECOY, DECOY + "-2"})
    catalog = dataclasses.replace(default_catalog(), honeytokens=decoys)
    raised: list[Alert] = []
    config = LaneConfig(
        name="file",
        path=str(tmp_path / "audit.jsonl"),
        node="n1",
        max_bytes=0,
        monitor=monitor_settings(
            catalog,
            detectors=DetectorConfig(rate_limit=4),
            state_path=None if state is None else str(state),
        ),
    )
    lane = RemoteLane(
        config,
        key_material=lambda name: MATERIAL,
        entry="medsecrets.server.auditprocess",
        on_message=AlertReceiver(raised.append),
    )
    lane.start()
    try:
        waiters = []
        for number, path in enumerate([*paths, f"medessence/{decoy}"]):
            waiter = Waiter(1)
            lane.append(_read(number, path), waiter)
            waiters.append(waiter)
        for waiter in waiters:
            waiter.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(a.detector == "honeytoken" for a in raised):
            time.sleep(0.02)
    finally:
        lane.stop()
    assert any(alert.detector == "honeytoken" for alert in raised)
    return {alert.detector for alert in raised}


def test_the_detectors_state_survives_an_audit_process_restart(tmp_path: Path) -> None:
    """Rate limit 4: four reads (the decoy's included) before a restart, two after. Only
    with the state kept does the fifth read, in the new process, exceed the limit; an
    edited state file is refused, as if there were none."""
    api = "medessence/production/auth/api"
    state = tmp_path / "monitor" / "detectors.state"
    assert "rate" not in _run_reads(tmp_path / "a", [api] * 3, DECOY, state)
    assert state.exists()
    assert "rate" in _run_reads(tmp_path / "a", [api], DECOY + "-2", state)

    assert "rate" not in _run_reads(tmp_path / "b", [api] * 3, DECOY, None)
    assert "rate" not in _run_reads(tmp_path / "b", [api], DECOY + "-2", None)

    edited = tmp_path / "monitor" / "edited.state"
    assert "rate" not in _run_reads(tmp_path / "c", [api] * 3, DECOY, edited)
    data = edited.read_bytes()
    at = data.index(b"\n") + 20  # a byte of the state itself
    edited.write_bytes(data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :])
    assert "rate" not in _run_reads(tmp_path / "c", [api], DECOY + "-2", edited)
