"""``Deadlines``: the request timeout, one sweep timer for every request in flight.

A request registers its own task (``enter``) and leaves when it has its answer
(``leave``). While any request is in flight one timer runs every
``min(seconds / 4, 0.25)`` seconds and cancels the tasks whose deadline has
passed, remembering them (``expired``), so the handler can tell its own
timeout from any other cancellation (a server shutdown) and answer 503
``timeout`` instead. A request is cut between ``seconds`` and ``seconds`` plus
one sweep period after it entered.

Per request this costs two dictionary operations, instead of a timer handle
created and cancelled on the event loop's heap.
"""

from __future__ import annotations

import asyncio

__all__ = ["Deadlines"]


class Deadlines:
    """See module docstring. One instance per app; each event loop keeps its own timer."""

    __slots__ = ("_armed", "_expired", "_period", "_tasks", "seconds")

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("a request timeout must be positive")
        self.seconds = seconds
        self._period = min(seconds / 4, 0.25)
        self._tasks: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._armed: set[asyncio.AbstractEventLoop] = set()

    def enter(self, task: asyncio.Task[object]) -> None:
        """Start the clock for ``task`` (the current request's task)."""
        loop = task.get_loop()
        self._tasks[task] = loop.time() + self.seconds
        if loop not in self._armed:
            self._armed.add(loop)
            loop.call_later(self._period, self._sweep, loop)

    def leave(self, task: asyncio.Task[object]) -> bool:
        """Stop the clock for ``task``; whether its deadline had passed (it was cancelled)."""
        self._tasks.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        mine = False
        for task, deadline in list(self._tasks.items()):
            if task.get_loop() is not loop:
                continue
            mine = True
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        if mine and not loop.is_closed():
            loop.call_later(self._period, self._sweep, loop)
        else:
            self._armed.discard(loop)
