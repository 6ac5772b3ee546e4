"""HttpForwarderDevice against a real HTTP receiver on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import base64
import datetime as dt
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from medsecrets.audit.device import ChainHead
from medsecrets.audit.forwarder import HttpForwarderDevice
from medsecrets.audit.record import GENESIS, AuditEvent, Salter, render_line
from medsecrets.audit.spool import DurableSpool, SpoolFullError
from medsecrets.errors import AuditFailure, ConfigError
from tests.support.peers import EndlessAnswer

WAIT = 15.0  # a safety net for a broken implementation, not a timing threshold
TOKEN = "tok-canary-7f3a9c1e"


def record_lines(count: int, start: int = 0, device: str = "siem") -> list[bytes]:
    """``count`` chained audit record lines (as the broker renders them for ``device``)."""
    salter = Salter(b"k" * 32)
    prev = GENESIS
    out = []
    for seq in range(start + 1, start + count + 1):
        event = AuditEvent(
            kind="request",
            time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            request_id=f"req-{seq}",
            principal="alice",
            token=TOKEN,
            operation="secrets.read",
            path="medessence/prod/db/main",
        )
        line, prev = render_line(event, seq=seq, prev=prev, node="n1", device=device, salter=salter)
        out.append(line)
    return out


class Receiver:
    """A SIEM stand-in: stores accepted POST bodies; can fail or refuse on demand."""

    def __init__(self, port: int = 0) -> None:
        self.batches: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.failures_left = 0
        self.failing_status = 500
        self.refusing = False
        self.rejected = 0
        self.max_body: int | None = None  # larger bodies are refused with 413
        self.too_large = 0
        self.condition = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.condition:
                    if receiver.max_body is not None and len(body) > receiver.max_body:
                        receiver.too_large += 1
                        status = 413
                    elif receiver.refusing or receiver.failures_left > 0:
                        receiver.failures_left = max(0, receiver.failures_left - 1)
                        receiver.rejected += 1
                        status = receiver.failing_status
                    else:
                        receiver.batches.append(body)
                        receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                        status = 204
                    receiver.condition.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ingest"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def lines(self) -> list[bytes]:
        with self.condition:
            return b"".join(self.batches).splitlines(keepends=True)

    def wait_for(self, predicate: Callable[[], bool]) -> None:
        with self.condition:
            assert self.condition.wait_for(predicate, WAIT), "receiver never saw it"

    def wait_lines(self, count: int) -> None:
        self.wait_for(lambda: b"".join(self.batches).count(b"\n") >= count)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def make_device(tmp_path: Path) -> Iterator[Callable[..., HttpForwarderDevice]]:
    made: list[HttpForwarderDevice] = []

    def make(url: str, **options: object) -> HttpForwarderDevice:
        settings: dict[str, object] = {
            "spool_dir": tmp_path / "spool",
            "spool_max_bytes": 1 << 20,
            "flush_interval": 0.02,
            "backoff_initial": 0.01,
            "backoff_max": 0.05,
            **options,
        }
        device = HttpForwarderDevice("siem", url=url, **settings)  # type: ignore[arg-type]
        made.append(device)
        return device

    yield make
    for device in made:
        device.close()


def eventually(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` until true (``WAIT`` is only a safety net)."""
    stop = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        if predicate():
            return
        stop.wait(0.01)
    raise AssertionError("condition never became true")


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://user:hunter2pw@127.0.0.1:{port}/ingest"


def test_every_record_delivered_once_in_order(
    receiver: Receiver, make_device: Callable[..., HttpForwarderDevice]
) -> None:
    device = make_device(receiver.url, batch_size=7, headers={"Authorization": "Splunk abc"})
    assert device.open() == ChainHead()
    sent = record_lines(100)
    for i in range(0, 100, 3):
        device.write(sent[i : i + 3])
    receiver.wait_lines(100)
    assert receiver.lines() == sent
    assert all(b.count(b"\n") <= 7 for b in receiver.batches)
    assert {h["content-type"] for h in receiver.headers} == {"application/x-ndjson"}
    assert {h["authorization"] for h in receiver.headers} == {"Splunk abc"}
    device.close()
    assert receiver.lines() == sent
    assert TOKEN.encode() not in b"".join(receiver.batches)


