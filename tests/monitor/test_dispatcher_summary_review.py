"""Review of the rate-limit summary with several workers (``AlertDispatcher.note``).

Two dispatchers as two workers of one server, fed as the monitor process feeds them
(each alert raised by its worker, noted by the other), a webhook channel each to one
local HTTP receiver, and a ``ManualClock`` each: a worker's clock reads when the alert
reaches it, and a noted alert reaches the other worker a moment after its own worker
got it, a moment that is not always the same. Whatever the moments, every alert the
channel did not get must be counted in a summary it does get.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from tests.server.test_shared_monitor_rates import _alert

from medsecrets.clock import ManualClock
from medsecrets.monitor.channels import WebhookChannel
from medsecrets.monitor.dispatcher import SUMMARY_DETECTOR, AlertDispatcher
from medsecrets.testing.receivers import HttpReceiver

RATE = 3


@pytest.fixture
def hook() -> Iterator[HttpReceiver]:
    with HttpReceiver() as receiver:
        yield receiver


class _Worker:
    """A worker's dispatcher and the clock it reads."""

    def __init__(self, hook: HttpReceiver) -> None:
        self.clock = ManualClock()
        self.dispatcher = AlertDispatcher(
            [WebhookChannel(f"{hook.base}/alerts", secret=b"s" * 32)],
            rate_per_minute=RATE,
            clock=self.clock.monotonic,
            backoff=0,
        )

    def at(self, moment: float) -> _Worker:
        """This worker, its clock moved on to ``moment`` (seconds since the start)."""
        self.clock.advance(moment - self.clock.monotonic())
        return self


@pytest.fixture
def pair(hook: HttpReceiver) -> Iterator[tuple[_Worker, _Worker]]:
    first, second = _Worker(hook), _Worker(hook)
    for worker in (first, second):
        worker.dispatcher.start()
    yield first, second
    for worker in (first, second):
        assert worker.dispatcher.stop(10)


def test_an_alert_held_back_at_a_window_edge_reached_unevenly_is_still_summed_up(
    pair: tuple[_Worker, _Worker], hook: HttpReceiver
) -> None:
    """The window's first places reach the second worker 0.5 s late, a later alert of
    the first only 0.1 s late: the first finds room for it and sends it, the second
    still finds the window full and counts it as held back by the first, whose summary
    it leaves to the first. The second then holds back an alert of its own, which the
    first, its window full again, counts as held back by the second. Each left the
    summary to the other: the channel never learnt that an alert was held back."""
    first, second = pair
    for number in range(RATE):
        alert = _alert(f"svc-{number}")
        first.at(number).dispatcher.raise_(alert)
        second.at(number + 0.5).dispatcher.note(alert)
    sent = _alert("svc-sent")
    first.at(60.2).dispatcher.raise_(sent)  # the place of 0 s is free
    second.at(60.3).dispatcher.note(sent)  # that of 0.5 s is not
    held = _alert("svc-held")
    second.at(60.4).dispatcher.raise_(held)
    first.at(60.45).dispatcher.note(held)
    for worker in pair:  # the window reopens: the next alert settles the summaries due
        later = _alert(f"svc-later-{id(worker)}")
        worker.at(200).dispatcher.raise_(later)
        (other,) = [w for w in pair if w is not worker]
        other.at(200).dispatcher.note(later)
    for worker in pair:
        assert worker.dispatcher.flush(10)
    got = [json.loads(request.body) for request in hook.requests]
    keys = [body["key"] for body in got if body["detector"] != SUMMARY_DETECTOR]
    assert "svc-held" not in keys and "svc-sent" in keys
    summed = [body["details"]["suppressed"] for body in got if body["detector"] == SUMMARY_DETECTOR]
    assert sum(summed) == 1, got  # svc-held, and only it
