"""A file device written by an audit process (``RemoteLane``, ``audit.sidecar``, ``audit.channel``).

Real child processes, real files: the chain the audit process writes verifies
with its signed checkpoints, waiters are answered in a thread or on the
attached event loop, sealed records carry no HMACs, and the lane fails closed
when the audit process dies (then comes back) or stops answering.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from medsecrets.audit.channel import MAX_FRAME, FrameError, FrameReader, encode
from medsecrets.audit.checkpoint import CheckpointSigner
from medsecrets.audit.device import ChainHead
from medsecrets.audit.packed import (
    pack_completion,
    pack_event,
    unpack_completion,
    unpack_event,
)
from medsecrets.audit.record import AuditEvent, Completion, Salter
from medsecrets.audit.remote import RemoteLane
from medsecrets.audit.sidecar import LaneConfig
from medsecrets.audit.verify import verify_files
from medsecrets.audit.waiter import Waiter
from medsecrets.errors import AuditFailure, ConfigError

CANARY = "Canary-r3m0te-lane-7QxZ"
TOKEN = "tok-remote-lane-0123456789"
HMAC_KEY = b"r" * 32
SIGNER = CheckpointSigner.generate()
MATERIAL = (HMAC_KEY, SIGNER.private_bytes())


def _event(number: int, kind: str = "request") -> AuditEvent:
    return AuditEvent(
        kind=kind,  # type: ignore[arg-type]
        time=dt.datetime.now(dt.UTC),
        request_id=f"req-{number}",
        principal="svc",
        token=TOKEN,
        auth="token",
        remote="10.0.0.1",
        operation="secrets.write",
        path="medessence/development/auth",
        environment="development",
        category="auth",
        status=200 if kind == "response" else None,
        data={"fields": {"password": CANARY}},
    )


def _config(path: Path, **changes: object) -> LaneConfig:
    settings: dict[str, object] = {
        "name": "file",
        "path": str(path),
        "node": "n1",
        "max_bytes": 0,
        "timeout": 1.0,
        "checkpoint_every": 25,
    }
    settings.update(changes)
    return LaneConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture
def lane(tmp_path: Path) -> Iterator[RemoteLane]:
    remote = RemoteLane(_config(tmp_path / "audit.jsonl"), key_material=lambda name: MATERIAL)
    remote.start()
    yield remote
    remote.stop()


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _write(lane: RemoteLane, number: int) -> None:
    """Append event ``number`` and wait until it is durable."""
    waiter = Waiter(1)
    lane.append(_event(number), waiter)
    waiter.wait()


class _Barrier:
    """Key material as a barrier gives it: ``MATERIAL`` while unsealed, else ``None``."""

    def __init__(self, unsealed: bool) -> None:
        self.unsealed = unsealed

    def __call__(self, name: str) -> tuple[bytes, bytes] | None:
        return MATERIAL if self.unsealed else None


def _stopped(pid: int) -> None:
    """Wait until ``pid`` (sent SIGSTOP) is stopped."""
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert time.monotonic() < deadline, "the process did not stop"
        time.sleep(0.001)


def _wait_all(waiters: list[Waiter]) -> list[bool]:
    found = []
    for waiter in waiters:
        try:
            waiter.wait()
        except AuditFailure:
            found.append(False)
        else:
            found.append(True)
    return found


# -- the channel ---------------------------------------------------------------------------


def test_frames_round_trip_and_bad_frames_are_refused() -> None:
    messages = [("events", 1, [(True, (1, "a", None, b"\x00", 2.5))]), ("forget",)]
    read, write = os.pipe()
    os.write(write, b"".join(encode(m) for m in messages) + encode(("keys", b"k", b"s"))[:-1])
    os.close(write)
    reader = FrameReader(read)
    assert reader.read() == messages
    with pytest.raises(EOFError):  # the torn last frame
        reader.read()
    os.close(read)
    with pytest.raises(FrameError):
        encode(("events", object()))
    read, write = os.pipe()
    os.write(write, (MAX_FRAME + 1).to_bytes(4, "little"))
    with pytest.raises(FrameError):
        FrameReader(read).read()
    os.close(read)
    os.close(write)


def test_frames_larger_than_the_read_buffer_arrive_whole() -> None:
    """The reader reuses one buffer for every read: frames spanning many reads, and
    several frames in one read, come out whole and in order."""
    messages = [("events", n, [(True, ("x" * n, n, None))]) for n in range(0, 400, 37)]
    data = b"".join(encode(m) for m in messages)
    read, write = os.pipe()
    os.set_blocking(read, False)
    reader = FrameReader(read, chunk=7)
    got: list[object] = []
    for at in range(0, len(data), 50):  # frames torn at every 50 bytes
        os.write(write, data[at : at + 50])
        for _ in range(8):  # 50 bytes take 8 reads of 7
            got.extend(reader.read_ready())
    assert got == messages
    os.close(write)
    with pytest.raises(EOFError):
        reader.read_ready()
    os.close(read)


def test_an_event_survives_packing() -> None:
    event = _event(7, "response")
    event.extra = {"alert": {"detector": "rate"}}
    assert unpack_event(pack_event(event)) == event
    done = Completion(dt.datetime.now(dt.UTC), 403, "permission_denied")
    assert unpack_completion(pack_completion(done)) == done


def test_an_exchange_is_two_adjacent_records_and_one_answer(lane: RemoteLane) -> None:
    waiters = []
    for number in range(40):
        waiter = Waiter(1)
        lane.append_exchange(
            _event(number), Completion(dt.datetime.now(dt.UTC), 200, None), waiter, notify=False
        )
        waiters.append(waiter)
    lane.append(_event(99), None, notify=False)  # a plain event after them, nobody waits
    assert lane.pending == 0  # sent at once, notify or not: the audit process batches
    lane.wake()
    assert _wait_all(waiters) == [True] * 40
    lane.stop()
    path = Path(lane.config.path)
    records = [r for r in _records(path) if r["kind"] != "checkpoint"]
    pairs = [(r["kind"], r["request_id"], r["status"], r["data"] is None) for r in records]
    expected = []
    for number in range(40):
        expected += [
            ("request", f"req-{number}", None, False),
            ("response", f"req-{number}", 200, True),
        ]
    assert pairs == [*expected, ("request", "req-99", None, False)]
    report = verify_files([path], public_key=SIGNER.public_key, start=ChainHead(), workers=0)
    assert report.ok, report.problem


# -- the audit process -------------------------------------------------------------------------


def test_the_chain_it_writes_verifies_and_holds_no_value(lane: RemoteLane) -> None:
    waiters = []
    for number in range(300):
        waiter = Waiter(1)
        lane.append(_event(number), waiter, notify=number % 40 == 39)
        waiters.append(waiter)
    lane.wake()
    assert _wait_all(waiters) == [True] * 300
    assert lane.up and lane.records >= 300 and lane.head.seq == lane.records
    lane.stop()
    path = Path(lane.config.path)
    report = verify_files([path], public_key=SIGNER.public_key, start=ChainHead(), workers=0)
    assert report.ok, report.problem
    assert report.records == 312  # 300 events and a checkpoint every 25 records
    data = path.read_bytes()
    assert CANARY.encode() not in data and TOKEN.encode() not in data
    request = _records(path)[0]
    assert request["accessor"] == Salter(HMAC_KEY).hash(TOKEN)


def test_records_written_while_sealed_carry_no_hmacs(tmp_path: Path) -> None:
    barrier = _Barrier(unsealed=False)
    lane = RemoteLane(_config(tmp_path / "audit.jsonl"), key_material=barrier)
    lane.start()
    try:
        _write(lane, 1)
        barrier.unsealed = True
        _write(lane, 2)
    finally:
        lane.stop()
    sealed_record, open_record = _records(tmp_path / "audit.jsonl")
    assert sealed_record["accessor"] is None
    assert sealed_record["data"] == "[not recorded: sealed]"
    assert open_record["accessor"] == Salter(HMAC_KEY).hash(TOKEN)


def test_waiters_are_answered_on_the_attached_loop(lane: RemoteLane) -> None:
    async def go() -> None:
        lane.attach(asyncio.get_running_loop())
        waiters = [Waiter(1) for _ in range(50)]
        for number, waiter in enumerate(waiters):
            lane.append(_event(number), waiter, notify=False)
        lane.wake()
        await asyncio.wait_for(asyncio.gather(*(w.wait_async() for w in waiters)), 10)

    asyncio.run(go())
    assert lane.records >= 50


def test_a_dead_audit_process_fails_closed_then_comes_back(lane: RemoteLane) -> None:
    _write(lane, 0)
    process = lane._process
    assert process is not None
    process.kill()
    process.wait()
    deadline = time.monotonic() + 5
    while lane.up and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not lane.up and lane.last_error == "audit-process-exited"
    assert lane.failures == 1  # the loss is a failure the metrics show
    refused = Waiter(1)
    lane.append(_event(1), refused)
    assert _wait_all([refused]) == [False]
    deadline = time.monotonic() + 10
    while not lane.up and time.monotonic() < deadline:  # restarted after a 1 s back-off
        time.sleep(0.05)
    assert lane.up
    assert lane.records == 1  # the counts outlive the process that made them
    again = Waiter(1)
    lane.append(_event(2), again)
    assert _wait_all([again]) == [True]
    assert lane.records == 2
    lane.stop()
    report = verify_files(
        [Path(lane.config.path)], public_key=SIGNER.public_key, start=ChainHead(), workers=0
    )
    assert report.ok, report.problem  # the new process continued the chain


def test_an_audit_process_that_stops_answering_fails_its_waiters(lane: RemoteLane) -> None:
    process = lane._process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        late = Waiter(1)
        appended = time.monotonic()  # (before the append: the lane's own time is no earlier)
        lane.append(_event(1), late)
        lane.check_hung(appended + 0.5)  # not late yet: timeout 1 s + 1 s grace
        assert late.result is None
        lane.check_hung(time.monotonic() + 3.0)
        assert _wait_all([late]) == [False]
        assert lane.hung and not lane.up
        assert lane.failures == 1  # the hang is a failure the metrics show
        lane.check_hung(time.monotonic() + 3.5)
        assert lane.failures == 1  # once per hang
        refused = Waiter(1)
        lane.append(_event(2), refused)
        assert _wait_all([refused]) == [False]  # refused at once while hung
        read = Waiter(1)  # a read refused at once: its record must not say it was served
        lane.append_exchange(_event(4), Completion(dt.datetime.now(dt.UTC), 200, None), read)
        assert _wait_all([read]) == [False]
    finally:
        os.kill(process.pid, signal.SIGCONT)
    deadline = time.monotonic() + 5  # its answers for the late events clear "hung"
    while lane.hung and time.monotonic() < deadline:
        time.sleep(0.01)
    answered = Waiter(1)
    lane.append(_event(3), answered)
    assert _wait_all([answered]) == [True]
    assert not lane.hung
    lane.stop()
    responses = [
        (r["status"], r["error"], r["outcome"])
        for r in _records(Path(lane.config.path))
        if r["kind"] == "response" and r["request_id"] == "req-4"
    ]
    assert responses == [(503, "audit_failure", "failure")]


def test_a_device_that_cannot_be_opened_stops_the_start(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    lane = RemoteLane(_config(blocker / "audit.jsonl"), key_material=lambda name: MATERIAL)
    with pytest.raises(ConfigError, match="audit device 'file'"):
        lane.start()


def test_records_in_flight_to_a_dead_audit_process_count_as_dropped(lane: RemoteLane) -> None:
    """Records the process was sent but never wrote are lost with it: counted, not hidden
    (before, only records still queued in the server were)."""
    _write(lane, 0)  # written and acknowledged: not lost
    process = lane._process
    assert process is not None
    assert lane.dropped == 0
    os.kill(process.pid, signal.SIGSTOP)  # it reads nothing more
    _stopped(process.pid)  # (kill returns before a process running elsewhere has stopped)
    for number in range(1, 11):  # nobody waits for these: they go out at once
        lane.append(_event(number))
    os.kill(process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while lane.up and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not lane.up
    assert lane.dropped == 10
    assert lane.records == 1


def test_a_full_backlog_fails_everything_and_starts_a_new_stream(tmp_path: Path) -> None:
    lane = RemoteLane(
        _config(tmp_path / "audit.jsonl"), key_material=lambda name: MATERIAL, max_backlog=4096
    )
    lane.start()
    try:
        _write(lane, 0)
        process = lane._process
        assert process is not None
        os.kill(process.pid, signal.SIGSTOP)  # it stops reading: the pipe fills
        waiters = []
        for number in range(1, 300):  # 20 KiB each: far more than the pipe holds
            event = _event(number)
            event.data = {"fields": {"blob": "x" * 20_000}}
            waiter = Waiter(1, timeout=10)
            lane.append(event, waiter)
            waiters.append(waiter)
        assert set(_wait_all(waiters)) == {False}  # every one answered, none forgotten
        assert lane.last_error == "backlog-full" and lane.dropped > 0
        deadline = time.monotonic() + 10
        while not lane.up and time.monotonic() < deadline:
            time.sleep(0.05)
        after = Waiter(1)
        lane.append(_event(5000), after)
        assert _wait_all([after]) == [True]
    finally:
        lane.stop()
    report = verify_files(
        [tmp_path / "audit.jsonl"], public_key=SIGNER.public_key, start=ChainHead(), workers=0
    )
    assert report.ok, report.problem  # no torn frame ever reached a process


def test_attaching_a_loop_while_the_process_restarts(lane: RemoteLane) -> None:
    process = lane._process
    assert process is not None
    process.kill()
    deadline = time.monotonic() + 5
    while lane.up and time.monotonic() < deadline:
        time.sleep(0.01)

    async def go() -> None:
        lane.attach(asyncio.get_running_loop())  # during the back-off: nothing to read yet
        while not lane.up:
            await asyncio.sleep(0.05)
        waiter = Waiter(1)
        lane.append(_event(1), waiter)
        await asyncio.wait_for(waiter.wait_async(), 10)

    asyncio.run(asyncio.wait_for(go(), 20))


def test_a_seal_makes_the_audit_process_forget_its_keys_at_the_next_tick(
    tmp_path: Path,
) -> None:
    barrier = _Barrier(unsealed=True)
    lane = RemoteLane(_config(tmp_path / "audit.jsonl"), key_material=barrier)
    lane.start()
    try:
        _write(lane, 1)
        assert lane._sent is MATERIAL
        barrier.unsealed = False
        lane.check_hung(time.monotonic())  # no event needed
        assert lane._sent is None
    finally:
        lane.stop()


def test_stop_fails_what_is_left_unanswered(lane: RemoteLane) -> None:
    process = lane._process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    waiter = Waiter(1)
    lane.append(_event(1), waiter)
    lane.stop(0.5)
    assert _wait_all([waiter]) == [False]
    assert process.poll() is not None


def test_a_full_queue_in_the_audit_process_refuses_items_by_number(tmp_path: Path) -> None:
    from medsecrets.audit.file import FileAuditDevice
    from medsecrets.audit.lane import Lane
    from medsecrets.audit.sidecar import _handle, _Keys

    keys = _Keys()
    lane = Lane(FileAuditDevice("file", tmp_path / "a.jsonl"), node="n1", keys=keys, max_pending=1)
    lane.start()
    try:
        done = Completion(dt.datetime.now(dt.UTC), 200, None)
        items = [(True, pack_event(_event(n)), pack_completion(done)) for n in range(3)]
        refused: list[int] = []
        _handle(("events", 5, items), lane, keys, refused)  # the writer is not woken
        assert refused == [6, 7]  # the first exchange filled the queue
        assert lane.dropped == 4
    finally:
        lane.stop()


def test_refusals_fail_their_waiters_but_are_not_progress(lane: RemoteLane) -> None:
    """A stuck audit process still refuses what it cannot queue: that must not clear the
    lane's hung state (only written batches do), or a stuck process would never be
    restarted."""
    waiter = Waiter(1)
    process = lane._process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)  # item 1 is sent at once but stays unanswered
    try:
        lane.append(_event(1), waiter)
        read_end, write_end = os.pipe()
        os.write(write_end, encode(("refused", [1])))
        lane._hung_since = 12.5  # as if its answers were overdue
        assert lane._answer(process, FrameReader(read_end))
        os.close(read_end)
        os.close(write_end)
        with pytest.raises(AuditFailure):
            waiter.wait()
        assert lane._hung_since == 12.5 and lane.hung
    finally:
        os.kill(process.pid, signal.SIGCONT)
    lane._hung_since = None


def test_an_audit_process_of_another_protocol_version_refuses_to_start(tmp_path: Path) -> None:
    """A server whose code was upgraded under it must not feed a new audit process frames
    of the old shape: the handshake names the mismatch and the process exits."""
    from medsecrets.audit.sidecar import PROTOCOL, run

    into, child_in = os.pipe()
    child_out, out = os.pipe()
    message = _config(tmp_path / "audit.jsonl").to_message()
    os.write(child_in, encode((*message[:2], PROTOCOL + 1)))
    os.close(child_in)
    try:
        assert run(into, out) == 2
        (answer,) = FrameReader(child_out).read()
    finally:
        for fd in (into, child_out, out):
            os.close(fd)
    assert answer[:2] == ("error", "protocol")
    assert "restart" in str(answer[2])
    assert not (tmp_path / "audit.jsonl").exists()  # nothing was opened


def test_the_audit_process_gets_none_of_the_servers_settings() -> None:
    from medsecrets.audit.remote import child_env

    environ = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "MEDSECRETS_STORAGE_DSN": "postgresql://u:Canary-dsn-pw@db/x",
        "PYTHONPATH": "/elsewhere",
        "AWS_SECRET_ACCESS_KEY": "Canary-aws",
    }
    assert child_env(environ) == {"PATH": "/usr/bin", "LANG": "C.UTF-8"}


# -- placement ------------------------------------------------------------------------------


def _threads_cpus(pid: int) -> set[frozenset[int]]:
    """The CPU sets of every thread of ``pid``."""
    return {
        frozenset(os.sched_getaffinity(int(task.name)))
        for task in Path(f"/proc/{pid}/task").iterdir()
    }


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs two CPUs to place a process on one of them",
)
def test_the_audit_process_and_its_restarts_run_on_the_given_cpus(tmp_path: Path) -> None:
    cpus = frozenset({max(os.sched_getaffinity(0))})
    lane = RemoteLane(
        _config(tmp_path / "audit.jsonl"), key_material=lambda name: MATERIAL, cpus=cpus
    )
    lane.start()
    try:
        _write(lane, 0)  # the writer thread is up: every thread inherited the set
        process = lane._process
        assert process is not None
        assert _threads_cpus(process.pid) == {cpus}
        process.kill()
        process.wait()
        deadline = time.monotonic() + 10
        while (lane._process is process or not lane.up) and time.monotonic() < deadline:
            time.sleep(0.05)
        _write(lane, 1)
        again = lane._process
        assert again is not None and again is not process
        assert _threads_cpus(again.pid) == {cpus}
    finally:
        lane.stop()
    assert frozenset(os.sched_getaffinity(0)) != cpus  # this process was left alone


def test_an_audit_process_that_cannot_be_placed_still_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lane = RemoteLane(
        _config(tmp_path / "audit.jsonl"),
        key_material=lambda name: MATERIAL,
        cpus=frozenset({100_000}),  # no such CPU: sched_setaffinity fails
    )
    lane.start()
    try:
        _write(lane, 0)
        assert lane.up and lane.records == 1
    finally:
        lane.stop()
    assert "cannot place the audit process on CPUs [100000]" in caplog.text


def test_records_are_answered_while_the_rest_of_a_frame_is_still_on_its_way(
    tmp_path: Path,
) -> None:
    """The server sends the rest of a frame the pipe did not take only when it appends
    again or reads answers: an audit process that waited for it before writing what it
    had rendered would stall both until the audit timeout."""
    import threading

    from medsecrets.audit.sidecar import run

    into, child_in = os.pipe()
    child_out, out = os.pipe()
    done = Completion(dt.datetime.now(dt.UTC), 200, None)
    many = [(True, pack_event(_event(n)), pack_completion(done)) for n in range(1, 121)]
    whole = encode(("events", 1, many))  # a few ms of rendering, under FLUSH_AT records
    torn = encode(("events", 121, [(True, pack_event(_event(121)), pack_completion(done))]))
    os.write(child_in, encode(_config(tmp_path / "audit.jsonl").to_message()))
    os.write(child_in, encode(("keys", *MATERIAL)))
    codes: list[int] = []
    serving = threading.Thread(target=lambda: codes.append(run(into, out)), daemon=True)
    serving.start()
    answers = FrameReader(child_out)
    assert answers.read()[0][0] == "ready"
    os.set_blocking(child_out, False)
    os.write(child_in, whole)
    time.sleep(0.001)  # (read by now, and being rendered)
    os.write(child_in, torn[:20])  # frame 121 only begun

    def acked(number: int) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for message in answers.read_ready():
                if message[0] == "acks" and (number, True) in message[1]:  # type: ignore[operator]
                    return
            time.sleep(0.01)
        pytest.fail(f"item {number} was not answered")

    try:
        acked(120)  # answered although frame 121 is incomplete
        os.write(child_in, torn[20:])
        acked(121)
    finally:
        os.close(child_in)
        serving.join(10)
        for fd in (into, child_out, out):
            os.close(fd)
    assert codes == [0]


def test_a_stop_as_soon_as_the_loss_shows_does_not_trip_over_the_restarter(
    lane: RemoteLane,
) -> None:
    """The server may stop the lane the moment a lost audit process shows (the loss is
    logged, the lane reads as down): the restarter it joins must already run. It was
    published before it was started, so such a stop raised 'cannot join thread before
    it is started' (the broker's stop then left the other lanes open; this test errored
    now and then under load in its teardown)."""
    import logging

    process = lane._process
    assert process is not None
    problems: list[BaseException] = []

    class StopOnLoss(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "audit process lost" in record.getMessage():
                try:
                    lane.stop(2.0)
                except BaseException as exc:
                    problems.append(exc)

    handler = StopOnLoss()
    logger = logging.getLogger("medsecrets.audit")
    logger.addHandler(handler)
    try:
        lane._lose(process, "audit-process-exited")
    finally:
        logger.removeHandler(handler)
    assert problems == []
    restarter = lane._restarter
    assert restarter is not None
    restarter.join(10)
    assert not restarter.is_alive() and lane._process is process  # stopped: no new process


def test_a_restart_refused_by_an_audit_process_of_another_version_is_logged_with_why(
    lane: RemoteLane, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Code upgraded under a running server, then the audit process restarted: the new
    one refuses the old protocol, and the server's log must say so (it said only
    'restarting the audit process failed (ConfigError)')."""
    import medsecrets.audit.sidecar as sidecar

    _write(lane, 1)
    monkeypatch.setattr(sidecar, "PROTOCOL", sidecar.PROTOCOL + 1)  # the server's side
    process = lane._process
    assert process is not None
    process.kill()
    deadline = time.monotonic() + 15
    while "restarting the audit process failed" not in caplog.text:
        assert time.monotonic() < deadline, "no restart was tried"
        time.sleep(0.05)
    lane.stop()
    assert not lane.up  # stays down: fail closed
    (line,) = [r.getMessage() for r in caplog.records if "restarting" in r.getMessage()][:1]
    assert "audit protocol" in line and "restart it" in line


