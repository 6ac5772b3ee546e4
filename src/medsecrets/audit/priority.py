"""The audit process's CPU priority: ``SCHED_IDLE``, and how to tell that it is starved.

An audit process (``RemoteLane``) renders, writes and fsyncs whatever the server sends,
as fast as it can: it takes every cycle its CPU has. Under the default scheduling policy
a thread that wakes on that CPU, the transport's I/O thread above all (``server.placement``
puts them together), often waits for it to yield. Under ``SCHED_IDLE`` any other thread
that wakes runs at once, and the audit process takes what is left, which is plenty while
the server is its only neighbour: the server's requests wait for its answers, so the
server's threads sleep when it must run. Measured on 2 cores: audited reads +5% (``make
bench-paired``, 13 of 16 rounds faster), the I/O thread's wait for its CPU 23 -> 9 µs a
read (``docs/benchmarks.md``, session 24).

The risk is starvation: another program keeping that CPU busy leaves an idle-priority
process almost nothing. So a process is made idle only where its scheduling can be read
(``/proc/<pid>/schedstat``, ``/proc/<pid>/stat``), and ``Starvation`` tells from it when
one with a late answer is runnable but does not run; its lane then puts it back to the
normal policy (or, where that needs a privilege the server lacks, starts a new one at
normal priority).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

__all__ = [
    "STARVED_AFTER",
    "STARVED_RUN",
    "Starvation",
    "is_idle",
    "make_idle",
    "make_normal",
    "schedule_state",
]

STARVED_AFTER: Final = 0.1
"""Seconds an answer may be late before the audit process's scheduling is looked at, and
the least time it is watched over (a healthy answer takes a few milliseconds)."""

STARVED_RUN: Final = 0.1
"""The most of that time it may have run and be starved, seen runnable all along: one
waiting on its disk is not runnable, and one behind a heavy load runs most of the time.
(Its run-queue wait cannot tell: the kernel counts it only once the task runs again.)"""


def schedule_state(pid: int) -> tuple[int, bool] | None:
    """Nanoseconds process ``pid`` (its main thread) has run, and whether it is runnable
    now (running or waiting for a CPU); ``None`` where the kernel does not say."""
    try:
        ran = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError, ValueError):
        return None
    return ran, state == "R"


def make_idle(pid: int) -> bool:
    """Put process ``pid`` (its main thread, and the threads it starts from now on)
    under ``SCHED_IDLE``; ``False``, changing nothing, where its scheduling cannot be read
    (starvation could not be seen). Raises ``OSError`` if the policy cannot be set."""
    if schedule_state(pid) is None or not hasattr(os, "SCHED_IDLE"):
        return False
    os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    return True


def is_idle(pid: int) -> bool:
    """Whether process ``pid`` (its main thread) runs under ``SCHED_IDLE``."""
    try:
        return hasattr(os, "SCHED_IDLE") and os.sched_getscheduler(pid) == os.SCHED_IDLE
    except OSError:
        return False


def make_normal(pid: int) -> None:
    """Put process ``pid`` and each of its threads back under the default policy
    (``SCHED_OTHER``). Raises ``PermissionError`` without ``CAP_SYS_NICE`` or an
    ``RLIMIT_NICE`` that allows it (a thread that ended meanwhile is skipped)."""
    os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
    try:
        threads = [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
    except (OSError, ValueError):
        return
    for tid in threads:
        try:
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
        except ProcessLookupError:
            continue


class Starvation:
    """Whether an idle-priority process with a late answer is starved (not thread-safe:
    one watchdog calls it)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._mark: tuple[float, int] | None = None  # since when runnable, its run time then

    def __repr__(self) -> str:
        return f"Starvation(pid={self.pid})"

    def check(self, now: float, late: bool) -> bool:
        """Called on every watchdog tick at monotonic time ``now``; ``late``: an answer
        is over ``STARVED_AFTER`` late. True once the process, late all along, has been
        seen runnable at every call for ``STARVED_AFTER`` seconds or more and has run for
        at most ``STARVED_RUN`` of that time."""
        seen = schedule_state(self.pid) if late else None
        if seen is None or not seen[1]:
            self._mark = None
            return False
        if self._mark is None:
            self._mark = (now, seen[0])
            return False
        since, ran = self._mark
        if now - since < STARVED_AFTER:
            return False
        self._mark = (now, seen[0])
        return (seen[0] - ran) / 1e9 <= STARVED_RUN * (now - since)
