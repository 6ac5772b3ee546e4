"""Every refusal for want of an audit record is explained: the log says which device and
why (one line, no value), and the device's failure or drop count counts it.

Written after a loaded two-worker server was seen answering one read out of many with
503 ``audit_failure`` and nothing in its log; these are the refusals that used to say
nothing: a lane that raises while queueing a record (it reached the core as an
exception, which refuses the request silently), the blocking wait's backstop timeout,
and records the audit process refuses at once (its queue full). The audit process
refusing here is a FAKE (``FAKE_AUDIT_PROCESS``: a real child process in place of the
real one, which refuses only with 100,000 records queued).
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path

import pytest

from medsecrets.audit.broker import AuditBroker
from medsecrets.audit.checkpoint import CheckpointSigner
from medsecrets.audit.file import FileAuditDevice
from medsecrets.audit.lane import Lane
from medsecrets.audit.record import AuditEvent
from medsecrets.audit.remote import RemoteLane
from medsecrets.audit.sidecar import LaneConfig
from medsecrets.audit.waiter import Waiter
from medsecrets.core.request import Request
from medsecrets.errors import AuditFailure
from tests.support.audit_fakes import FakeFailingSignerLane

CANARY = "load-refusal-canary-9Kq2"
SIGNER = CheckpointSigner.generate()


def test_a_lane_that_raises_refuses_its_request_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lane = FakeFailingSignerLane(tmp_path / "audit.jsonl", message=f"signing failed near {CANARY}")
    broker = AuditBroker([lane], prefix="medessence", keys=lambda name: lane.keys)
    broker.start()
    try:
        request = Request(
            method="PUT",
            route="secrets.write",
            path="medessence/development/database",
            body={"fields": {"password": CANARY}},
            request_id="req-1",
        )
        with caplog.at_level(logging.ERROR, logger="medsecrets.audit"):
            ticket = broker.on_request(request, None)  # it used to raise (a silent 503)
        assert ticket is not None
        with pytest.raises(AuditFailure):
            ticket.wait()
        (entry,) = broker.health()
        assert entry["failures"] == 1
    finally:
        broker.stop()
    said = [r.getMessage() for r in caplog.records if r.name == "medsecrets.audit"]
    assert "audit device primary: queueing a record failed (RuntimeError)" in "\n".join(said)
    assert CANARY not in caplog.text


def test_the_blocking_waits_backstop_says_it_refused(caplog: pytest.LogCaptureFixture) -> None:
    waiter = Waiter(1, timeout=0.01)  # never answered: no lane was asked
    with caplog.at_level(logging.ERROR, logger="medsecrets.audit"), pytest.raises(AuditFailure):
        waiter.wait()
    assert "no device answered within 0.0 s: request refused" in caplog.text


FAKE_AUDIT_PROCESS = r"""
import os, sys
from medsecrets.audit.channel import FrameReader, encode

reader = FrameReader(0)
reader.read()  # the config
os.write(1, encode(("ready", 0)))
while True:
    try:
        messages = reader.read()
    except EOFError:
        sys.exit(0)
    for message in messages:
        if message[0] == "events":
            first, items = message[1], message[2]
            numbers = [first + at for at, item in enumerate(items) if item[0]]
            os.write(1, encode(("refused", numbers)))
"""


def test_records_the_audit_process_refuses_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = tmp_path / "fake-audit-process-refusing"
    script.write_text(f"#!{sys.executable}\n" + FAKE_AUDIT_PROCESS)
    script.chmod(0o755)
    config = LaneConfig(
        name="file", path=str(tmp_path / "audit.jsonl"), node="n1", max_bytes=0, timeout=1.0
    )
    lane = RemoteLane(
        config,
        key_material=lambda name: (b"k" * 32, SIGNER.private_bytes(), None),
        python=str(script),
    )
    lane.start()
    try:
        waiter = Waiter(1, timeout=30.0)  # a safety net: the refusal answers at once
        with caplog.at_level(logging.ERROR, logger="medsecrets.audit"):
            lane.append(_event(1), waiter)
            with pytest.raises(AuditFailure):
                waiter.wait()
    finally:
        lane.stop()
    assert "audit device file: the audit process refused 1 records" in caplog.text


def test_a_full_queue_says_so_once_each_time_it_fills(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lane = Lane(
        FileAuditDevice("primary", tmp_path / "audit.jsonl"),
        node="n1",
        keys=lambda name: None,
        max_pending=1,
        writer_thread=False,  # nothing writes until flush(): the queue stays full
    )
    lane.start()
    try:
        with caplog.at_level(logging.ERROR, logger="medsecrets.audit"):
            lane.append(_event(1))
            for number in (2, 3):
                waiter = Waiter(1)
                lane.append(_event(number), waiter)
                assert waiter.result is False  # refused at once
            assert lane.flush() is True
            lane.append(_event(4))
            lane.append(_event(5))
        full = [r for r in caplog.records if "queue full" in r.getMessage()]
        assert len(full) == 2  # once per filling, not once per refused record
        assert "audit device primary: queue full (1 records)" in full[0].getMessage()
        assert lane.dropped == 3
    finally:
        lane.stop()


def _event(number: int) -> AuditEvent:
    return AuditEvent(
        kind="request",
        time=dt.datetime.now(dt.UTC),
        request_id=f"req-{number}",
        operation="secrets.read",
        path="medessence/development/database",
    )
