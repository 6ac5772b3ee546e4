"""Alerts in flight to a worker that stops are delivered by another.

The shared monitor process keeps each ``alerts`` message until the worker it was
given to acknowledges it; when that worker's connection ends first (it stopped
with the alert unread in its socket), the alert goes to another connected worker,
which delivers it though it had it ``noted``. Real monitor process, real links,
real dispatchers with a webhook channel to a local HTTP receiver; the stopping
worker is a plain socket of the server's user that reads nothing.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from medsecrets.audit.channel import FrameReader, Message, encode
from medsecrets.monitor.channels import WebhookChannel
from medsecrets.monitor.dispatcher import AlertDispatcher
from medsecrets.server.auditprocess import AlertReceiver
from medsecrets.server.monitorlink import LinkAddress, MonitorLink
from medsecrets.server.monitorprocess import MonitorProcess
from medsecrets.testing.receivers import HttpReceiver
from tests.server.test_shared_monitor import KEY, Inbox, _link, _read, _wait
from tests.server.test_shared_monitor_hostile import _packed, _settings


@pytest.fixture
def monitor() -> Iterator[MonitorProcess]:
    process = MonitorProcess(_settings(), log_level="info", log_file=None)
    process.start()
    try:
        yield process
    finally:
        process.stop()


class Worker:
    """A worker's alert path, for real: link, receiver, dispatcher, webhook channel (its
    rate limit ``rate_per_minute``, its windows by ``clock``); without ``connect``, its
    link is started only by ``connect()``."""

    def __init__(
        self,
        address: LinkAddress,
        hook: HttpReceiver,
        *,
        rate_per_minute: int = 30,
        clock: Callable[[], float] = time.monotonic,
        connect: bool = True,
    ) -> None:
        channel = WebhookChannel(f"{hook.base}/alerts", secret=b"s" * 32)
        self.dispatcher = AlertDispatcher(
            [channel], backoff=0, rate_per_minute=rate_per_minute, clock=clock
        )
        self.dispatcher.start()
        self.receiver = AlertReceiver(self.dispatcher.raise_, self.dispatcher.note)
        self.link = MonitorLink(address, material=lambda: KEY, on_message=self.receiver)
        if connect:
            self.connect()

    def connect(self) -> None:
        self.link.start()

    def listed(self) -> list[dict[str, object]]:
        return self.dispatcher.recent()

    def stop(self) -> None:
        self.link.stop()
        self.dispatcher.stop()


def _stopping_worker(address: LinkAddress, principal: str) -> socket.socket:
    """A worker whose events raise an alert, which waits in its socket unread."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)  # a safety net
    sock.connect(address.socket)
    events = encode(("events", [_packed(principal=principal) for _ in range(6)]))
    sock.sendall(address.cookie + events)
    readable, _, _ = select.select([sock], [], [], 30)
    assert readable, "the alert never came"
    return sock


def test_an_alert_unread_by_a_worker_that_stops_is_delivered_by_another(
    monitor: MonitorProcess,
) -> None:
    with HttpReceiver() as hook:
        other = Worker(monitor.address, hook)
        try:
            _wait(lambda: other.link.connected, "the other worker connected")
            # the other worker must be admitted before the alert is raised, or it is not
            # told of it: its own alert first
            for _ in range(6):
                other.link.submit(_read("svc-admitted"))
            _wait(lambda: len(hook.requests) == 1, "the other worker's own alert")
            stopping = _stopping_worker(monitor.address, "svc-in-flight")
            _wait(
                lambda: any(a["key"] == "svc-in-flight" for a in other.listed()),
                "the alert noted by the other worker",
            )
            assert len(hook.requests) == 1  # noted: not delivered by the other one
            stopping.close()  # it stops with the alert unread
            _wait(lambda: len(hook.requests) == 2, "the alert delivered by the other worker")
        finally:
            other.stop()
        keys = [json.loads(r.body)["key"] for r in hook.requests]
        assert keys == ["svc-admitted", "svc-in-flight"]
        (kept,) = [a for a in other.listed() if a["key"] == "svc-in-flight"]
        assert "delivered_by" not in kept  # this worker's now
        assert kept["delivery"] == {"webhook": {"status": "sent", "attempts": 1, "error": None}}


def test_an_alert_that_waits_for_a_worker_goes_to_the_next_one_connecting(
    monitor: MonitorProcess,
) -> None:
    """The only worker stops with its alert unread: the next worker that connects gets it
    (a worker restarted, or the next one granian starts)."""
    stopping = _stopping_worker(monitor.address, "svc-waiting")
    stopping.close()
    inbox = Inbox()
    later = _link(monitor.address, inbox)
    try:
        _wait(inbox.alerts, "the waiting alert")
        assert [a["key"] for a in inbox.alerts()] == ["svc-waiting"]
    finally:
        later.stop()


