"""A channel's rate-limit summary is sent once for the whole multi-worker server.

Every worker sees every alert (its own as ``alerts``, the others' as ``noted``), so
every worker counts every alert held back by the server-wide limit; the worker that
held back the first of them sends the summary, counting them all, and the others send
none. Real monitor process, real links, real dispatchers with a webhook channel each to
one local HTTP receiver (as the workers of one server); a ``ManualClock`` shared by the
dispatchers for the rate windows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from medsecrets.clock import ManualClock
from medsecrets.monitor.channels import WebhookChannel
from medsecrets.monitor.dispatcher import SUMMARY_DETECTOR, AlertDispatcher
from medsecrets.server.monitorprocess import MonitorProcess
from medsecrets.testing.receivers import HttpReceiver
from tests.server.test_shared_monitor import _read, _wait
from tests.server.test_shared_monitor_handover import Worker, monitor
from tests.server.test_shared_monitor_rates import _alert, _monitor_sends

__all__ = ["monitor"]  # the fixture

RATE = 3


@pytest.fixture
def hook() -> Iterator[HttpReceiver]:
    with HttpReceiver() as receiver:
        yield receiver


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


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


def test_one_summary_for_the_server_counts_every_workers_held_back_alerts(
    workers: list[Worker], hook: HttpReceiver, clock: ManualClock
) -> None:
    """Eight alerts over two workers, three a minute: three are sent, five held back
    (two by one worker, three by the other); once the window reopens the channel gets one
    summary of the five. Each worker used to send its own summary: two messages, of two
    and of three."""
    before = len(hook.requests)
    for number in range(8):
        _raise(workers, workers[number % 2], f"svc-{number}")
    for worker in workers:
        assert worker.dispatcher.flush(10)
    sent = [alert["key"] for alert in _delivered(hook)[before:]]
    assert sent == ["svc-0", "svc-1", "svc-2"]
    clock.advance(61)
    # the next alerts, one raised by each worker, settle the summary at both workers (an
    # alert, raised or noted, first settles a summary due)
    _raise(workers, workers[0], "svc-later")
    _raise(workers, workers[1], "svc-after")
    for worker in workers:
        assert worker.dispatcher.flush(10)
    later = _delivered(hook)[before + 3 :]
    summaries = [alert for alert in later if alert["detector"] == SUMMARY_DETECTOR]
    assert len(summaries) == 1, later
    (summary,) = summaries
    assert summary["key"] == "webhook"
    assert summary["details"]["suppressed"] == 5  # type: ignore[index]
    assert summary["details"]["counts"] == {"rate": {"high": 5}}  # type: ignore[index]
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
    assert len(listed) == 1  # and only the worker that sent it audits it


@pytest.fixture
def dispatchers(hook: HttpReceiver, clock: ManualClock) -> Iterator[list[AlertDispatcher]]:
    """Two workers' dispatchers, fed by the test as the monitor process feeds them."""
    found = [
        AlertDispatcher(
            [WebhookChannel(f"{hook.base}/alerts", secret=b"s" * 32)],
            rate_per_minute=RATE,
            clock=clock.monotonic,
            backoff=0,
        )
        for _ in range(2)
    ]
    for dispatcher in found:
        dispatcher.start()
    yield found
    for dispatcher in found:
        assert dispatcher.stop(10)


def test_a_held_back_alert_given_to_a_worker_that_noted_it_is_summed_up_by_it_once(
    dispatchers: list[AlertDispatcher], hook: HttpReceiver, clock: ManualClock
) -> None:
    """The first alert held back is a third worker's, noted by both; that worker stops
    before taking it, and the monitor gives it to the second, where it is still over the
    limit. Both had left the summary to the third worker; the second now sends it,
    counting that alert once (it had counted it when noted) and the first worker's own
    held-back alert."""
    second = dispatchers[1]
    _monitor_sends(dispatchers, [_alert(f"svc-{n}") for n in range(RATE)])
    held = _alert("svc-held")
    for dispatcher in dispatchers:
        dispatcher.note(held)  # its worker stopped before taking it
    _monitor_sends(dispatchers, [_alert("svc-first")])  # first's own, held back
    second.raise_(held)  # the monitor gives it to second
    clock.advance(61)
    _monitor_sends(dispatchers, [_alert("svc-later")])
    summaries = [b for b in _delivered(hook) if b["detector"] == SUMMARY_DETECTOR]
    assert len(summaries) == 1, summaries
    assert summaries[0]["details"]["suppressed"] == 2  # type: ignore[index]
    assert [a["key"] for a in second.recent() if a["detector"] == SUMMARY_DETECTOR] == ["webhook"]
