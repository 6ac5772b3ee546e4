"""``Waiter``: one request waiting for its audit record on one or more devices.

A waiter is answered by the lanes it was appended to: it *succeeds* at the
first lane that durably wrote the record, and *fails* once every one of its
``lanes`` answered no. Answers are idempotent (a late answer after the result
is known changes nothing). ``wait()`` blocks a thread; ``wait_async()`` awaits
on an event loop without blocking it: answers arrive from writer threads, and
``answer_all`` wakes each event loop once per batch (one
``call_soon_threadsafe`` per loop, not per waiter). Both raise
``AuditFailure`` on failure. Only ``wait`` has a backstop timeout of its own
(logged when it refuses: the watchdog, which says which device, normally answers
first); ``wait_async`` relies on the broker's watchdog. ``Waiter`` is the core's
``AuditTicket``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable

from medsecrets.errors import AuditFailure
from medsecrets.loops import running_loop, running_loop_or_none

__all__ = ["Waiter", "answer_all"]

_log = logging.getLogger("medsecrets.audit")

_LOCK = threading.Lock()  # answers are rare, short critical sections: one lock suffices


class Waiter:
    """See module docstring.

    ``lanes`` is the number of required lanes asked; ``timeout`` a backstop for
    the blocking ``wait`` (the broker's watchdog normally answers first).
    """

    __slots__ = ("_event", "_future", "_remaining", "_timeout", "result")

    def __init__(self, lanes: int, *, timeout: float | None = None) -> None:
        self._remaining = lanes
        self._timeout = timeout
        self.result: bool | None = None if lanes > 0 else False
        self._event: threading.Event | None = None
        self._future: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"Waiter(result={self.result})"

    def _settle(self, ok: bool) -> asyncio.Future[None] | None:
        """Record one lane's answer (``_LOCK`` held); the future to resolve if the result
        is now known."""
        if self.result is not None:
            return None
        if ok:
            self.result = True
        else:
            self._remaining -= 1
            if self._remaining > 0:
                return None
            self.result = False
        if self._event is not None:
            self._event.set()
        return self._future

    def wait(self) -> None:
        """Block until answered (a backstop of ``timeout`` s: then ``AuditFailure``)."""
        with _LOCK:
            if self.result is None:
                self._event = threading.Event()
        if self._event is not None and not self._event.wait(self._timeout):
            _log.error("audit: no device answered within %.1f s: request refused", self._timeout)
            raise AuditFailure("audit device timed out: request refused")
        if not self.result:
            raise AuditFailure

    async def wait_async(self) -> None:
        """Await the answer on the running loop.

        No timer of its own (a timer per request costs the loop more than the
        rest of the wait): the broker's watchdog answers every waiter of a hung
        device, or of a dead writer, within the audit timeout.
        """
        loop = running_loop()
        with _LOCK:
            if self.result is None:
                self._future = loop.create_future()
        future = self._future
        if future is not None:
            await future
        if not self.result:
            raise AuditFailure


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def answer_all(waiters: Iterable[Waiter], *, ok: bool) -> None:
    """Answer every waiter for one lane (under one hold of the lock); wake each other
    event loop involved once (the running one's futures are resolved at once)."""
    futures: list[asyncio.Future[None]] = []
    with _LOCK:
        for waiter in waiters:
            future = waiter._settle(ok)
            if future is not None:
                futures.append(future)
    if not futures:
        return
    running = running_loop_or_none()
    others: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for future in futures:
        loop = future.get_loop()
        if loop is running:  # answered on the waiters' own loop: no hand-off
            if not future.done():
                future.set_result(None)
        else:
            others.setdefault(loop, []).append(future)
    for loop, found in others.items():
        if not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, found)
