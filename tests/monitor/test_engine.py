"""``MonitorEngine``: records in, alerts out on a real worker thread; submit never blocks."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from medsecrets.audit.record import AuditEvent
from medsecrets.monitor.alert import Alert
from medsecrets.monitor.detectors import DetectorConfig, DetectorSet, EmergencyDetector
from medsecrets.monitor.engine import MonitorEngine
from medsecrets.monitor.events import AccessEvent
from medsecrets.monitor.sources import event_from_record

T0 = dt.datetime(2025, 3, 4, 10, 0, tzinfo=dt.UTC)


def record(i: int, **changes: object) -> dict[str, object]:
    """A response record as the audit broker renders it (no secret in it)."""
    base: dict[str, object] = {
        "kind": "response",
        "time": (T0 + dt.timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "request_id": f"req-{i}",
        "principal": "svc-billing",
        "accessor": "hmac-sha256:00",
        "remote": "10.30.4.17",
        "operation": "secrets.read",
        "path": "medessence/production/database/primary",
        "environment": "production",
        "category": "database",
        "outcome": "success",
        "status": 200,
        "emergency": False,
    }
    base.update(changes)
    return base


class Sink:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.threads: set[str] = set()

    def __call__(self, alert: Alert) -> None:
        self.threads.add(threading.current_thread().name)
        self.alerts.append(alert)


def test_alerts_are_raised_off_the_submitting_thread() -> None:
    sink = Sink()
    engine = MonitorEngine(DetectorSet.default(), sink)
    engine.start()
    for i in range(60):
        engine.submit({**record(i), "kind": "request"})  # requests are not events
        engine.submit(record(i))
    engine.submit(record(100, emergency=True, request_id="glass"))
    engine.submit({"kind": "checkpoint", "time": "2025-03-04T10:02:00.000000Z", "covers": 10})
    engine.drain()
    assert [(a.detector, a.details["request_id"]) for a in sink.alerts] == [
        ("rate", "req-50"),
        ("emergency", "glass"),
    ]
    assert sink.threads == {"medsecrets-monitor"}
    assert (engine.submitted, engine.events, engine.alerts, engine.dropped, engine.errors) == (
        122,
        61,
        2,
        0,
        0,
    )
    assert engine.stop(timeout=10)


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    sink = Sink()
    engine = MonitorEngine(DetectorSet.default(), sink, queue_size=2)
    for i in range(5):  # not started: nothing is taken off the queue
        engine.submit(record(i, emergency=True, principal=f"p{i}"))
    assert (engine.submitted, engine.dropped) == (2, 3)
    engine.start()
    engine.drain()
    assert [a.principal for a in sink.alerts] == ["p0", "p1"]
    assert engine.stop(timeout=10)
    engine.submit(record(9))
    assert engine.dropped == 4
    with pytest.raises(RuntimeError):
        engine.start()


def test_bad_records_and_failing_sinks_are_counted_and_survived() -> None:
    delivered: list[Alert] = []

    def flaky(alert: Alert) -> None:
        if alert.principal == "first":
            raise OSError("webhook down")
        delivered.append(alert)

    engine = MonitorEngine(DetectorSet.default(DetectorConfig()), flaky)
    engine.start()
    engine.submit(record(1, time="not a time"))
    engine.submit(record(2, emergency=True, principal="first"))
    engine.submit(record(3, emergency=True, principal="second"))
    engine.drain()
    assert engine.errors == 2
    assert [a.principal for a in delivered] == ["second"]
    assert engine.stop(timeout=10)


def test_stop_processes_what_is_queued() -> None:
    sink = Sink()
    engine = MonitorEngine(DetectorSet.default(), sink)
    engine.start()
    for i in range(200):
        engine.submit(record(i, principal=f"p{i}", emergency=True))
    assert engine.stop(timeout=10)
    assert engine.events == 200
    assert len(sink.alerts) == 200


def test_drain_needs_a_started_engine() -> None:
    engine = MonitorEngine(DetectorSet.default(), Sink())
    with pytest.raises(RuntimeError):
        engine.drain()
    assert engine.stop() is True
    with pytest.raises(ValueError):
        MonitorEngine(DetectorSet.default(), Sink(), queue_size=0)


class OneByOne:
    """A test double: a plain ``Detector`` (no ``observe_many``) that raises on one principal."""

    name = "one_by_one"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def observe(self, event: AccessEvent) -> list[Alert]:
        if event.principal == "boom":
            raise RuntimeError("detector bug")
        self.seen.append(event.request_id)
        return []


def test_batches_give_the_alerts_of_event_by_event_observation() -> None:
    records = [
        record(i, principal=f"p{i % 3}", emergency=i % 7 == 0, remote=f"10.0.{i % 5}.1")
        for i in range(500)
    ]
    sink = Sink()
    engine = MonitorEngine(DetectorSet.default(), sink)
    engine.start()
    for item in records:
        engine.submit(item)
    assert engine.stop(timeout=10)
    one_by_one = DetectorSet.default()
    expected = [
        alert
        for item in records
        if (event := event_from_record(item)) is not None
        for alert in one_by_one.observe(event)
    ]
    assert expected  # the data raises alerts
    assert sink.alerts == expected
    assert engine.events == 500


def test_a_plain_detector_sees_every_event_and_a_failing_batch_is_counted() -> None:
    detector = OneByOne()
    engine = MonitorEngine(detector, Sink())
    engine.start()
    for i in range(50):
        engine.submit(record(i))
    engine.drain()
    assert detector.seen == [f"req-{i}" for i in range(50)]
    engine.submit(record(50, principal="boom"))
    engine.drain()
    assert engine.errors == 1
    engine.submit(record(51))
    assert engine.stop(timeout=10)
    assert detector.seen[-1] == "req-51"  # the worker survived the failing batch


def test_a_failing_detector_loses_only_its_own_alerts() -> None:
    sink = Sink()
    failing = OneByOne()
    engine = MonitorEngine(DetectorSet([EmergencyDetector(DetectorConfig()), failing]), sink)
    engine.start()
    # one batch: the emergency read and the event that makes the other detector raise
    engine.submit(record(1, emergency=True, request_id="glass"))
    engine.submit(record(2, principal="boom"))
    engine.drain()
    assert engine.errors == 1
    assert [(a.detector, a.details["request_id"]) for a in sink.alerts] == [("emergency", "glass")]
    assert engine.stop(timeout=10)


def test_a_full_queue_keeps_its_last_tenth_for_emergency_and_decoy_records() -> None:
    """A flood of ordinary requests fills the queue (the worker is slow: here not started);
    an emergency credential's use and reads of a decoy after it still reach the detectors,
    as records and as the broker's ``AuditEvent``s (the dispatcher keeps the same reserve
    for critical alerts); ordinary records never take it."""
    decoy = "medessence/production/database/decoy"
    sink = Sink()
    engine = MonitorEngine(
        DetectorSet.default(DetectorConfig(), lambda path: path == decoy),
        sink,
        queue_size=100,
        is_honeytoken=lambda path: path == decoy,
    )
    for i in range(300):
        engine.submit(record(i, principal=f"p{i}"))
    assert (engine.submitted, engine.dropped) == (90, 210)
    engine.submit(record(400, emergency=True, principal="glass"))
    engine.submit(record(401, path=decoy, principal="mallory"))
    event = access_event_of(record(402, path=decoy, principal="eve"))
    engine.submit(event)
    engine.submit(record(403, principal="ordinary"))  # not critical: no place for it
    assert (engine.submitted, engine.dropped) == (93, 211)
    for i in range(20):  # a flood of critical records can fill the reserve too (counted)
        engine.submit(record(500 + i, emergency=True, principal=f"g{i}"))
    assert (engine.submitted, engine.dropped) == (100, 224)
    engine.start()
    engine.drain()
    found = {(a.detector, a.principal) for a in sink.alerts}
    assert {("emergency", "glass"), ("honeytoken", "mallory"), ("honeytoken", "eve")} <= found
    assert engine.stop(timeout=10)


def access_event_of(doc: dict[str, object]) -> AuditEvent:
    """The broker's ``AuditEvent`` for a response record (what the server submits)."""
    return AuditEvent(
        kind="response",
        time=dt.datetime.strptime(str(doc["time"]), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC),
        request_id=str(doc["request_id"]),
        principal=str(doc["principal"]),
        remote=str(doc["remote"]),
        operation=str(doc["operation"]),
        path=str(doc["path"]),
        environment=str(doc["environment"]),
        category=str(doc["category"]),
        status=200,
    )
