"""Review of the rate-limit summary of a multi-worker server: none may be lost or miscount.

An operator must always learn that a channel's alerts were held back. Real monitor
process, real links, real dispatchers with a webhook channel to one local HTTP receiver
(as the workers of one server), sharing a ``ManualClock`` for the rate windows; the
worker that ends is a worker of its own process (``_WorkerProcess``), stopped or killed.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from medsecrets.clock import ManualClock
from medsecrets.monitor.dispatcher import SUMMARY_DETECTOR
from medsecrets.server.monitorlink import LINK_ENV, LinkAddress, link_from_env
from medsecrets.server.monitorprocess import MonitorProcess
from medsecrets.testing.receivers import HttpReceiver
from tests.server.test_shared_monitor import _wait
from tests.server.test_shared_monitor_handover import Worker, monitor
from tests.server.test_shared_monitor_summaries import RATE, _keys, _raise, clock, hook, workers

__all__ = ["clock", "hook", "monitor", "workers"]  # the fixtures

_ROOT = Path(__file__).resolve().parents[2]


def _serve_as_worker() -> None:
    """The worker of a ``_WorkerProcess``: raises an alert by each key read on stdin and
    writes its delivery status; stops when stdin ends. Its channel is a receiver of its
    own, and its clock never moves: all its places in the window are taken at once."""
    address = link_from_env()
    assert address is not None
    with HttpReceiver() as own:
        worker = Worker(address, own, rate_per_minute=RATE, clock=ManualClock().monotonic)
        for line in sys.stdin:
            key = line.strip()
            _raise([worker], worker, key)
            assert worker.dispatcher.flush(10)
            (found,) = [alert for alert in worker.listed() if alert["key"] == key]
            print(found["delivery"]["webhook"]["status"], flush=True)  # type: ignore[index]
        worker.stop()


class _WorkerProcess:
    """A worker in a process of its own (``_serve_as_worker``), linked to the monitor."""

    def __init__(self, address: LinkAddress) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", f"from {__name__} import _serve_as_worker as s; s()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=_ROOT,
            env={**os.environ, LINK_ENV: address.to_env()},
        )

    def raise_(self, key: str) -> str:
        """Raise an alert by ``key`` there: its delivery status once it was handled."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(key + "\n")
        self.process.stdin.flush()
        readable, _, _ = select.select([self.process.stdout], [], [], 60)  # a safety net
        assert readable, "the worker process did not answer"
        return self.process.stdout.readline().strip()

    def end(self, *, kill: bool) -> None:
        """Stop the worker (stdin closed: it stops its link and dispatcher) or kill it."""
        if kill:
            self.process.send_signal(signal.SIGKILL)
        elif self.process.stdin is not None:
            self.process.stdin.close()
        try:
            code = self.process.wait(30)  # a safety net
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    pipe.close()
        assert code == (-signal.SIGKILL if kill else 0)


def _summed(hook: HttpReceiver, before: int) -> tuple[list[object], list[object]]:
    """The keys of the alerts the channel got since ``before`` requests, and the counts
    of held-back alerts its summaries gave."""
    got = [json.loads(request.body) for request in hook.requests[before:]]
    keys = [body["key"] for body in got if body["detector"] != SUMMARY_DETECTOR]
    summed = [body["details"]["suppressed"] for body in got if body["detector"] == SUMMARY_DETECTOR]
    return keys, summed


@pytest.mark.parametrize("kill", [False, True], ids=["stopped", "killed"])
def test_held_back_alerts_are_summed_up_after_the_worker_that_held_back_the_first_ended(
    monitor: MonitorProcess,
    workers: list[Worker],
    hook: HttpReceiver,
    clock: ManualClock,
    kill: bool,
) -> None:
    """A third worker holds back the window's first alert over the limit, the second
    worker two more; the third ends (stopped, or killed: respawned workers are how a
    server lives on) with nothing unacknowledged, so nothing is handed over, before the
    window reopens. The second's two must still be summed up: the others used to leave
    the summary, theirs included, to the worker that was gone."""
    first, second = workers
    before = len(hook.requests)
    third = _WorkerProcess(monitor.address)
    try:
        assert third.raise_("svc-third-0") == "sent"
        for worker in workers:
            _wait(lambda w=worker: "svc-third-0" in _keys(w), "the third's alert noted")  # type: ignore[misc]
        _raise(workers, first, "svc-1")
        _raise(workers, second, "svc-2")  # the window is full
        assert third.raise_("svc-third-held") == "rate_limited"
        for worker in workers:
            _wait(lambda w=worker: "svc-third-held" in _keys(w), "the held one noted")  # type: ignore[misc]
        _raise(workers, second, "svc-second-held-1")
        _raise(workers, second, "svc-second-held-2")
    finally:
        third.end(kill=kill)
    for worker in workers:  # noted still: nothing was handed over
        (kept,) = [a for a in worker.listed() if a["key"] == "svc-third-held"]
        assert kept["delivered_by"] == "another worker"
    clock.advance(61)  # the window reopens
    _raise(workers, second, "svc-later")
    _raise(workers, first, "svc-after")
    for worker in workers:
        assert worker.dispatcher.flush(10)
    keys, summed = _summed(hook, before)
    assert "svc-second-held-1" not in keys and "svc-second-held-2" not in keys
    assert summed == [2], summed  # the third's own one went with it, as a single process's


def test_an_alert_a_worker_joining_mid_window_sent_is_not_summed_up_as_held_back(
    monitor: MonitorProcess, workers: list[Worker], hook: HttpReceiver, clock: ManualClock
) -> None:
    """A worker that joins while the window is full (a respawned one) has an empty window
    of its own and sends its alert. The workers that find their window full must not
    count that alert as held back: the summary would tell of an alert not sent that the
    channel got."""
    first, _ = workers
    before = len(hook.requests)
    for number in range(RATE):
        _raise(workers, workers[number % 2], f"svc-{number}")
    _raise(workers, first, "svc-held")
    joined = Worker(monitor.address, hook, rate_per_minute=RATE, clock=clock.monotonic)
    everyone = [*workers, joined]
    try:
        _wait(lambda: joined.link.connected, "the worker connected")
        _raise(everyone, joined, "svc-joined")
        clock.advance(61)  # the window reopens
        _raise(everyone, first, "svc-later")
        for worker in everyone:
            assert worker.dispatcher.flush(10)
    finally:
        joined.stop()
    keys, summed = _summed(hook, before)
    assert "svc-joined" in keys  # (its empty window: see the report; not this test's point)
    assert "svc-held" not in keys
    assert summed == [1], summed  # svc-held only
