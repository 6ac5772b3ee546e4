"""The broker: group-committed lanes, tickets that fail closed, one chain per device."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from medsecrets.audit.broker import AuditBroker
from medsecrets.audit.checkpoint import CheckpointSigner, verify_checkpoint
from medsecrets.audit.device import ChainHead
from medsecrets.audit.file import FileAuditDevice
from medsecrets.audit.lane import DeviceKeys, Lane
from medsecrets.audit.record import (
    GENESIS,
    LARGE_DATA,
    MAX_DATA_DEPTH,
    MAX_DATA_VALUES,
    SEALED_DATA,
    AuditEvent,
    Salter,
    body_digest,
    split_line,
)
from medsecrets.audit.waiter import Waiter
from medsecrets.core.request import Request
from medsecrets.errors import AuditFailure, NotFoundError, SealedError

KEY = b"k" * 32


class ScriptedDevice:
    """A test device in memory: records what it accepted; can fail or hang on demand."""

    def __init__(self, name: str = "mem") -> None:
        self.name = name
        self.lines: list[bytes] = []
        self.batches = 0
        self.fail = False
        self.gate = threading.Event()
        self.gate.set()

    def open(self) -> ChainHead:
        return ChainHead()

    def write(self, lines: Sequence[bytes]) -> None:
        self.gate.wait()
        if self.fail:
            raise OSError("injected failure")
        self.lines.extend(lines)
        self.batches += 1

    def close(self) -> None:
        self.gate.set()


def keys(name: str) -> DeviceKeys:
    return DeviceKeys(salter=Salter(KEY))


def sealed_keys(name: str) -> DeviceKeys | None:
    return None


def lane(device: ScriptedDevice | FileAuditDevice, **kw: object) -> Lane:
    return Lane(device, node="n1", keys=kw.pop("keys", keys), timeout=0.3, **kw)  # type: ignore[arg-type]


@pytest.fixture
def started() -> Iterator[list[AuditBroker]]:
    brokers: list[AuditBroker] = []
    yield brokers
    for broker in brokers:
        broker.stop()


def make(started: list[AuditBroker], *lanes: Lane, **kw: object) -> AuditBroker:
    broker = AuditBroker(lanes, prefix="medessence", keys=keys, timeout=0.3, **kw)  # type: ignore[arg-type]
    broker.start()
    started.append(broker)
    return broker


def read(token: str = "tok-secret-value", **kw: object) -> Request:
    return Request(
        method=str(kw.pop("method", "GET")),
        route=str(kw.pop("route", "secrets.read")),
        path="medessence/production/database",
        token=token,
        remote="10.0.0.7",
        request_id=str(kw.pop("request_id", "r1")),
        **kw,  # type: ignore[arg-type]
    )


def check_chain(lines: Sequence[bytes]) -> None:
    prev, seq = GENESIS, 0
    for line in lines:
        p, s, h = split_line(line)
        assert (p, s) == (prev, seq + 1)
        assert body_digest(line) == h
        prev, seq = h, s


def test_request_and_response_records_are_chained_and_hmac_the_token(
    started: list[AuditBroker],
) -> None:
    device = ScriptedDevice()
    broker = make(started, lane(device))
    request = read()
    assert broker.on_request(request, None) is None  # a GET waits on its response
    ticket = broker.on_response(request, None, 200, None)
    assert ticket is not None
    ticket.wait()
    check_chain(device.lines)
    records = [json.loads(line) for line in device.lines]
    assert [r["kind"] for r in records] == ["request", "response"]
    assert records[1]["outcome"] == "success"
    assert records[0]["environment"] == "production"
    assert records[0]["category"] == "database"
    assert records[0]["accessor"] == Salter(KEY).hash("tok-secret-value")
    assert b"tok-secret-value" not in b"".join(device.lines)
    assert broker.hash("tok-secret-value") == ("mem", records[0]["accessor"])


def test_request_body_values_are_hmacd(started: list[AuditBroker]) -> None:
    device = ScriptedDevice()
    broker = make(started, lane(device))
    body = {"fields": {"password": "canary-Zq81-value"}}
    ticket = broker.on_request(read(method="PUT", route="secrets.write", body=body), None)
    assert ticket is not None
    ticket.wait()
    record = json.loads(device.lines[0])
    assert record["data"] == {"fields": {"password": Salter(KEY).hash("canary-Zq81-value")}}
    assert b"canary-Zq81-value" not in b"".join(device.lines)


def test_a_body_s_record_is_bounded(started: list[AuditBroker]) -> None:
    """Anyone who reaches the port sends a body, and a refused request is recorded too: a
    long key is hashed, and a body of many values (each a 77-character HMAC once recorded)
    or deeply nested is recorded as LARGE_DATA, so a record stays a few KiB."""
    salter = Salter(KEY)
    long_key = "k" * 200
    assert salter.salt({long_key: "v", "short": "w"}) == {
        salter.hash(long_key): salter.hash("v"),
        "short": salter.hash("w"),
    }
    assert salter.salt({"paths": [f"p{i}" for i in range(MAX_DATA_VALUES - 2)]}) != LARGE_DATA
    assert salter.salt({"paths": [f"p{i}" for i in range(MAX_DATA_VALUES)]}) == LARGE_DATA
    deep: object = "x"
    for _ in range(MAX_DATA_DEPTH + 1):
        deep = [deep]
    assert salter.salt(deep) == LARGE_DATA
    device = ScriptedDevice()
    broker = make(started, lane(device))
    bodies = [{"x" * (1 << 20): 1}, {f"k{i}": i for i in range(50_000)}]
    for body in bodies:
        request = read(method="PUT", route="secrets.write", body=body)
        broker.on_request(request, None)  # refused unauthenticated: recorded, no wait
        broker.on_response(request, None, 401, "unauthenticated")
    deadline = time.monotonic() + 5
    while len(device.lines) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert max(len(line) for line in device.lines) < 4096
    requests = [json.loads(line) for line in device.lines if b'"kind":"request"' in line]
    assert [r["data"] for r in requests][1] == LARGE_DATA


def test_errors_need_no_wait_but_are_recorded(started: list[AuditBroker]) -> None:
    device = ScriptedDevice()
    broker = make(started, lane(device))
    request = read()
    broker.on_request(request, None)
    assert broker.on_response(request, None, 403, "permission_denied") is None
    deadline = time.monotonic() + 5
    while len(device.lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert json.loads(device.lines[1])["outcome"] == "denied"


def test_a_failing_device_fails_the_ticket_and_the_chain_stays_whole(
    started: list[AuditBroker],
) -> None:
    device = ScriptedDevice()
    broker = make(started, lane(device))
    ok = broker.on_response(read(), None, 200, None)
    assert ok is not None
    ok.wait()
    device.fail = True
    failed = broker.on_response(read(), None, 200, None)
    assert failed is not None
    with pytest.raises(AuditFailure):
        failed.wait()
    assert broker.health()[0]["up"] is False
    device.fail = False
    again = broker.on_response(read(), None, 200, None)
    assert again is not None
    again.wait()
    check_chain(device.lines)  # the failed batch left no hole in the chain
    assert len(device.lines) == 2
    assert broker.health()[0]["up"] is True


def test_a_hung_device_times_out_and_recovers(started: list[AuditBroker]) -> None:
    device = ScriptedDevice()
    broker = make(started, lane(device))
    device.gate.clear()
    hung = broker.on_response(read(), None, 200, None)
    assert hung is not None
    with pytest.raises(AuditFailure):
        hung.wait()
    later = broker.on_response(read(), None, 200, None)  # appended while hung: refused at once
    assert later is not None
    with pytest.raises(AuditFailure):
        later.wait()
    assert broker.health()[0]["up"] is False
    assert broker.health()[0]["failures"] == 1  # the hang counts
    device.gate.set()
    deadline = time.monotonic() + 5
    while not broker.health()[0]["up"] and time.monotonic() < deadline:
        time.sleep(0.01)
    after = broker.on_response(read(), None, 200, None)
    assert after is not None
    after.wait()
    check_chain(device.lines)


def test_a_read_refused_while_its_device_hangs_is_recorded_as_refused(
    started: list[AuditBroker],
) -> None:
    """The client got 503 and no secret: the record must not say the read succeeded
    (who-read and the detectors would count a read nobody received)."""
    device = ScriptedDevice()
    broker = make(started, lane(device))
    device.gate.clear()
    first = broker.on_response(read(), None, 200, None)
    assert first is not None
    with pytest.raises(AuditFailure):
        first.wait()  # the device now hangs
    request = read(request_id="r-refused")
    broker.on_request(request, None)
    ticket = broker.on_response(request, None, 200, None)
    assert ticket is not None
    with pytest.raises(AuditFailure):
        ticket.wait()
    device.gate.set()
    deadline = time.monotonic() + 5
    while len(device.lines) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    records = [json.loads(line) for line in device.lines]
    refused = [r for r in records if r["request_id"] == "r-refused" and r["kind"] == "response"]
    assert [(r["status"], r["error"], r["outcome"]) for r in refused] == [
        (503, "audit_failure", "failure")
    ]


def test_async_wait_does_not_block_the_loop(started: list[AuditBroker]) -> None:
    """The device hangs while the loop ticks; the lane's timeout is long, so its watchdog
    cannot answer the ticket first on a machine slow to run the five ticks."""
    device = ScriptedDevice()
    broker = make(started, Lane(device, node="n1", keys=keys, timeout=30))

    async def main() -> int:
        ticks = 0
        device.gate.clear()
        ticket = broker.on_response(read(), None, 200, None)
        assert ticket is not None
        waiting = asyncio.ensure_future(ticket.wait_async())
        while not waiting.done() and ticks < 5:
            await asyncio.sleep(0.01)
            ticks += 1
        device.gate.set()
        await waiting
        return ticks

    assert asyncio.run(main()) == 5


def test_one_required_device_suffices_and_all_failing_refuses(started: list[AuditBroker]) -> None:
    a, b, c = ScriptedDevice("a"), ScriptedDevice("b"), ScriptedDevice("c")
    broker = make(started, lane(a), lane(b), lane(c, required=False))
    a.fail = True
    ticket = broker.on_response(read(), None, 200, None)
    assert ticket is not None
    ticket.wait()
    b.fail = True
    ticket = broker.on_response(read(), None, 200, None)
    assert ticket is not None
    with pytest.raises(AuditFailure):
        ticket.wait()
    deadline = time.monotonic() + 5
    while len(c.lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(c.lines) == 2  # the optional device still saw both


def test_no_device_refuses_all_but_health(started: list[AuditBroker]) -> None:
    broker = make(started)
    assert broker.on_request(Request(method="GET", route="sys.health"), None) is None
    with pytest.raises(AuditFailure):
        broker.on_request(read(), None)
    with pytest.raises(NotFoundError):
        broker.hash("x")


def test_sealed_records_omit_sensitive_data(started: list[AuditBroker]) -> None:
    device = ScriptedDevice()
    broker = make(started, lane(device, keys=sealed_keys))
    ticket = broker.on_request(
        read(method="POST", route="sys.unseal", body={"share": "word " * 20}), None
    )
    assert ticket is not None
    ticket.wait()
    record = json.loads(device.lines[0])
    assert record["data"] == SEALED_DATA
    assert record["accessor"] is None
    assert b"word" not in device.lines[0]


def test_hash_needs_the_keys(started: list[AuditBroker]) -> None:
    broker = AuditBroker(
        [lane(ScriptedDevice(), keys=sealed_keys)], prefix="medessence", keys=sealed_keys
    )
    with pytest.raises(SealedError):
        broker.hash("x")


def test_concurrent_writers_never_fork_the_chain_and_share_fsyncs(
    tmp_path: Path, started: list[AuditBroker]
) -> None:
    device = FileAuditDevice("file", tmp_path / "audit.jsonl")
    broker = make(started, lane(device))
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(100):
                request = read()
                broker.on_request(request, None)
                ticket = broker.on_response(request, None, 200, None)
                assert ticket is not None
                ticket.wait()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    broker.stop()
    lines = (tmp_path / "audit.jsonl").read_bytes().splitlines(keepends=True)
    assert len(lines) == 1600
    check_chain(lines)


def test_a_restarted_lane_continues_the_file_chain(tmp_path: Path) -> None:
    for _ in range(2):
        broker = AuditBroker(
            [lane(FileAuditDevice("file", tmp_path / "a.jsonl"))], prefix="medessence", keys=keys
        )
        broker.start()
        ticket = broker.on_response(read(), None, 200, None)
        assert ticket is not None
        ticket.wait()
        broker.stop()
    check_chain((tmp_path / "a.jsonl").read_bytes().splitlines(keepends=True))


def signing_keys(signer: CheckpointSigner) -> Callable[[str], DeviceKeys]:
    """A key source whose keys also sign checkpoints with ``signer``."""

    def keys(name: str) -> DeviceKeys:
        return DeviceKeys(
            salter=Salter(KEY),
            sign=lambda node, device, covers, covers_hash: signer.extra(
                node=node, device=device, covers=covers, covers_hash=covers_hash
            ),
        )

    return keys


def test_checkpoints_are_signed_every_n_records(started: list[AuditBroker]) -> None:
    signer = CheckpointSigner.generate()
    signing = signing_keys(signer)
    device = ScriptedDevice()
    broker = make(started, lane(device, keys=signing, checkpoint_every=4))
    for _ in range(4):
        ticket = broker.on_response(read(), None, 200, None)
        assert ticket is not None
        ticket.wait()
    records = [json.loads(line) for line in device.lines]
    checkpoints = [r for r in records if r["kind"] == "checkpoint"]
    assert checkpoints
    for cp in checkpoints:
        assert verify_checkpoint(cp, signer.public_key)
        covered = records[cp["seq"] - 2]
        assert (covered["seq"], covered["hash"]) == (cp["covers"], cp["covers_hash"])
    check_chain(device.lines)


def test_duplicate_device_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        AuditBroker([lane(ScriptedDevice()), lane(ScriptedDevice())], prefix="m", keys=keys)


def test_records_carry_the_event_time(started: list[AuditBroker]) -> None:
    device = ScriptedDevice()
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    broker = make(started, lane(device), now=lambda: when)
    ticket = broker.on_response(read(), None, 200, None)
    assert ticket is not None
    ticket.wait()
    assert json.loads(device.lines[0])["time"] == "2026-01-02T03:04:05.000000Z"


def test_a_thread_side_append_is_not_held_back_by_a_deferred_wake(
    started: list[AuditBroker],
) -> None:
    device = ScriptedDevice()
    broker = make(started, lane(device))
    failures: list[BaseException] = []

    def write_from_a_thread() -> None:
        try:
            ticket = broker.on_request(read(method="PUT", route="secrets.write"), None)
            assert ticket is not None
            ticket.wait()
        except BaseException as exc:
            failures.append(exc)

    async def main() -> None:
        broker.on_response(read(), None, 200, None)  # on the loop: the wake is deferred
        worker = threading.Thread(target=write_from_a_thread)
        worker.start()
        worker.join()  # the loop is blocked meanwhile: its deferred wake cannot run

    asyncio.run(main())
    assert not failures
    assert len(device.lines) == 2


class LostAckStorage:
    """A real SQLite storage whose next batch commits and then reports a failure."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.lose_next = False

    def batch(self, ops: Sequence[object]) -> object:
        result = self.inner.batch(ops)  # type: ignore[attr-defined]
        if self.lose_next:
            self.lose_next = False
            from medsecrets.errors import StorageError

            raise StorageError("connection lost after commit")
        return result

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_lost_commit_acknowledgement_does_not_wedge_the_database_device(
    tmp_path: Path, started: list[AuditBroker]
) -> None:
    from medsecrets.audit.database import DatabaseAuditDevice
    from medsecrets.storage.sqlite import SqliteStorage

    storage = LostAckStorage(SqliteStorage(tmp_path / "audit.db"))
    device = DatabaseAuditDevice("db", storage, node="n1")  # type: ignore[arg-type]
    broker = make(started, Lane(device, node="n1", keys=keys, timeout=0.3))
    first = broker.on_response(read(), None, 200, None)
    assert first is not None
    first.wait()
    storage.lose_next = True
    lost = broker.on_response(read(), None, 200, None)
    assert lost is not None
    with pytest.raises(AuditFailure):  # outcome unknown: refused
        lost.wait()
    for _ in range(3):
        after = broker.on_response(read(), None, 200, None)
        assert after is not None
        after.wait()
    check_chain(list(device.records()))


