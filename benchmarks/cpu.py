"""Where a load's CPU goes, from ``/proc`` (Linux): a server's event-loop thread, the whole
server process, its child processes (the audit process), and the machine's idle share.

``snapshot(pid)`` before and after a load, ``per_request(before, after, requests)`` for the
CPU each request cost. The event-loop thread is the server's main thread (granian runs the
app's coroutines on it; its own threads and ours are the rest of the process). A child that
starts or ends during the load is counted for the time it was seen in both snapshots only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medsecrets.testing.procs import children_of

__all__ = ["CpuShare", "CpuSnapshot", "per_request", "snapshot", "stat_ticks"]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """CPU ticks (user + system) so far: ``loop`` the main thread, ``server`` the process,
    ``children`` each child process by pid; ``busy``/``total`` the machine's (all CPUs)."""

    loop: int
    server: int
    children: dict[int, int]
    busy: int
    total: int


@dataclass(frozen=True, slots=True)
class CpuShare:
    """CPU per request in microseconds, and the machine's idle share in percent."""

    loop_us: float
    server_us: float
    children_us: float
    idle_percent: float


def stat_ticks(stat: str) -> int:
    """User + system ticks of a ``/proc/.../stat`` line (fields 14 and 15; the command
    name, field 2, may hold spaces and parentheses: fields are counted after its end)."""
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _read_ticks(path: str) -> int | None:
    try:
        return stat_ticks(Path(path).read_text())
    except (OSError, IndexError, ValueError):
        return None


def snapshot(pid: int) -> CpuSnapshot | None:
    """The CPU ticks of server ``pid`` and its children now (``None`` without ``/proc``)."""
    loop = _read_ticks(f"/proc/{pid}/task/{pid}/stat")
    server = _read_ticks(f"/proc/{pid}/stat")
    try:
        machine = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    except (OSError, IndexError):
        return None
    if loop is None or server is None or len(machine) < 8:
        return None
    children: dict[int, int] = {}
    for child in children_of(pid):
        ticks = _read_ticks(f"/proc/{child.pid}/stat")
        if ticks is not None:
            children[child.pid] = ticks
    counts = [int(value) for value in machine]
    idle = counts[3] + counts[4]  # idle and iowait
    return CpuSnapshot(loop, server, children, sum(counts) - idle, sum(counts))


def per_request(before: CpuSnapshot, after: CpuSnapshot, requests: int) -> CpuShare:
    """The CPU each of ``requests`` cost between the two snapshots of one server."""
    scale = 1e6 / _TICK / max(1, requests)
    children = sum(
        max(0, ticks - before.children[pid])
        for pid, ticks in after.children.items()
        if pid in before.children
    )
    total = max(1, after.total - before.total)
    return CpuShare(
        loop_us=(after.loop - before.loop) * scale,
        server_us=(after.server - before.server) * scale,
        children_us=children * scale,
        idle_percent=100.0 * (1 - (after.busy - before.busy) / total),
    )
