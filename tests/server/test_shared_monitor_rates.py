"""Each alert channel's rate limit holds for the whole multi-worker server.

With a shared monitor process each alert is delivered by one worker and noted by
the others (``AlertDispatcher.note``); the noted alerts count in every channel's
rate window too, so N workers together send at most ``rate_per_minute`` alerts to
a channel, not N times as many. Real dispatchers and webhook channels to a local
HTTP receiver, fed as the monitor process feeds two workers; a ``ManualClock``
for the windows.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest

from medsecrets.clock import ManualClock
from medsecrets.monitor.alert import Alert, Severity
from medsecrets.monitor.channels import WebhookChannel
from medsecrets.monitor.dispatcher import SUMMARY_DETECTOR, AlertDispatcher
from medsecrets.testing.receivers import HttpReceiver
from tests.server.test_shared_monitor import _wait

RATE = 3


@pytest.fixture
def hook() -> Iterator[HttpReceiver]:
    with HttpReceiver() as receiver:
        yield receiver


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def two_dispatchers(hook: HttpReceiver, clock: ManualClock) -> Iterator[list[AlertDispatcher]]:
    """Two workers' dispatchers, each with a webhook channel to ``hook`` limited to ``RATE``
    a minute on ``clock``, started; stopped when the generator is closed."""
    found = [
        AlertDispatcher(
            [WebhookChannel(f"{hook.base}/alerts", secret=b"s" * 32)],
            rate_per_minute=RATE,
            clock=clock.monotonic,
            backoff=0,
        )
        for _ in range(2)
    ]
    for worker in found:
        worker.start()
    yield found
    for worker in found:
        assert worker.stop(10)


@pytest.fixture
def workers(hook: HttpReceiver, clock: ManualClock) -> Iterator[list[AlertDispatcher]]:
    yield from two_dispatchers(hook, clock)


def _alert(key: str, severity: Severity = "high") -> Alert:
    return Alert(
        detector="rate",
        severity=severity,
        time=dt.datetime.now(dt.UTC),
        summary=f"{key} read too much",
        key=key,
    )


def _monitor_sends(workers: list[AlertDispatcher], alerts: list[Alert]) -> None:
    """Each alert to one worker to deliver (in turn), noted by the other."""
    for number, alert in enumerate(alerts):
        owner = workers[number % 2]
        owner.raise_(alert)
        for other in workers:
            if other is not owner:
                other.note(alert)
    for worker in workers:
        assert worker.flush(10)


def _delivered(hook: HttpReceiver) -> list[tuple[str, str]]:
    return [(b["detector"], b["key"]) for b in (json.loads(r.body) for r in hook.requests)]


def test_two_workers_together_keep_a_channels_rate_limit(
    workers: list[AlertDispatcher], hook: HttpReceiver
) -> None:
    """Ten alerts over two workers: the channel gets three, as from one process (each
    worker used to send three)."""
    _monitor_sends(workers, [_alert(f"svc-{n}") for n in range(10)])
    assert sorted(_delivered(hook)) == [("rate", "svc-0"), ("rate", "svc-1"), ("rate", "svc-2")]
    limited = [w.stats()["channels"]["webhook"]["rate_limited"] for w in workers]  # type: ignore[index]
    assert limited == [3, 4]  # each found its own over the limit


def test_the_window_reopens_for_both_and_summaries_follow(
    workers: list[AlertDispatcher], hook: HttpReceiver, clock: ManualClock
) -> None:
    _monitor_sends(workers, [_alert(f"svc-{n}") for n in range(6)])
    clock.advance(61)  # the window is over: each worker sums up what it held back
    _monitor_sends(workers, [_alert("svc-later")])
    # each worker's summary: at its next alert, or its channel's next idle check
    _wait(lambda: len(hook.requests) == 6, "the later alert and both summaries")
    delivered = _delivered(hook)
    assert sorted(delivered[:3]) == [("rate", "svc-0"), ("rate", "svc-1"), ("rate", "svc-2")]
    assert sorted(delivered[3:]) == [
        ("rate", "svc-later"),
        (SUMMARY_DETECTOR, "webhook"),
        (SUMMARY_DETECTOR, "webhook"),
    ]


def test_critical_alerts_are_never_limited_nor_counted(
    workers: list[AlertDispatcher], hook: HttpReceiver
) -> None:
    _monitor_sends(workers, [_alert(f"honey-{n}", "critical") for n in range(5)])
    _monitor_sends(workers, [_alert(f"svc-{n}") for n in range(3)])
    assert len(_delivered(hook)) == 8


def test_a_noted_alert_given_to_this_worker_is_delivered_once_counted_once(
    workers: list[AlertDispatcher], hook: HttpReceiver
) -> None:
    """The monitor gives a noted alert to this worker (its owner stopped before taking
    it): it is delivered, and counted in the window once, not twice."""
    first, second = workers
    alerts = [_alert(f"svc-{n}") for n in range(RATE)]
    for alert in alerts[:-1]:
        first.raise_(alert)
        second.note(alert)
    second.note(alerts[-1])  # its owner, first, never took it: second is given it
    second.raise_(alerts[-1])
    for worker in workers:
        assert worker.flush(10)
    assert len(_delivered(hook)) == RATE
    (kept,) = [a for a in second.recent() if a["key"] == alerts[-1].key]
    assert kept["delivery"]["webhook"]["status"] == "sent"  # type: ignore[index]