def test_a_deferred_burst_is_written_once_eager_batch_records_are_queued() -> None:
    """Appends that defer the wake still start a write when ``eager_batch`` records wait."""
    device = ScriptedDevice()
    writer = lane(device, eager_batch=4)
    writer.start()
    try:
        event = AuditEvent(kind="request", time=dt.datetime.now(dt.UTC), request_id="r")
        for _ in range(3):
            writer.append(event, notify=False)
        time.sleep(0.2)
        assert device.batches == 0  # below the threshold: waits for the caller's wake()
        waiter = Waiter(1, timeout=5)
        writer.append(event, waiter, notify=False)  # the fourth: the writer starts now
        waiter.wait()
        assert len(device.lines) == 4
        check_chain(device.lines)
    finally:
        writer.stop()


class _Fatal(BaseException):
    """Escapes the writer's ``except Exception``: its thread dies."""


class _DyingDevice(ScriptedDevice):
    def write(self, lines: Sequence[bytes]) -> None:
        raise _Fatal


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_writer_fails_async_waiters(started: list[AuditBroker]) -> None:
    """wait_async has no timer of its own: the watchdog answers for a dead writer thread."""
    broker = make(started, lane(_DyingDevice()))

    async def main() -> None:
        ticket = broker.on_response(read(), None, 200, None)
        assert ticket is not None
        await asyncio.wait_for(ticket.wait_async(), 5)

    with pytest.raises(AuditFailure):
        asyncio.run(main())
    later = broker.on_response(read(), None, 200, None)  # refused at once from now on
    assert later is not None
    with pytest.raises(AuditFailure):
        later.wait()
    assert broker.health()[0]["up"] is False


