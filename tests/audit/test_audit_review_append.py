"""Review of the broker's handling of a lane that raises while queueing a record: fail
closed for a required device, the device shown down while it raises, and what it says."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from medsecrets.audit.broker import AuditBroker
from medsecrets.audit.file import FileAuditDevice
from medsecrets.audit.lane import DeviceKeys, Lane
from medsecrets.audit.packed import PackedCompletion, PackedEvent
from medsecrets.audit.record import Salter
from medsecrets.audit.waiter import Waiter
from medsecrets.core.request import Request
from medsecrets.errors import AuditFailure
from tests.support.audit_fakes import FakeFailingSignerLane

KEYS = DeviceKeys(salter=Salter(b"k" * 32))


class RaisingLane(Lane):
    """A FAKE fault: an in-process lane whose queueing raises while ``broken``."""

    broken = True

    def append_packed(
        self,
        event: PackedEvent,
        completion: PackedCompletion | None = None,
        waiter: Waiter | None = None,
        *,
        notify: bool = True,
    ) -> None:
        if self.broken:
            raise RuntimeError("queueing failed")
        super().append_packed(event, completion, waiter, notify=notify)


def _lane(tmp_path: Path, name: str, *, raising: bool, required: bool = True) -> Lane:
    kind = RaisingLane if raising else Lane
    return kind(
        FileAuditDevice(name, tmp_path / f"{name}.jsonl"),
        node="n1",
        keys=lambda device: KEYS,
        required=required,
    )


def _put(n: int) -> Request:
    return Request(
        method="PUT",
        route="secrets.write",
        path="medessence/development/database",
        body={"fields": {"password": "x"}},
        request_id=f"req-{n}",
    )


def _get(n: int) -> Request:
    return Request(
        method="GET",
        route="secrets.read",
        path="medessence/development/database",
        request_id=f"get-{n}",
    )


def _broker(*lanes: Lane) -> AuditBroker:
    broker = AuditBroker(list(lanes), prefix="medessence", keys=lambda name: KEYS)
    broker.start()
    return broker


def _succeeds(ticket: Waiter | None) -> bool:
    assert ticket is not None
    try:
        ticket.wait()
    except AuditFailure:
        return False
    return True


def test_a_raising_required_lane_beside_an_optional_one_refuses(tmp_path: Path) -> None:
    broker = _broker(
        _lane(tmp_path, "primary", raising=True),
        _lane(tmp_path, "extra", raising=False, required=False),
    )
    try:
        assert _succeeds(broker.on_request(_put(1), None)) is False
        request = _get(2)
        assert broker.on_request(request, None) is None
        assert _succeeds(broker.on_response(request, None, 200, None)) is False
    finally:
        broker.stop()


def test_a_raising_required_lane_beside_another_required_one_is_covered_by_it(
    tmp_path: Path,
) -> None:
    other = _lane(tmp_path, "second", raising=False)
    broker = _broker(_lane(tmp_path, "primary", raising=True), other)
    try:
        assert _succeeds(broker.on_request(_put(1), None)) is True
        assert other.records == 1
    finally:
        broker.stop()


def test_a_lane_that_raises_is_down_until_it_queues_again(tmp_path: Path) -> None:
    lane = _lane(tmp_path, "primary", raising=True)
    assert isinstance(lane, RaisingLane)
    broker = _broker(lane)
    try:
        assert _succeeds(broker.on_request(_put(1), None)) is False
        (entry,) = broker.health()
        assert entry["up"] is False  # it said up while refusing every request
        assert entry["failures"] == 1
        assert entry["last_error"] == "append-failed"
        lane.broken = False
        assert _succeeds(broker.on_request(_put(2), None)) is True
        (entry,) = broker.health()
        assert entry["up"] is True
        assert entry["failures"] == 1
    finally:
        broker.stop()


def test_a_lane_that_keeps_raising_is_logged_once_not_per_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lane = _lane(tmp_path, "primary", raising=True)
    assert isinstance(lane, RaisingLane)
    broker = _broker(lane)
    try:
        with caplog.at_level(logging.WARNING, logger="medsecrets.audit"):
            for n in range(3):
                assert _succeeds(broker.on_request(_put(n), None)) is False
            lane.broken = False
            assert _succeeds(broker.on_request(_put(3), None)) is True
            lane.broken = True
            assert _succeeds(broker.on_request(_put(4), None)) is False
        said = [r.getMessage() for r in caplog.records if r.name == "medsecrets.audit"]
        assert said == [
            "audit device primary: queueing a record failed (RuntimeError): not written there",
            "audit device primary: queueing records again (3 refused while it failed)",
            "audit device primary: queueing a record failed (RuntimeError): not written there",
        ]
        (entry,) = broker.health()
        assert entry["failures"] == 4  # every refusal counts, logged or not
    finally:
        broker.stop()


def test_a_read_refused_for_a_raising_lane_is_not_recorded_there_as_served(
    tmp_path: Path,
) -> None:
    broker = _broker(FakeFailingSignerLane(tmp_path / "audit.jsonl"))
    try:
        request = _get(1)
        assert broker.on_request(request, None) is None
        assert _succeeds(broker.on_response(request, None, 200, None, 3)) is False  # a 503
        (entry,) = broker.health()
        assert entry["dropped"] == 2  # the pair, never written
    finally:
        broker.stop()
    # it wrote both records, the response saying version 3 was served (200): the log
    # said "not written there", and the client got 503 and no secret
    assert (tmp_path / "audit.jsonl").read_bytes() == b""