def test_the_counts_read_while_a_loss_is_accounted_are_never_half_updated(
    lane: RemoteLane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The metrics (and the test above) read ``records``/``dropped`` from other threads:
    read in the middle of ``_lose`` they counted the dead process's records twice (its
    counts added to the lane's before its own were reset), or read it as down with its
    losses not counted yet (``test_records_in_flight_...`` polls ``up``, then checks
    ``dropped``). A reader in another thread, started from inside the accounting, must
    see the lane either all before or all after."""
    import threading

    import medsecrets.audit.remote as remote

    _write(lane, 0)
    process = lane._process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    for number in range(1, 4):
        lane.append(_event(number))  # framed, never reported done: lost with it
    seen: list[tuple[bool, int, int]] = []
    stats = remote._Stats

    def during(*args: object, **kwargs: object) -> object:  # _lose resets the stats, locked
        if "seq" in kwargs and not seen:
            probe = threading.Thread(
                target=lambda: seen.append((lane.up, lane.records, lane.dropped))
            )
            probe.start()
            probe.join(1.0)  # done at once if it reads without the lock (the defect)
        return stats(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(remote, "_Stats", during)
    lane._lose(process, "audit-process-exited")
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen in ([(True, 1, 0)], [(False, 1, 3)])  # down with its losses counted
    assert (lane.records, lane.dropped) == (1, 3)