def test_a_read_is_one_exchange_its_records_adjacent_in_one_batch(
    started: list[AuditBroker],
) -> None:
    """A GET's request record is held until its response and both are queued together:
    one batch writes both, one ticket answers for both (a failed batch refuses the read,
    and its request record is never lost on its own)."""
    device = ScriptedDevice()
    other = ScriptedDevice("other")
    broker = make(started, lane(device), lane(other, required=False))
    request = read()
    assert broker.on_request(request, None) is None  # a GET waits at its response
    time.sleep(0.05)
    assert device.lines == []  # held, not queued
    device.fail = True
    ticket = broker.on_response(request, None, 200, None)
    assert ticket is not None
    with pytest.raises(AuditFailure):
        ticket.wait()
    device.fail = False
    again = read(request_id="r2")
    assert broker.on_request(again, None) is None
    fine = broker.on_response(again, None, 200, None)
    assert fine is not None
    fine.wait()
    assert device.batches == 1
    kinds = [(json.loads(line)["kind"], json.loads(line)["request_id"]) for line in device.lines]
    assert kinds == [("request", "r2"), ("response", "r2")]
    first, second = (json.loads(line) for line in device.lines)
    assert (first["status"], first["outcome"], second["status"]) == (None, None, 200)
    assert first["accessor"] == second["accessor"] is not None
    deadline = time.monotonic() + 5
    while len(other.lines) < 4 and time.monotonic() < deadline:  # the optional lane has both
        time.sleep(0.005)
    assert [json.loads(line)["request_id"] for line in other.lines] == ["r1", "r1", "r2", "r2"]


