"""``WakeOnSleepLoop``: an event loop that other threads wake only while it sleeps.

``loop.call_soon_threadsafe`` queues a callback and writes a byte to the loop's self-pipe,
to wake a loop blocked in ``select``. granian hands every request to the server's loop
that way, from its blocking thread: one ``send`` a request in that thread, one more
wake-up of the loop's thread, and a byte the loop reads back, although the loop is
usually not asleep (it runs Python, holding the GIL) or has been woken already by the
request before.

This loop writes the byte only while it is inside ``select`` (a poll with a zero timeout
included: a byte then is merely spare), and only once per call. A loop running
callbacks finds the new callback in its ready queue at its next iteration anyway.
Correctness rests on an order that the GIL makes atomic step by step: ``select`` marks
the loop as sleeping *before* it looks at the ready queue one last time (forcing a zero
timeout if anything is there), and ``call_soon_threadsafe`` queues its handle *before* it
looks at the mark; so a handle is either seen by that last look or its writer sees the
mark and wakes the loop. Without a GIL (a free-threaded build) that order is not
guaranteed, and ``new_loop`` gives asyncio's own loop.

Measured (``docs/benchmarks.md``, session 24): audited reads faster in 33 of 52 rounds
over three interleaved series (medians +3.5%, +8.0%, +3.8%), a gain of a few per cent
that no one series settles on this noisy machine (sign test over all of them p = 0.07).
"""

from __future__ import annotations

import asyncio
import selectors
import sys

__all__ = ["WakeOnSleepLoop", "new_loop"]


class _SleepMarkingSelector(selectors.DefaultSelector):
    """The platform's default selector, telling its loop when it blocks in ``select``."""

    loop: WakeOnSleepLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        loop = self.loop
        if loop is None:
            return super().select(timeout)
        loop._woken = False
        loop._sleeping = True  # first the mark, then the last look at the ready queue
        if timeout != 0 and loop._ready:  # a handle queued by another thread meanwhile
            timeout = 0
        try:
            return super().select(timeout)
        finally:
            loop._sleeping = False


class WakeOnSleepLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose self-pipe is written only while it sleeps in
    ``select``, at most once per sleep (see module docstring). Thread-safe as asyncio's
    ``call_soon_threadsafe`` is, given the GIL."""

    _ready: object  # asyncio's ready queue (``collections.deque``)

    def __init__(self) -> None:
        self._sleeping = False
        self._woken = False
        selector = _SleepMarkingSelector()
        super().__init__(selector)
        selector.loop = self

    def _write_to_self(self) -> None:
        if not self._sleeping or self._woken:  # running: it sees its ready queue anyway
            return
        self._woken = True
        super()._write_to_self()  # type: ignore[misc]


def new_loop() -> asyncio.AbstractEventLoop:
    """A ``WakeOnSleepLoop`` where the GIL serialises threads, else asyncio's own loop
    (the ``loop_factory`` of ``asyncio.Runner``)."""
    gil = getattr(sys, "_is_gil_enabled", None)
    if gil is not None and not gil():
        return asyncio.new_event_loop()
    return WakeOnSleepLoop()
