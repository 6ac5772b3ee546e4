"""Processes as Linux's ``/proc`` shows them, for tests and benchmarks: a process's children
(pid, state and command line) and whether a process ended (gone, or a zombie)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

__all__ = ["Child", "children_of", "ended"]


class Child(NamedTuple):
    """A child process: its pid, state letter (``Z``: a zombie) and raw command line."""

    pid: int
    state: str
    cmdline: bytes


def _state_and_parent(pid: int | str) -> tuple[str, int] | None:
    """The process's state letter and parent's pid; ``None`` once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def ended(pid: int) -> bool:
    """Whether process ``pid`` ended: it is gone, or a zombie."""
    found = _state_and_parent(pid)
    return found is None or found[0] == "Z"


def children_of(parent: int) -> list[Child]:
    """The children of ``parent`` (zombies included), by pid; a process that ends while
    it is being read is left out."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _state_and_parent(entry)
        if stat is None or stat[1] != parent:
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        found.append(Child(int(entry), stat[0], cmdline))
    return sorted(found)