def test_an_exchange_stays_adjacent_when_a_checkpoint_is_due(
    started: list[AuditBroker],
) -> None:
    device = ScriptedDevice()
    broker = make(
        started, lane(device, keys=signing_keys(CheckpointSigner.generate()), checkpoint_every=3)
    )
    for number in range(7):
        request = read(request_id=f"r{number}")
        broker.on_request(request, None)
        ticket = broker.on_response(request, None, 200, None)
        assert ticket is not None
        ticket.wait()
    records = [json.loads(line) for line in device.lines]
    assert any(r["kind"] == "checkpoint" for r in records)
    exchanges = [r for r in records if r["kind"] != "checkpoint"]
    for first, second in zip(exchanges[::2], exchanges[1::2], strict=True):
        assert (first["kind"], second["kind"]) == ("request", "response")
        assert first["request_id"] == second["request_id"]
        assert second["seq"] == first["seq"] + 1  # nothing between them
    check_chain(device.lines)


def test_a_failed_batch_counts_its_records_as_dropped(started: list[AuditBroker]) -> None:
    device = ScriptedDevice()
    broker = make(started, lane(device))
    device.fail = True
    request = read()
    broker.on_request(request, None)
    ticket = broker.on_response(request, None, 200, None)
    assert ticket is not None
    with pytest.raises(AuditFailure):
        ticket.wait()
    assert broker.health()[0]["dropped"] == 2


