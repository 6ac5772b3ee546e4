"""Review of the shared monitor's acknowledged alerts: hostile acks, and alerts whose
worker was gone before the monitor could even send them.

Real monitor process, real links; the workers that misbehave are plain sockets of the
server's user that know the cookie.
"""

from __future__ import annotations

import os
import signal
import socket

from medsecrets.audit.channel import FrameReader, encode
from medsecrets.server.monitorlink import LinkAddress
from medsecrets.server.monitorprocess import MonitorProcess
from tests.server.test_shared_monitor import Inbox, _link, _read, _wait
from tests.server.test_shared_monitor_handover import _stopping_worker, monitor
from tests.server.test_shared_monitor_hostile import _packed

__all__ = ["monitor"]  # the fixture


def _gone_worker(address: LinkAddress, principal: str) -> None:
    """A worker that sends events raising an alert and is gone at once (it died): the
    monitor cannot send it the alert at all."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)  # a safety net
    sock.connect(address.socket)
    events = encode(("events", [_packed(principal=principal) for _ in range(6)]))
    sock.sendall(address.cookie + events)
    sock.close()


def _number(sock: socket.socket) -> int:
    """The number of the ``alerts`` message waiting in ``sock``."""
    (message,) = FrameReader(sock.fileno()).read()
    assert message[0] == "alerts"
    number = message[3]
    assert isinstance(number, int)
    return number


def test_an_alert_of_a_worker_gone_before_it_was_sent_waits_for_the_next_worker(
    monitor: MonitorProcess,
) -> None:
    """With no other worker connected, the alert of a worker that died right after its
    events waits for the next worker admitted, like one unread (it was dropped)."""
    assert monitor.pid is not None
    os.kill(monitor.pid, signal.SIGSTOP)  # the worker is gone before the monitor reads
    try:
        _gone_worker(monitor.address, "svc-died")
    finally:
        os.kill(monitor.pid, signal.SIGCONT)
    inbox = Inbox()
    later = _link(monitor.address, inbox)
    try:
        _wait(lambda: later.connected, "the next worker connected")
        for _ in range(6):  # its own alert: the monitor has surely handled the first
            later.submit(_read("svc-later"))
        _wait(lambda: "svc-later" in [a["key"] for a in inbox.alerts()], "its own alert")
        assert "svc-died" in [a["key"] for a in inbox.alerts()]
    finally:
        later.stop()


def test_forged_and_out_of_range_acks_neither_close_nor_release_another_connections_alert(
    monitor: MonitorProcess,
) -> None:
    """A connection acknowledging numbers it was never given (another connection's, huge,
    negative, before any alert) stays connected, and the alert it did not acknowledge
    still goes to another worker when it leaves."""
    stopping = _stopping_worker(monitor.address, "svc-in-flight")
    try:
        own = _number(stopping)
        forged = [n for n in (*range(-3, 20), -(2**70), 2**70, 10**100) if n != own]
        stopping.sendall(b"".join(encode(("ack", n)) for n in forged))
        inbox = Inbox()
        other = _link(monitor.address, inbox)
        try:
            _wait(lambda: other.connected, "the other worker connected")
            # another connection forging acks for every small number, then leaving
            forger = _stopping_worker(monitor.address, "svc-forger")
            forger.sendall(b"".join(encode(("ack", n)) for n in range(-5, 50)))
            forger.close()
            for _ in range(6):
                other.submit(_read("svc-other"))
            _wait(lambda: "svc-other" in [a["key"] for a in inbox.alerts()], "its own alert")
            stopping.close()  # its alert, never really acknowledged, goes to the other
            _wait(
                lambda: "svc-in-flight" in [a["key"] for a in inbox.alerts()],
                "the unacknowledged alert handed over",
            )
        finally:
            other.stop()
    finally:
        stopping.close()
