"""CPU placement: the serving thread's CPUs, and one CPU for the audit processes and I/O.

A server process serves every request from one event-loop thread, and that thread holds the
GIL for all of the server's Python work: whenever the kernel preempts it, every request
waits. The audit process (``audit.process``) wakes for every batch the server sends it, and
a woken task tends to be placed on its waker's CPU and to preempt it. With ``audit.own_cpu``
(the default) a server that runs audit processes and may use two or more CPUs splits them:
the last allowed CPU goes to the audit processes, the others to the server process.

Measured on 2 cores (``docs/benchmarks.md``, session 8): audited reads +13% (10,500 against
9,300 req/s at 32 connections) with the p99 4.7 against 5.8 ms; durable writes +10%.

The transport's I/O thread (granian's Rust runtime: socket reads and writes, ~19 µs of
mostly kernel time a read on 2 cores) joins the audit processes once the server runs
(``io_threads``, ``place_threads``): it needs no GIL, so the loop's thread gets its CPU for
Python alone. Measured (``docs/benchmarks.md``, session 9): audited reads +9% holding 10,000
secrets and +13-17% holding 200, with a lower p99. granian's blocking thread, which takes the
GIL to hand each request to the loop, stays with the loop's thread: moved as well, reads fell
below the unmoved figure.

Only the calling thread is pinned (``pin_serving``, called before the server starts its
threads, which inherit it); each audit process is placed by ``RemoteLane`` when it starts.
With one allowed CPU, on a platform without ``sched_setaffinity``, with several worker
processes or without audit processes, nothing is placed.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from medsecrets.server.auditsetup import device_settings
from medsecrets.server.config import Settings

__all__ = [
    "Placement",
    "allowed_cpus",
    "io_threads",
    "pin_serving",
    "place_threads",
    "plan",
    "split_cpus",
    "thread_ids",
]

_TASKS = Path("/proc/self/task")

_EPOLL_WAITS: dict[str, frozenset[int]] = {
    "x86_64": frozenset({232, 281, 441}),  # epoll_wait, epoll_pwait, epoll_pwait2
    "aarch64": frozenset({22, 441}),  # epoll_pwait, epoll_pwait2
}
"""System call numbers an event loop's thread waits in, per machine (Linux)."""


@dataclass(frozen=True, slots=True)
class Placement:
    """Which CPUs the server process and its audit processes may run on (disjoint)."""

    serving: frozenset[int]
    audit: frozenset[int]


def allowed_cpus() -> frozenset[int]:
    """The CPUs this thread may run on (empty where the platform cannot tell)."""
    getter = getattr(os, "sched_getaffinity", None)
    if getter is None:
        return frozenset()
    try:
        return frozenset(getter(0))
    except OSError:
        return frozenset()


def split_cpus(allowed: Collection[int]) -> Placement | None:
    """The last of ``allowed`` for the audit processes, the rest for the server; ``None``
    with fewer than two CPUs."""
    cpus = sorted(allowed)
    if len(cpus) < 2:
        return None
    return Placement(serving=frozenset(cpus[:-1]), audit=frozenset(cpus[-1:]))


def plan(settings: Settings, allowed: Collection[int] | None = None) -> Placement | None:
    """The placement for a single-process server with ``settings`` (``None``: none).

    Only when ``audit.own_cpu``, audit and ``audit.process`` are on, at least one file
    device is configured (each runs in an audit process) and the server runs one process.
    """
    audit = settings.audit
    if not (audit.own_cpu and audit.enabled and audit.process) or settings.workers != 1:
        return None
    if not any(spec.type == "file" for spec in device_settings(settings)):
        return None
    if not hasattr(os, "sched_setaffinity"):
        return None
    return split_cpus(allowed_cpus() if allowed is None else allowed)


def pin_serving(placement: Placement) -> bool:
    """Restrict the calling thread (and the threads it starts from now on) to
    ``placement.serving``; whether that worked."""
    try:
        os.sched_setaffinity(0, placement.serving)
    except OSError:
        return False
    return True


def thread_ids() -> frozenset[int]:
    """The native ids of this process's threads (empty where ``/proc`` cannot tell)."""
    try:
        return frozenset(int(entry.name) for entry in _TASKS.iterdir())
    except (OSError, ValueError):
        return frozenset()


def io_threads(candidates: Collection[int]) -> list[int]:
    """Those of ``candidates`` (threads of this process) now waiting in ``epoll``: the
    I/O drivers of an event loop; ``[]`` on a machine whose numbers are not known here."""
    waits = _EPOLL_WAITS.get(platform.machine())
    if waits is None:
        return []
    found = []
    for tid in sorted(candidates):
        try:
            first = (_TASKS / str(tid) / "syscall").read_text().split(maxsplit=1)[0]
        except (OSError, IndexError):
            continue
        if first.isdigit() and int(first) in waits:
            found.append(tid)
    return found


def place_threads(tids: Collection[int], cpus: frozenset[int]) -> bool:
    """Restrict each of ``tids`` to ``cpus``; whether all of them could be."""
    placed = True
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            placed = False
    return placed