def test_a_held_read_event_never_matches_another_request(started: list[AuditBroker]) -> None:
    """An entry left by a GET that got no response (a bug elsewhere) is not taken by the
    next request whose object happens to get the same ``id()``."""
    device = ScriptedDevice()
    broker = make(started, lane(device))
    stray = read(request_id="stray")
    broker.on_request(stray, None)
    other = read(request_id="other", method="POST", route="secrets.write")
    broker._open[id(other)] = broker._open.pop(id(stray))  # as if ``other`` reused the id
    broker.on_request(other, None)
    ticket = broker.on_response(other, None, 200, None)
    assert ticket is not None
    ticket.wait()
    kinds = [(json.loads(line)["request_id"], json.loads(line)["kind"]) for line in device.lines]
    assert kinds == [("other", "request"), ("other", "response")]
    assert broker._open == {}


def _plain_event(number: int) -> AuditEvent:
    return AuditEvent(kind="request", time=dt.datetime.now(dt.UTC), request_id=f"r{number}")


def test_a_lane_without_writer_thread_writes_when_flushed() -> None:
    device = ScriptedDevice()
    written: list[tuple[int, bool]] = []
    quiet = Lane(
        device,
        node="n1",
        keys=keys,
        writer_thread=False,
        on_written=lambda events, waiters, ok: written.append((len(events), ok)),
    )
    quiet.start()
    waiters = [Waiter(1) for _ in range(3)]
    for number, waiter in enumerate(waiters):
        quiet.append(_plain_event(number), waiter)  # notify: no thread to wake
    assert quiet.pending == 3 and device.lines == []
    assert all(waiter.result is None for waiter in waiters)
    assert quiet.flush() is True  # one batch, on this thread
    assert device.batches == 1 and len(device.lines) == 3
    assert [waiter.result for waiter in waiters] == [True, True, True]
    assert written == [(3, True)]
    assert quiet.flush() is None  # nothing queued
    quiet.append(_plain_event(3))
    device.fail = True
    assert quiet.flush() is False
    device.fail = False
    quiet.append(_plain_event(4))
    quiet.stop()  # writes what is queued
    assert device.batches == 2
    check_chain(device.lines)  # the failed batch left the chain, the rest continues it