def test_an_acknowledged_alert_is_not_sent_again(monitor: MonitorProcess) -> None:
    inbox_a, inbox_b = Inbox(), Inbox()
    a, b = _link(monitor.address, inbox_a), _link(monitor.address, inbox_b)
    try:
        for principal in ("svc-acked", "svc-second"):
            for _ in range(6):
                a.submit(_read(principal))
            _wait(lambda p=principal: p in [x["key"] for x in inbox_a.alerts()], principal)
        # the first alert's ack went out before the second alert was read: only the
        # second may come back, if a stops before it acknowledged it
        a.stop()
        for _ in range(6):
            b.submit(_read("svc-b"))
        _wait(lambda: "svc-b" in [x["key"] for x in inbox_b.alerts()], "b's own alert")
        assert "svc-acked" not in [x["key"] for x in inbox_b.alerts()]
    finally:
        a.stop()
        b.stop()


class _HandDriven:
    """A worker's connection to the monitor whose frames the test reads and hands to the
    worker's ``AlertReceiver`` itself (or drops), acknowledging or not: a worker whose
    link stops at any point between reading an alert and acknowledging it."""

    def __init__(self, address: LinkAddress, receiver: AlertReceiver) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(address.socket)
        self.sock.sendall(address.cookie)
        self.frames = FrameReader(self.sock.fileno())
        self.pending: list[Message] = []
        self.receiver = receiver

    def next(self) -> Message:
        """The monitor's next message."""
        while not self.pending:
            readable, _, _ = select.select([self.sock], [], [], 30)  # a safety net
            assert readable, "no message came"
            self.pending += self.frames.read_ready()
        return self.pending.pop(0)

    def take(self, *, ack: bool = True) -> None:
        """Hand the next message to the receiver as the link does, acknowledging it."""
        message = self.next()
        if message[0] == "alerts":
            self.receiver(message[:3])
            if ack:
                self.sock.sendall(encode(("ack", message[3])))
        else:
            self.receiver(message)

    def raise_own(self, principal: str) -> None:
        """Events raising an alert of this connection's own (which admits it), taken."""
        self.sock.sendall(encode(("events", [_packed(principal=principal) for _ in range(6)])))
        self.take()


def _handed_twice(monitor: MonitorProcess, hook: HttpReceiver, *, taken: bool) -> Worker:
    """A worker notes an alert another worker raised, is handed it when that one stops
    with it unread, and stops its connection with it unacknowledged (``taken``: after
    delivering it; else dropping it unread); it is then handed the alert again, on its
    new connection (its link reconnected). The worker (its dispatcher, its new link)."""
    worker = Worker(monitor.address, hook, connect=False)
    try:
        first = _HandDriven(monitor.address, worker.receiver)
        try:
            first.raise_own("svc-own")  # admitted before the other worker's alert
            owner = _stopping_worker(monitor.address, "svc-in-flight")
            first.take()  # noted
            assert [a["key"] for a in worker.listed()] == ["svc-in-flight", "svc-own"]
            owner.close()  # it stops with the alert unread: handed to this worker
            if taken:
                first.take(ack=False)
                assert worker.dispatcher.flush(10)
            else:
                message = first.next()
                assert message[0] == "alerts"  # read, dropped
        finally:
            first.sock.close()  # unacknowledged: the monitor keeps it for the next worker
        worker.connect()
    except BaseException:
        worker.stop()
        raise
    return worker


def test_an_alert_handed_twice_to_a_worker_that_dropped_it_is_delivered_once(
    monitor: MonitorProcess,
) -> None:
    """The hand-over lands twice on a worker that had noted the alert, the first time on
    a connection that ended before the worker took it: the worker still delivers it, once
    (its noted entry is taken over the second time)."""
    with HttpReceiver() as hook:
        worker = _handed_twice(monitor, hook, taken=False)
        try:
            _wait(lambda: len(hook.requests) == 2, "the alert delivered")
            assert worker.dispatcher.flush(10)
        finally:
            worker.stop()
        keys = [json.loads(r.body)["key"] for r in hook.requests]
        assert keys == ["svc-own", "svc-in-flight"]
        (kept,) = [a for a in worker.listed() if a["key"] == "svc-in-flight"]
        assert "delivered_by" not in kept
        assert kept["delivery"] == {"webhook": {"status": "sent", "attempts": 1, "error": None}}


def test_an_alert_handed_again_to_the_worker_that_delivered_it_is_not_sent_twice(
    monitor: MonitorProcess,
) -> None:
    """The worker delivered the alert and its connection ended before its acknowledgement
    went out: the monitor hands it to it again (at least once), and it is not sent again
    (a duplicate of the alert it delivered)."""
    with HttpReceiver() as hook:
        worker = _handed_twice(monitor, hook, taken=True)
        try:
            _wait(lambda: worker.dispatcher.stats()["duplicates"] == 1, "the alert again")
            assert worker.dispatcher.flush(10)
        finally:
            worker.stop()
        keys = [json.loads(r.body)["key"] for r in hook.requests]
        assert keys == ["svc-own", "svc-in-flight"]
