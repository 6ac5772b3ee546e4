"""Review of the server-wide rate limit: a storm of alerts spread over two workers.

Each worker counts the alerts the others deliver (``AlertDispatcher.note``) in its
channels' windows; a noted alert the other worker found over the limit was not sent,
so it takes no place (as one of its own over the limit takes none). Real dispatchers
and webhook channels to a local HTTP receiver, fed as the monitor process feeds two
workers; a ``ManualClock`` for the windows.
"""

from __future__ import annotations

from medsecrets.clock import ManualClock
from medsecrets.monitor.dispatcher import AlertDispatcher
from medsecrets.testing.receivers import HttpReceiver
from tests.server.test_shared_monitor_rates import (
    RATE,
    _alert,
    _monitor_sends,
    clock,
    hook,
    workers,
)

__all__ = ["clock", "hook", "workers"]  # the fixtures


def test_a_sustained_storm_is_still_heard_of_every_minute(
    workers: list[AlertDispatcher], hook: HttpReceiver, clock: ManualClock
) -> None:
    """An alert every 10 s for three minutes, over two workers: each minute the channel
    gets alerts or a summary of those held back, at most ``RATE`` a minute from the
    alerts themselves. The windows used to stay full of noted alerts nobody sent, so
    after the first minute the channel heard nothing while the storm lasted."""
    heard: list[int] = []  # deliveries so far, by minute
    for minute in range(3):
        for step in range(6):
            owner, other = workers if step % 2 == 0 else workers[::-1]
            _monitor_sends([owner, other], [_alert(f"svc-{minute}-{step}")])
            clock.advance(10)
        heard.append(len(hook.requests))
    per_minute = [heard[0], heard[1] - heard[0], heard[2] - heard[1]]
    assert per_minute[0] == RATE
    assert all(count > 0 for count in per_minute[1:]), per_minute
    assert all(count <= RATE + len(workers) for count in per_minute), per_minute