def test_server_errors_are_retried_and_nothing_is_lost(
    receiver: Receiver, make_device: Callable[..., HttpForwarderDevice]
) -> None:
    receiver.failures_left = 6
    device = make_device(receiver.url, batch_size=5)
    device.open()
    sent = record_lines(40)
    for i in range(0, 40, 4):
        device.write(sent[i : i + 4])
    receiver.wait_lines(40)
    device.close()
    assert receiver.rejected == 6
    assert receiver.lines() == sent
    health = device.health()
    assert health["last_error"] == "HTTP 500"
    assert health["consecutive_failures"] == 0
    assert health["delivered"] == 40
    assert health["last_success_at"] is not None


def test_receiver_down_spools_until_full_then_restart_delivers(
    tmp_path: Path, make_device: Callable[..., HttpForwarderDevice]
) -> None:
    alarms: list[str] = []
    down = make_device(closed_port_url(), spool_max_bytes=16_384, on_overflow=alarms.append)
    down.open()
    accepted: list[bytes] = []
    sent = record_lines(200)
    refused = 0
    for line in sent:
        try:
            down.write([line])
        except SpoolFullError:
            refused += 1
        else:
            assert refused == 0, "a write was accepted after the spool filled"
            accepted.append(line)
    assert 0 < len(accepted) < len(sent)
    assert refused == len(sent) - len(accepted)
    assert len(alarms) == 1
    assert "spool" in alarms[0]
    assert "hunter2pw" not in alarms[0]
    assert b"req-" not in alarms[0].encode()
    health = down.health()
    assert health["pending"] == len(accepted)
    assert health["overflowing"] is True
    assert "hunter2pw" not in repr(down) + repr(health)
    down.close()

    receiver = Receiver()
    try:
        up = make_device(receiver.url)
        up.open()
        receiver.wait_lines(len(accepted))
        up.close()
        assert receiver.lines() == accepted
    finally:
        receiver.stop()


def test_connection_errors_are_reported_by_kind(
    make_device: Callable[..., HttpForwarderDevice],
) -> None:
    device = make_device(closed_port_url())
    device.open()
    device.write(record_lines(1))
    eventually(lambda: device.health()["last_error"] is not None)
    assert device.health()["last_error"] == "ConnectError"


def test_overflow_alarm_once_per_episode(
    receiver: Receiver, make_device: Callable[..., HttpForwarderDevice]
) -> None:
    alarms: list[str] = []
    receiver.refusing = True
    receiver.failing_status = 503
    device = make_device(receiver.url, spool_max_bytes=8192, on_overflow=alarms.append)
    device.open()

    def fill() -> None:
        for _ in range(5):
            with pytest.raises(SpoolFullError):
                for line in record_lines(100):
                    device.write([line])

    fill()
    assert len(alarms) == 1
    with receiver.condition:
        receiver.refusing = False
    eventually(lambda: device.health()["pending"] == 0)
    device.write(record_lines(1))  # accepted: the episode is over
    assert device.health()["overflowing"] is False
    with receiver.condition:
        receiver.refusing = True
    fill()
    assert len(alarms) == 2


def test_close_ships_what_is_pending(
    receiver: Receiver, make_device: Callable[..., HttpForwarderDevice]
) -> None:
    device = make_device(receiver.url, flush_interval=3600.0)
    device.open()
    sent = record_lines(30)
    device.write(sent)
    device.close()
    assert receiver.lines() == sent
    device.close()


def test_credentials_in_url_are_used_but_never_shown(
    receiver: Receiver, make_device: Callable[..., HttpForwarderDevice]
) -> None:
    url = receiver.url.replace("http://", "http://siem:s3cretpw@")
    device = make_device(url)
    device.open()
    device.write(record_lines(2))
    receiver.wait_lines(2)
    expected = "Basic " + base64.b64encode(b"siem:s3cretpw").decode()
    assert receiver.headers[0]["authorization"] == expected
    assert "s3cretpw" not in repr(device) + repr(device.health())


def test_write_before_open_is_refused(make_device: Callable[..., HttpForwarderDevice]) -> None:
    device = make_device("http://127.0.0.1:9/x")
    with pytest.raises(AuditFailure, match="not open"):
        device.write(record_lines(1))


