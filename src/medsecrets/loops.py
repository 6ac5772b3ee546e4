"""``running_loop()``: ``asyncio.get_running_loop()`` without a system call.

On CPython 3.11 every ``asyncio.get_running_loop()`` (and so every
``asyncio.current_task()``) calls ``getpid()`` to tell a loop inherited over
``fork`` from one running here, and glibc makes each ``getpid()`` a real system
call: three a request on the server's hot path (measured with ``strace``,
``docs/benchmarks.md``, session 9). A system call is also where the kernel
switches to a thread that woke up meanwhile, so the loop thread lost more than
the call itself.

``running_loop()`` remembers the last loop it found, with its thread, and gives
it again while that loop is still running on the calling thread (a loop runs on
one thread at a time; ``run_forever`` records it in the loop's ``_thread_id``).
Anything else (another thread, another loop, no loop, a child after ``fork``)
takes ``asyncio.get_running_loop()``. 3.12 dropped the ``getpid()``; this module
can go with 3.11.
"""

from __future__ import annotations

import asyncio
import os
import threading

__all__ = ["running_loop", "running_loop_or_none"]

_LAST: list[tuple[int, asyncio.AbstractEventLoop] | None] = [None]


def _forget() -> None:
    _LAST[0] = None


os.register_at_fork(after_in_child=_forget)


def running_loop() -> asyncio.AbstractEventLoop:
    """The running loop of this thread; ``RuntimeError`` outside one (as asyncio's)."""
    ident = threading.get_ident()
    last = _LAST[0]
    if last is not None and last[0] == ident and getattr(last[1], "_thread_id", None) == ident:
        return last[1]
    loop = asyncio.get_running_loop()
    _LAST[0] = (ident, loop)
    return loop


def running_loop_or_none() -> asyncio.AbstractEventLoop | None:
    """``running_loop()``, or ``None`` outside a running loop."""
    try:
        return running_loop()
    except RuntimeError:
        return None
