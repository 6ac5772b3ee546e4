"""The shared monitor process under attack and in trouble.

Real monitor processes (``server.monitorprocess``) and real links; the hostile
peers are plain sockets of this test's user (the server's user), which pass
``SO_PEERCRED`` and so reach the cookie check and, with the cookie, the frames.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from medsecrets.audit.channel import Message, encode
from medsecrets.audit.packed import pack_event
from medsecrets.catalog import default_catalog
from medsecrets.monitor.detectors import DetectorConfig
from medsecrets.server import monitorprocess
from medsecrets.server.auditprocess import monitor_settings
from medsecrets.server.monitorlink import LinkAddress, MonitorLink
from medsecrets.server.monitorprocess import MonitorProcess
from medsecrets.testing.serverproc import ServerProcess
from tests.server.test_shared_monitor import Inbox, _link, _read, _wait
from tests.support.procs import ended


def _settings() -> dict[str, object]:
    return monitor_settings(default_catalog(), detectors=DetectorConfig(rate_limit=5))


@pytest.fixture
def patient(tmp_path: Path) -> Iterator[MonitorProcess]:
    """A monitor process that gives a connection 600 s to show its cookie."""
    process = MonitorProcess(
        _settings(), log_level="info", log_file=str(tmp_path / "m.log"), cookie_wait=600
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _connect(address: LinkAddress, first: bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)  # a safety net
    sock.connect(address.socket)
    sock.sendall(first)
    return sock


def _alert_through_a_link(address: LinkAddress, principal: str) -> None:
    inbox = Inbox()
    link = _link(address, inbox)
    try:
        for _ in range(6):
            link.submit(_read(principal))
        _wait(inbox.alerts, "the alert of a worker's reads")
    finally:
        link.stop()


def _packed(**change: object) -> tuple[object, ...]:
    fields = list(pack_event(_read("svc-hostile")))
    fields[5] = fields[17] = None
    names = {"seconds": 1, "micro": 2, "principal": 4, "status": 14, "kind": 0}
    for name, value in change.items():
        fields[names[name]] = value
    return tuple(fields)


HOSTILE: dict[str, Message] = {
    "time-overflow": ("events", [_packed(seconds=10**20)]),  # OverflowError in timedelta
    "time-past-9999": ("events", [_packed(seconds=10**12)]),
    "negative-microseconds": ("events", [_packed(micro=-1)]),
    "tuple-principal": ("events", [_packed(principal=("a", "tuple"))]),
    "text-status": ("events", [_packed(status="200")]),
    "unknown-kind": ("events", [_packed(kind="nonsense")]),
    "short-event": ("events", [_packed()[:-1]]),
    "string-event": ("events", ["x" * 19]),
    "short-key": ("keys", b"short"),  # Salter refuses a key under 32 bytes
    "forget-with-args": ("forget", "extra"),
}


@pytest.mark.parametrize("message", list(HOSTILE.values()), ids=list(HOSTILE))
def test_a_malformed_message_closes_that_connection_only(
    patient: MonitorProcess, message: Message
) -> None:
    first = patient.pid
    assert first is not None
    hostile = _connect(patient.address, patient.address.cookie + encode(message))
    assert hostile.recv(1) == b""  # the monitor closed it
    hostile.close()
    _alert_through_a_link(patient.address, "svc-after-hostile")
    assert patient.pid == first and patient.restarts == 0
    os.kill(first, 0)  # the same process, never ended (a dead one was reaped)


def test_a_connection_slow_with_its_cookie_holds_up_no_worker(
    patient: MonitorProcess,
) -> None:
    """Connections that show no cookie, or part of it, wait beside the workers: the
    monitor used to read each cookie for up to 2 s with every worker waiting."""
    silent = [_connect(patient.address, b"") for _ in range(3)]
    partial = _connect(patient.address, patient.address.cookie[:31])
    _alert_through_a_link(patient.address, "svc-beside-slow-peers")
    for sock in [*silent, partial]:  # still waiting for their cookie, not closed
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(1)
        sock.setblocking(True)
    partial.sendall(patient.address.cookie[31:] + encode(("forget",)))
    wrong = _connect(patient.address, b"y" * 32)
    assert wrong.recv(1) == b""
    for sock in [*silent, partial, wrong]:
        sock.close()


def test_a_connection_that_never_shows_its_cookie_is_closed(tmp_path: Path) -> None:
    process = MonitorProcess(_settings(), log_level="info", log_file=None, cookie_wait=0.1)
    process.start()
    try:
        silent = _connect(process.address, b"")
        assert silent.recv(1) == b""  # closed once its time was over
        silent.close()
    finally:
        process.stop()


def test_the_peer_credentials_read_an_unsigned_uid() -> None:
    raw = struct.pack("=iII", 4242, 3_000_000_000, 3_000_000_001)
    assert monitorprocess._CREDENTIALS.unpack(raw) == (4242, 3_000_000_000, 3_000_000_001)


def test_a_socket_it_cannot_listen_on_is_a_clear_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / ("d" * 120)  # AF_UNIX paths have at most 107 bytes
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    process = MonitorProcess(_settings(), log_level="info", log_file=None)
    with pytest.raises(RuntimeError, match=r"cannot listen on .*monitor\.sock"):
        process.start()
    assert list(deep.iterdir()) == []


def test_a_two_worker_server_whose_monitor_cannot_start_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    data = tmp_path / "data"
    env = {"MEDSECRETS_WORKERS": "2", "TMPDIR": str(deep)}
    server = ServerProcess(data, env=env, log_dir=tmp_path / "l")
    server.start(wait=False)
    try:
        assert server._process is not None
        code = server._process.wait(120)  # a safety net
    finally:
        server.stop()
    assert code != 0
    log = server.log_text()
    assert "cannot start the monitor process" in log
    assert "cannot listen on" in log
    assert "Traceback" not in log
    assert list(deep.iterdir()) == []  # no monitor directory left
    assert not [p for p in data.iterdir() if p.name.startswith(".seal-latch")]


_HOLDER = """
import sys, time
from medsecrets.catalog import default_catalog
from medsecrets.monitor.detectors import DetectorConfig
from medsecrets.server.auditprocess import monitor_settings
from medsecrets.server.monitorprocess import MonitorProcess
process = MonitorProcess(
    monitor_settings(default_catalog(), detectors=DetectorConfig()),
    log_level="info", log_file=None,
)
process.start()
print(process.pid, process.address.socket, flush=True)
time.sleep(600)
"""


def test_a_killed_server_leaves_no_monitor_directory(tmp_path: Path) -> None:
    """The monitor process removes its directory when the server's pipe closes, so a
    server killed by SIGKILL (which cannot clean up) leaves nothing in the temp dir."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER], stdout=subprocess.PIPE, cwd=tmp_path)
    try:
        assert holder.stdout is not None
        pid_text, path = holder.stdout.readline().decode().split()
        assert os.path.exists(path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    directory = os.path.dirname(path)
    _wait(lambda: not os.path.exists(directory), "the monitor directory removed")
    _wait(lambda: ended(int(pid_text)), "the monitor process ended")


def test_a_link_stopped_while_the_monitor_is_away_counts_what_it_never_sent(
    tmp_path: Path,
) -> None:
    nowhere = LinkAddress(str(tmp_path / "absent.sock"), b"c" * 32)
    link = MonitorLink(nowhere, material=lambda: None, on_message=Inbox())
    link.start()
    for _ in range(3):
        link.submit(_read("svc-never-sent"))
    link.stop()
    _wait(lambda: link.dropped == 3, "the unsent events counted")
    assert (link.submitted, link.dropped) == (3, 3)


def test_the_alerts_of_a_worker_that_is_gone_are_delivered_by_another(
    patient: MonitorProcess,
) -> None:
    """The worker whose events raised an alert cannot take it (it died after sending them:
    its connection is gone): another worker gets it to deliver and audit. It used to be
    lost, and the others, which had it as ``noted``, took a later alert with its detector
    and key for a duplicate of one delivered."""
    inbox = Inbox()
    other = _link(patient.address, inbox)
    try:
        _wait(lambda: other.connected, "the other worker connected")
        events = encode(("events", [_packed(principal="svc-gone") for _ in range(6)]))
        gone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        gone.connect(patient.address.socket)
        gone.shutdown(socket.SHUT_RD)  # it takes nothing more: a send to it fails (EPIPE)
        gone.sendall(patient.address.cookie + events)
        _wait(lambda: inbox.messages, "the alert at the other worker")
        assert [(m[0], [a["key"] for a in m[1]]) for m in inbox.messages] == [  # type: ignore[attr-defined]
            ("alerts", ["svc-gone"])
        ]
        gone.close()
    finally:
        other.stop()
