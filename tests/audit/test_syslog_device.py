"""SyslogAuditDevice against real UDP, TCP and unix-datagram collectors on this host."""

from __future__ import annotations

import datetime as dt
import os
import queue
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from medsecrets.audit.device import ChainHead
from medsecrets.audit.record import (
    GENESIS,
    AuditEvent,
    Salter,
    body_digest,
    render_line,
    split_line,
)
from medsecrets.audit.syslog import SyslogAuditDevice
from medsecrets.clock import ManualClock
from medsecrets.errors import AuditFailure, ConfigError

WAIT = 10.0  # a safety net for a broken implementation, not a timing threshold
RFC5424 = re.compile(
    rb"<(?P<pri>\d{1,3})>1 (?P<time>\S+) (?P<host>\S+) (?P<app>\S+) (?P<proc>\S+) "
    rb"(?P<msgid>\S+) - (?P<msg>.*)",
    re.DOTALL,
)


def record_lines() -> list[bytes]:
    """A request, a response (with spaces in a field) and an alert record, chained."""
    salter = Salter(b"s" * 32)
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    events = [
        AuditEvent(kind="request", time=when, operation="secrets.read", user_agent="curl/8 (x)"),
        AuditEvent(kind="response", time=when, operation="secrets.read", status=200),
        AuditEvent(kind="alert", time=when, extra={"alert": {"detector": "rate"}}),
    ]
    prev, out = GENESIS, []
    for seq, event in enumerate(events, 1):
        line, prev = render_line(event, seq=seq, prev=prev, node="n1", device="sys", salter=salter)
        out.append(line)
    return out