def test_flush_is_only_for_a_lane_without_writer_thread() -> None:
    threaded = lane(ScriptedDevice())
    threaded.start()
    try:
        with pytest.raises(RuntimeError, match="writer thread"):
            threaded.flush()
    finally:
        threaded.stop()


def test_a_list_is_recorded_with_its_scope(started: list[AuditBroker]) -> None:
    """``metadata.list`` (enumeration) records its prefix as ``path`` and the environment
    and category it is limited to, so `audit search --path-prefix/--environment` finds it."""
    device = ScriptedDevice()
    broker = make(started, lane(device))
    asked = (
        {"prefix": ("medessence/production/database",)},
        {"prefix": ("medessence/prod",), "category": ("auth",)},
        {"environment": ("staging",), "category": ("database",)},
        {"prefix": ("x" * 5000,)},
    )
    for query in asked:
        request = Request(
            method="GET", route="metadata.list", path="", query=query, token=None,
            body=None, remote="127.0.0.1", user_agent="t", request_id="r",
        )  # fmt: skip
        broker.on_request(request, None)
        ticket = broker.on_response(request, None, 200, None)
        assert ticket is not None
        ticket.wait()
    responses = [json.loads(line) for line in device.lines if b'"kind":"response"' in line]
    scopes = [(r["path"], r["environment"], r["category"]) for r in responses]
    assert scopes == [
        ("medessence/production/database", "production", None),
        ("medessence/prod", None, "auth"),  # "prod" may be the start of "production"
        ("", "staging", "database"),
        ("x" * 512, None, None),
    ]


def test_the_monitor_sees_each_response_as_an_audit_event(started: list[AuditBroker]) -> None:
    """``on_event`` gets the response event (rebuilt from the packed exchange for a read):
    the request's facts, the response's status and the version served, no body."""
    seen: list[AuditEvent] = []
    when = dt.datetime(2026, 12, 6, 18, 40, 2, 123_456, tzinfo=dt.UTC)
    broker = make(started, lane(ScriptedDevice()), on_event=seen.append, now=lambda: when)
    request = read(request_id="r-read")
    broker.on_request(request, None)
    ticket = broker.on_response(request, None, 200, None, 4)
    assert ticket is not None
    ticket.wait()
    put = read(method="PUT", route="secrets.write", request_id="r-put", body={"a": "b"})
    waited = broker.on_request(put, None)
    assert waited is not None
    waited.wait()
    broker.on_response(put, None, 400, "invalid_request")
    assert [(e.kind, e.request_id, e.status, e.error, e.version) for e in seen] == [
        ("response", "r-read", 200, None, 4),
        ("response", "r-put", 400, "invalid_request", None),
    ]
    assert all(e.time == when and e.data is None for e in seen)
    assert seen[0].environment == "production" and seen[0].token == "tok-secret-value"