@pytest.mark.parametrize(
    ("url", "options", "setting"),
    [
        ("ftp://siem.example/x", {}, "url"),
        ("not a url", {}, "url"),
        ("http://siem.example/x", {"batch_size": 0}, "batch_size"),
        ("http://siem.example/x", {"timeout": 0}, "timeout"),
        ("http://siem.example/x", {"backoff_max": 0.001}, "backoff_max"),
    ],
)
def test_bad_settings_are_named(
    tmp_path: Path, url: str, options: dict[str, object], setting: str
) -> None:
    settings: dict[str, object] = {"spool_dir": tmp_path, "spool_max_bytes": 1024, **options}
    with pytest.raises(ConfigError, match=setting):
        HttpForwarderDevice("siem", url=url, **settings)  # type: ignore[arg-type]


@pytest.fixture
def endless() -> Iterator[EndlessAnswer]:
    server = EndlessAnswer(drip=False)
    yield server
    server.stop()


@pytest.fixture
def drip() -> Iterator[EndlessAnswer]:
    server = EndlessAnswer(drip=True)
    yield server
    server.stop()


def test_an_endless_answer_is_read_only_in_part(
    endless: EndlessAnswer, make_device: Callable[..., HttpForwarderDevice]
) -> None:
    device = make_device(endless.url)
    device.open()
    device.write(record_lines(3))
    eventually(lambda: device.health()["delivered"] == 3)  # 2xx: delivered, the rest unread
    assert device.health()["pending"] == 0


def test_a_dripping_answer_fails_at_the_deadline(
    drip: EndlessAnswer, make_device: Callable[..., HttpForwarderDevice]
) -> None:
    device = make_device(drip.url, timeout=0.3)
    device.open()
    device.write(record_lines(3))
    eventually(lambda: device.health()["consecutive_failures"] >= 2)  # type: ignore[operator]
    health = device.health()
    assert health["last_error"] == "Timeout"
    assert health["pending"] == 3
    assert drip.posts >= 2  # retried, not stalled on the first answer


def test_close_cuts_a_post_in_flight(
    drip: EndlessAnswer, make_device: Callable[..., HttpForwarderDevice]
) -> None:
    device = make_device(drip.url, timeout=3.0)
    device.open()
    device.write(record_lines(2))
    assert drip.posted.wait(WAIT)
    device.close()
    assert not [t for t in threading.enumerate() if t.name == "audit-forwarder-siem"]


def test_batches_are_capped_in_bytes(
    receiver: Receiver, make_device: Callable[..., HttpForwarderDevice]
) -> None:
    sent = record_lines(30)
    cap = len(sent[0]) * 3 + 10
    device = make_device(receiver.url, flush_interval=3600.0, batch_max_bytes=cap)
    device.open()
    device.write(sent)
    device.close()
    assert receiver.lines() == sent
    assert all(len(batch) <= cap for batch in receiver.batches)


def test_413_halves_the_batch_until_it_fits(
    receiver: Receiver, make_device: Callable[..., HttpForwarderDevice]
) -> None:
    sent = record_lines(40)
    receiver.refusing = True
    receiver.failing_status = 503
    device = make_device(receiver.url, batch_size=40)
    device.open()
    device.write(sent)  # one batch of 40 waits for the SIEM
    receiver.wait_for(lambda: receiver.rejected >= 1)
    with receiver.condition:
        receiver.max_body = len(sent[0]) * 6
        receiver.refusing = False
    receiver.wait_lines(40)
    assert receiver.lines() == sent
    assert receiver.too_large >= 1
    assert all(len(batch) <= len(sent[0]) * 6 for batch in receiver.batches)
    eventually(lambda: device.health()["pending"] == 0)


def test_a_record_refused_alone_with_413_is_dropped_with_an_alarm(
    receiver: Receiver, make_device: Callable[..., HttpForwarderDevice]
) -> None:
    small = record_lines(3)
    big = small[1][:-2] + b',"pad":"' + b"p" * 4096 + b'"}\n'
    receiver.max_body = 2048
    alarms: list[str] = []
    device = make_device(receiver.url, on_overflow=alarms.append)
    device.open()
    device.write([small[0], big, small[2]])
    receiver.wait_lines(2)
    eventually(lambda: device.health()["delivered"] == 2)
    assert receiver.lines() == [small[0], small[2]]
    health = device.health()
    assert health["dropped"] == 1
    assert health["pending"] == 0
    assert len(alarms) == 1
    assert "413" in alarms[0]
    assert "dropped" in alarms[0]
    assert b"req-" not in alarms[0].encode()
    device.write(record_lines(1, start=3))  # shipping goes on
    receiver.wait_lines(3)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, check=True)  # fmt: skip
    return int(done.stdout)