class Collector:
    """A syslog collector in a thread: UDP, unix datagram, or TCP with octet counting."""

    def __init__(self, kind: str, path: Path | None = None) -> None:
        self.messages: queue.Queue[bytes] = queue.Queue()
        self.connections = 0
        self.drop_after_first = False
        self.stopping = threading.Event()
        if kind == "unix":
            assert path is not None
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(str(path))
            self.address = str(path)
        else:
            kind_ = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
            self.sock = socket.socket(socket.AF_INET, kind_)
            self.sock.bind(("127.0.0.1", 0))
            self.address = f"{kind}://127.0.0.1:{self.sock.getsockname()[1]}"
        self.sock.settimeout(0.05)  # lets the thread see ``stopping``
        if kind == "tcp":
            self.sock.listen()
            target = self._serve_tcp
        else:
            target = self._serve_datagrams
        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def _serve_datagrams(self) -> None:
        while not self.stopping.is_set():
            try:
                self.messages.put(self.sock.recv(1 << 17))
            except TimeoutError:
                continue

    def _serve_tcp(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            self.connections += 1
            self._read_frames(conn)

    def _read_frames(self, conn: socket.socket) -> None:
        """Octet-counted frames until EOF (or, if ``drop_after_first``, one frame)."""
        buffer = b""
        with conn:
            while chunk := conn.recv(65536):
                buffer += chunk
                while (space := buffer.find(b" ")) > 0:
                    end = space + 1 + int(buffer[:space])
                    if len(buffer) < end:
                        break
                    message, buffer = buffer[space + 1 : end], buffer[end:]
                    if self.drop_after_first:
                        self.drop_after_first = False
                        conn.close()  # closed before the test sees the message
                        self.messages.put(message)
                        return
                    self.messages.put(message)
        assert buffer == b"", "a torn frame"

    def take(self, count: int) -> list[bytes]:
        return [self.messages.get(timeout=WAIT) for _ in range(count)]

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(WAIT)
        self.sock.close()


@pytest.fixture
def udp() -> Iterator[Collector]:
    c = Collector("udp")
    yield c
    c.close()


@pytest.fixture
def tcp() -> Iterator[Collector]:
    c = Collector("tcp")
    yield c
    c.close()


def check_message(raw: bytes, line: bytes, *, pri: int, msgid: bytes) -> None:
    match = RFC5424.fullmatch(raw)
    assert match is not None, raw[:80]
    assert int(match["pri"]) == pri
    assert match["time"] == b"2026-01-01T00:00:00.000000Z"
    assert match["host"] == b"node-1"
    assert match["app"] == b"medsecrets"
    assert int(match["proc"]) == os.getpid()
    assert match["msgid"] == msgid
    assert match["msg"] == line[:-1]
    _, _, digest = split_line(match["msg"])
    assert body_digest(match["msg"]) == digest


def test_udp_messages_are_rfc5424_with_the_record_as_msg(
    udp: Collector, clock: ManualClock
) -> None:
    device = SyslogAuditDevice("sys", address=udp.address, hostname="node-1", clock=clock)
    assert device.open() == ChainHead()
    lines = record_lines()
    device.write(lines)
    got = udp.take(3)
    auth = 4 * 8
    check_message(got[0], lines[0], pri=auth + 6, msgid=b"request")
    check_message(got[1], lines[1], pri=auth + 6, msgid=b"response")
    check_message(got[2], lines[2], pri=auth + 4, msgid=b"alert")
    device.close()
    device.close()


def test_tcp_uses_octet_counting_framing(tcp: Collector, clock: ManualClock) -> None:
    device = SyslogAuditDevice(
        "sys", address=tcp.address, facility="local3", hostname="node-1", clock=clock
    )
    device.open()
    lines = record_lines()
    for _ in range(5):
        device.write(lines)
    got = tcp.take(15)
    for raw, line in zip(got, lines * 5, strict=True):
        msgid = re.search(rb'"kind":"(\w+)"', line)
        assert msgid is not None
        pri = 19 * 8 + (4 if msgid[1] == b"alert" else 6)
        check_message(raw, line, pri=pri, msgid=msgid[1])
    device.close()


def test_tcp_reconnects_when_the_collector_closed_the_connection(
    tcp: Collector, clock: ManualClock
) -> None:
    device = SyslogAuditDevice("sys", address=tcp.address, hostname="node-1", clock=clock)
    device.open()
    lines = record_lines()
    tcp.drop_after_first = True
    device.write(lines[:1])
    assert tcp.take(1)[0].endswith(lines[0][:-1])
    device.write(lines[1:])
    got = tcp.take(2)
    assert [g.rsplit(b" - ", 1)[1] for g in got] == [line[:-1] for line in lines[1:]]
    assert tcp.connections == 2
    device.close()


def test_unix_datagram_socket(tmp_path: Path, clock: ManualClock) -> None:
    collector = Collector("unix", tmp_path / "log")
    try:
        for address in (collector.address, "unix://" + collector.address):
            device = SyslogAuditDevice("sys", address=address, hostname="node-1", clock=clock)
            device.open()
            lines = record_lines()
            device.write(lines)
            check_message(collector.take(3)[0], lines[0], pri=38, msgid=b"request")
            device.close()
    finally:
        collector.close()


def test_local_daemon_restart_is_survived(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "log"
    first = Collector("unix", path)
    device = SyslogAuditDevice("sys", address=str(path), hostname="node-1", clock=clock)
    device.open()
    lines = record_lines()
    device.write(lines[:1])
    assert len(first.take(1)) == 1
    first.close()
    path.unlink()
    second = Collector("unix", path)
    try:
        device.write(lines[1:])
        assert [m.rsplit(b" - ", 1)[1] for m in second.take(2)] == [x[:-1] for x in lines[1:]]
    finally:
        second.close()
        device.close()


def test_socket_errors_raise_audit_failure_then_recover(tmp_path: Path, clock: ManualClock) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    device = SyslogAuditDevice("sys", address=f"tcp://127.0.0.1:{port}", clock=clock)
    device.open()
    lines = record_lines()
    with pytest.raises(AuditFailure, match="syslog send failed") as caught:
        device.write(lines)
    assert b"prev" not in str(caught.value).encode()

    missing = SyslogAuditDevice("sys", address=str(tmp_path / "nope"), clock=clock)
    missing.open()
    with pytest.raises(AuditFailure):
        missing.write(lines)
    collector = Collector("unix", tmp_path / "nope")
    try:
        missing.write(lines)
        assert len(collector.take(3)) == 3
    finally:
        collector.close()
        missing.close()


def test_oversized_datagram_fails_rather_than_truncating(
    udp: Collector, clock: ManualClock
) -> None:
    device = SyslogAuditDevice("sys", address=udp.address, clock=clock)
    device.open()
    with pytest.raises(AuditFailure):
        device.write([b'{"big":"' + b"x" * 70_000 + b'"}\n'])
    device.close()


@pytest.mark.parametrize("kind", ["udp", "unix"])
def test_a_batch_with_an_oversized_record_sends_none_of_it(
    tmp_path: Path, clock: ManualClock, kind: str
) -> None:
    collector = Collector(kind, tmp_path / "log.sock")
    try:
        device = SyslogAuditDevice("sys", address=collector.address, clock=clock)
        device.open()
        first, _, last = record_lines()
        huge = b'{"big":"' + b"x" * 300_000 + b'"}\n'  # past any datagram
        with pytest.raises(AuditFailure, match="none of the batch was sent"):
            device.write([first, huge, last])
        device.write([last])
        sent = collector.take(1)[0]  # datagrams arrive in order: nothing came before
        assert sent.endswith(last[:-1])
        device.close()
    finally:
        collector.close()


def test_write_before_open_is_refused(udp: Collector) -> None:
    with pytest.raises(AuditFailure, match="not open"):
        SyslogAuditDevice("sys", address=udp.address).write(record_lines())


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"facility": "nope"}, "facility"),
        ({"tag": "has space"}, "tag"),
        ({"tag": ""}, "tag"),
        ({"address": "http://collector:514"}, "address"),
        ({"address": "udp://collector:notaport"}, "address"),
        ({"address": "udp://collector:0"}, "address"),
        ({"address": "tcp://collector:70000"}, "address"),
        ({"address": "relative/log"}, "address"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_bad_settings_are_named(options: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        SyslogAuditDevice("sys", **options)  # type: ignore[arg-type]
