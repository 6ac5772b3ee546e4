"""The monitor process's book of unacknowledged alerts logs what it forgets once a flood,
not once an alert: a worker that reads but never acknowledges (or thousands of alerts with
no worker to take them) must not flood the log."""

from __future__ import annotations

import socket

import pytest

from medsecrets.server.monitorprocess import _MAX_UNACKED, _Book, _Peer


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def test_a_worker_that_never_acknowledges_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    try:
        peer, book = _Peer(ours), _Book()
        with caplog.at_level("ERROR", logger="medsecrets"):
            for number in range(_MAX_UNACKED + 50):
                assert book.give(peer, ({"n": number}, {})), number
                if number % 64 == 0:  # keep its socket from filling
                    theirs.recv(1 << 20)
        assert len(peer.unacked) == _MAX_UNACKED
        assert _errors(caplog) == [
            "monitor process: a worker does not acknowledge its alerts: the oldest"
            " are forgotten (logged once a connection)"
        ]
    finally:
        ours.close()
        theirs.close()


def test_alerts_with_no_worker_to_take_them_are_logged_once_a_flood(
    caplog: pytest.LogCaptureFixture,
) -> None:
    book = _Book()
    with caplog.at_level("ERROR", logger="medsecrets"):
        book.keep([({"n": n}, {}) for n in range(_MAX_UNACKED + 500)])
        book.keep([({"n": n}, {}) for n in range(10)])
    assert _errors(caplog) == [
        "monitor process: no worker to deliver alerts: the oldest are forgotten"
        " (logged once until a worker takes them)"
    ]
