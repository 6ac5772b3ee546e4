"""A broken or hostile audit process: the server's ``RemoteLane`` fails closed.

The audit process here is a FAKE (``FAKE_AUDIT_PROCESS``, a real child process
started by ``RemoteLane`` in place of ``python -m medsecrets.audit.sidecar``): it
answers the handshake as the real one does, then answers every events message
the way its mode says (a frame that is not a message, a frame over the limit,
malformed acks, answers for items never sent, answers out of order, a malformed
refusal, no answer at all, an exit). Whatever it sends, every waiter is answered
(no) at once or by the watchdog, the log names what it sent, and a new process is
started.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
import time
from pathlib import Path

import pytest

from medsecrets.audit.record import AuditEvent
from medsecrets.audit.remote import RemoteLane
from medsecrets.audit.sidecar import LaneConfig
from medsecrets.audit.waiter import Waiter
from medsecrets.errors import AuditFailure, ConfigError
from tests.audit.test_remote_lane import _wait_all

FAKE_AUDIT_PROCESS = r"""
import os, struct, sys
from medsecrets.audit.channel import FrameReader, encode

MODE = {mode!r}
reader = FrameReader(0)

def send(message):
    os.write(1, encode(message))

reader.read()  # the config
if MODE == "exit-at-once":
    sys.exit(0)
send(("ready", 0))
if MODE == "exit":
    sys.exit(0)
STATS = (True, False, 0, 0, 0, 0, None, 0, 0)
held = []
while True:
    try:
        messages = reader.read()
    except EOFError:
        sys.exit(0)
    for message in messages:
        if message[0] != "events":
            continue
        first, items = message[1], message[2]
        numbers = [first + at for at, item in enumerate(items) if item[0]]
        if MODE == "garbage":
            os.write(1, struct.pack("<I", 4) + b"\xff\xfe\xfd\xfc")
        elif MODE == "oversized":
            os.write(1, struct.pack("<I", 0xFFFFFFF0))
        elif MODE == "big":  # under the channel's limit, over the one for answers
            os.write(1, struct.pack("<I", 64 << 20) + b"\0" * 4096)
        elif MODE == "bad-stats":
            send(("acks", [(n, True) for n in numbers], ("x",) * 12))
        elif MODE == "never-sent":
            send(("acks", [(n + 1000, True) for n in numbers], STATS))
        elif MODE == "bad-refused":
            send(("refused", 5))
        elif MODE == "out-of-order":
            held += numbers
            if len(held) >= 2:
                send(("acks", [(n, True) for n in reversed(held)], STATS))
                held = []
"""


def _fake(tmp_path: Path, mode: str) -> str:
    """An executable that runs the fake audit process in ``mode`` (its arguments ignored)."""
    script = tmp_path / f"fake-audit-process-{mode}"
    script.write_text(f"#!{sys.executable}\n" + FAKE_AUDIT_PROCESS.format(mode=mode))
    script.chmod(0o755)
    return str(script)


def _lane(tmp_path: Path, mode: str) -> RemoteLane:
    config = LaneConfig(
        name="file", path=str(tmp_path / "audit.jsonl"), node="n1", max_bytes=0, timeout=1.0
    )
    return RemoteLane(
        config, key_material=lambda name: (b"k" * 32, b"s" * 32), python=_fake(tmp_path, mode)
    )


def _event(number: int) -> AuditEvent:
    return AuditEvent(
        kind="request",
        time=dt.datetime.now(dt.UTC),
        request_id=f"req-{number}",
        operation="secrets.read",
        path="medessence/development/auth",
    )


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        ("garbage", "a frame that is not a message"),
        ("oversized", "frame of 4294967280 bytes is over the"),
        ("big", "frame of 67108864 bytes is over the 16777216-byte limit"),
        ("bad-stats", "malformed stats"),
        ("never-sent", "an answer for item 1001 never sent"),
        ("bad-refused", "a malformed refused message"),
        ("out-of-order", "an answer for item 1 out of order"),
    ],
)
def test_a_protocol_breach_fails_every_waiter_at_once_and_says_what_it_was(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str, said: str
) -> None:
    """Before, a malformed acks message left the waiters it named unanswered for good
    (taken from the waiting list, then the stats raised in the reader), answers for
    items never sent or out of order were taken as progress, and a garbage frame was
    logged as 'audit-process-exited'."""
    lane = _lane(tmp_path, mode)
    lane.start()
    try:
        waiters = [Waiter(1, timeout=10) for _ in range(2)]  # (a backstop: no watchdog here)
        for number, waiter in enumerate(waiters):
            lane.append(_event(number), waiter)
        assert _wait_all(waiters) == [False, False]
        assert lane.last_error == "protocol-error"
        assert not lane.up
        assert lane.dropped == 2  # sent to it, never reported written
    finally:
        lane.stop()
    assert f"audit process lost (protocol-error: {said}" in caplog.text
    assert "Traceback" not in caplog.text


def test_a_protocol_breach_on_the_attached_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lane = _lane(tmp_path, "never-sent")
    lane.start()

    async def go() -> None:
        lane.attach(asyncio.get_running_loop())
        waiter = Waiter(1)
        lane.append(_event(1), waiter)
        with pytest.raises(AuditFailure):
            await asyncio.wait_for(waiter.wait_async(), 10)

    try:
        asyncio.run(go())
    finally:
        lane.stop()
    assert lane.last_error == "protocol-error"
    assert "Exception in callback" not in caplog.text


def test_a_process_that_answers_nothing_is_refused_then_restarted(tmp_path: Path) -> None:
    lane = _lane(tmp_path, "silent")
    lane.start()
    try:
        first = lane._process
        waiter = Waiter(1)
        lane.append(_event(1), waiter)
        now = time.monotonic()
        lane.check_hung(now + 2.5)  # timeout 1 s + 1 s of grace
        assert _wait_all([waiter]) == [False] and lane.hung
        refused = Waiter(1)
        lane.append(_event(2), refused)
        assert _wait_all([refused]) == [False]  # refused at once while hung
        lane.check_hung(now + 2.5 + 3 * 2.0 + 0.1)  # still hung after three periods
        assert lane.last_error == "audit-process-stuck"
        assert first is not None and first.wait(10) is not None
    finally:
        lane.stop()


def test_a_process_that_exits_fails_closed_and_one_that_exits_at_once_stops_the_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with pytest.raises(ConfigError, match="exited at start"):
        _lane(tmp_path, "exit-at-once").start()
    lane = _lane(tmp_path, "exit")
    lane.start()
    try:
        deadline = time.monotonic() + 10
        while lane.last_error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lane.last_error == "audit-process-exited" and not lane.up
        waiter = Waiter(1)
        lane.append(_event(1), waiter)
        assert _wait_all([waiter]) == [False]
    finally:
        lane.stop()


class _Sleeps:
    """``time`` for ``audit.remote``, recording the restarter's waits (shortened)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(0.01)

    def monotonic(self) -> float:
        return time.monotonic()


def test_a_process_that_keeps_dying_at_once_is_restarted_ever_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The back-off doubled only for starts that failed: a process that started, then
    died at once (or at its first batch), was restarted every second for ever."""
    import medsecrets.audit.remote as remote

    clock = _Sleeps()
    monkeypatch.setattr(remote, "time", clock)
    lane = _lane(tmp_path, "exit")
    lane.start()
    try:
        deadline = time.monotonic() + 30
        while len(clock.waits) < 7:
            assert time.monotonic() < deadline, clock.waits
            time.sleep(0.01)
    finally:
        lane.stop()
    assert clock.waits[:7] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
