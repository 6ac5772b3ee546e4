"""A channel's rate-limit summaries of a multi-worker server count every held-back alert once.

Each worker sums up the alerts it held back itself (``AlertDispatcher.note``): one
summary a worker that held some back, never one counting a noted alert, so none is
lost with a worker that ends and none tells of an alert the channel got
(tests/server/test_shared_monitor_summary_review.py). Real monitor process, real
links, real dispatchers with a webhook channel each to one local HTTP receiver (as the
workers of one server); a ``ManualClock`` shared by the dispatchers for the rate windows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from medsecrets.clock import ManualClock
from medsecrets.monitor.dispatcher import SUMMARY_DETECTOR, AlertDispatcher
from medsecrets.server.monitorprocess import MonitorProcess
from medsecrets.testing.receivers import HttpReceiver
from tests.server.test_shared_monitor import _read, _wait
from tests.server.test_shared_monitor_handover import Worker, monitor
from tests.server.test_shared_monitor_rates import (
    RATE,
    _alert,
    _monitor_sends,
    clock,
    hook,
    two_dispatchers,
)

__all__ = ["clock", "hook", "monitor"]  # the fixtures


@pytest.fixture
def workers(
    monitor: MonitorProcess, hook: HttpReceiver, clock: ManualClock
) -> Iterator[list[Worker]]:
    """Two workers, both admitted by the monitor (each raised an alert) before the test,
    their windows empty again."""
    found = [
        Worker(monitor.address, hook, rate_per_minute=RATE, clock=clock.monotonic) for _ in range(2)
    ]
    try:
        for number, worker in enumerate(found):
            _wait(lambda w=worker: w.link.connected, "the worker connected")  # type: ignore[misc]
            _raise(found, worker, f"svc-admitted-{number}", listed_by=[worker])
        for worker in found:  # the admissions delivered: none lands among a test's alerts
            assert worker.dispatcher.flush(10)
        clock.advance(61)  # the admissions' places leave the windows
        yield found
    finally:
        for worker in found:
            worker.stop()


def _keys(worker: Worker) -> list[object]:
    return [alert["key"] for alert in worker.listed()]


def _raise(
    workers: list[Worker], owner: Worker, key: str, *, listed_by: list[Worker] | None = None
) -> None:
    """Reads by ``key`` through ``owner``'s link until the rate detector raises an alert;
    wait until every worker of ``listed_by`` (all by default) shows it."""
    for _ in range(6):
        owner.link.submit(_read(key))
    for worker in workers if listed_by is None else listed_by:
        _wait(lambda w=worker: key in _keys(w), f"{key} shown")  # type: ignore[misc]


def _delivered(hook: HttpReceiver) -> list[dict[str, object]]:
    return [json.loads(request.body) for request in hook.requests]


def test_each_workers_summary_counts_the_alerts_it_held_back(
    workers: list[Worker], hook: HttpReceiver, clock: ManualClock
) -> None:
    """Eight alerts over two workers, three a minute: three are sent, five held back
    (three by one worker, two by the other); once the window reopens the channel gets a
    summary from each, of three and of two: every held-back alert counted once."""
    before = len(hook.requests)
    for number in range(8):
        _raise(workers, workers[number % 2], f"svc-{number}")
    for worker in workers:
        assert worker.dispatcher.flush(10)
    sent = [alert["key"] for alert in _delivered(hook)[before:]]
    assert sent == ["svc-0", "svc-1", "svc-2"]
    clock.advance(61)
    # the next alerts, one raised by each worker, settle each worker's summary
    _raise(workers, workers[0], "svc-later")
    _raise(workers, workers[1], "svc-after")
    for worker in workers:
        assert worker.dispatcher.flush(10)
    later = _delivered(hook)[before + 3 :]
    summaries = [alert for alert in later if alert["detector"] == SUMMARY_DETECTOR]
    assert sorted(s["details"]["suppressed"] for s in summaries) == [2, 3]  # type: ignore[index]
    for summary in summaries:
        assert summary["key"] == "webhook"
        total = summary["details"]["suppressed"]  # type: ignore[index]
        assert summary["details"]["counts"] == {"rate": {"high": total}}  # type: ignore[index]
    assert [alert["key"] for alert in later if alert["detector"] != SUMMARY_DETECTOR] == [
        "svc-later",
        "svc-after",
    ]
    listed = [
        alert
        for worker in workers
        for alert in worker.listed()
        if alert["detector"] == SUMMARY_DETECTOR
    ]
    assert len(listed) == 2  # each worker audits the summary it sent


@pytest.fixture
def dispatchers(hook: HttpReceiver, clock: ManualClock) -> Iterator[list[AlertDispatcher]]:
    """Two workers' dispatchers, fed by the test as the monitor process feeds them."""
    yield from two_dispatchers(hook, clock)


def test_a_held_back_alert_given_to_a_worker_that_noted_it_is_summed_up_by_it_once(
    dispatchers: list[AlertDispatcher], hook: HttpReceiver, clock: ManualClock
) -> None:
    """The first alert held back is a third worker's, noted by both; that worker stops
    before taking it, and the monitor gives it to the second, where it is still over the
    limit: the second sums it up, once, and the first its own held-back alert."""
    second = dispatchers[1]
    _monitor_sends(dispatchers, [_alert(f"svc-{n}") for n in range(RATE)])
    held = _alert("svc-held")
    for dispatcher in dispatchers:
        dispatcher.note(held)  # its worker stopped before taking it
    _monitor_sends(dispatchers, [_alert("svc-first")])  # first's own, held back
    second.raise_(held)  # the monitor gives it to second
    clock.advance(61)
    _monitor_sends(dispatchers, [_alert("svc-later")])

    def summaries() -> list[dict[str, object]]:
        return [b for b in _delivered(hook) if b["detector"] == SUMMARY_DETECTOR]

    # the second's: at its channel's next idle check (its next alert is only noted)
    _wait(lambda: len(summaries()) == 2, "both summaries")
    assert [s["details"]["suppressed"] for s in summaries()] == [1, 1]  # type: ignore[index]
    for dispatcher in dispatchers:
        assert dispatcher.flush(10)
    for dispatcher in dispatchers:
        found = [a for a in dispatcher.recent() if a["detector"] == SUMMARY_DETECTOR]
        assert [a["count"] for a in found] == [1]