def spool_with(directory: Path, lines: list[bytes]) -> None:
    spool = DurableSpool(directory, max_bytes=1 << 20)
    spool.append(lines)
    spool.close()


def test_spools_left_by_earlier_workers_are_shipped_then_removed(
    tmp_path: Path, receiver: Receiver, make_device: Callable[..., HttpForwarderDevice]
) -> None:
    base = tmp_path / "spool"
    gone, held, other = dead_pid(), dead_pid(), dead_pid()
    left = record_lines(6)
    spool_with(base, left[:3])  # a single-process run before
    spool_with(tmp_path / f"spool-{gone}", left[3:])  # a worker of a run before
    spool_with(tmp_path / f"spool-{held}", record_lines(2, start=100))
    holder = DurableSpool(tmp_path / f"spool-{held}", max_bytes=1 << 20)  # in use
    spool_with(tmp_path / f"spool-{other}", record_lines(2, start=200, device="other"))
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        spool_with(tmp_path / f"spool-{sibling.pid}", record_lines(2, start=300))  # live worker
        (tmp_path / "spool-x1").mkdir()  # not a sibling's name
        device = make_device(receiver.url, spool_dir=tmp_path / f"spool-{os.getpid()}")
        device.open()
        mine = record_lines(2, start=400)
        device.write(mine)
        receiver.wait_lines(8)
        eventually(lambda: device.health()["pending"] == 0)
        assert receiver.lines() == left + mine
        assert not base.exists()
        assert not (tmp_path / f"spool-{gone}").exists()
        assert holder.pending() == 2
        for untouched in (other, sibling.pid):
            again = DurableSpool(tmp_path / f"spool-{untouched}", max_bytes=1 << 20)
            assert again.pending() == 2
            again.close()
    finally:
        sibling.kill()
        sibling.wait()
        holder.close()


def test_a_delivered_batch_that_cannot_be_acknowledged_is_not_sent_again(
    tmp_path: Path, receiver: Receiver, make_device: Callable[..., HttpForwarderDevice]
) -> None:
    spool_with(tmp_path / "spool", [])
    blocker = tmp_path / "spool" / "cursor.tmp"
    blocker.mkdir()  # the cursor cannot be replaced: every acknowledgement fails
    device = make_device(receiver.url)
    device.open()
    sent = record_lines(4)
    device.write(sent)
    receiver.wait_lines(4)
    eventually(lambda: device.health()["consecutive_failures"] >= 3)  # type: ignore[operator]
    health = device.health()
    assert health["last_error"] == "SpoolError"
    assert health["pending"] == 4
    assert health["delivered"] == 0
    assert receiver.lines() == sent  # once: only the acknowledgement is retried
    blocker.rmdir()
    eventually(lambda: device.health()["delivered"] == 4)
    assert device.health()["consecutive_failures"] == 0
    assert device.health()["pending"] == 0
    assert receiver.lines() == sent


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_a_plain_http_url_is_never_sent_through_a_proxy_of_the_environment(
    receiver: Receiver,
    make_device: Callable[..., HttpForwarderDevice],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    """Plain http is allowed only to a loopback SIEM, so that the records and the header
    credentials never leave the host in clear; a proxy named in the server's environment
    (httpx honours them) got both, and may be on another host."""
    proxy = Receiver()
    try:
        monkeypatch.setenv(variable, proxy.url.removesuffix("/ingest"))
        device = make_device(receiver.url, headers={"Authorization": f"Splunk {TOKEN}"})
        device.open()
        device.write(record_lines(2))
        receiver.wait_lines(2)
        assert {h["authorization"] for h in receiver.headers} == {f"Splunk {TOKEN}"}
        assert proxy.batches == [] and proxy.rejected == 0
    finally:
        proxy.stop()
