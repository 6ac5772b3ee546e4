"""Processes as Linux's ``/proc`` shows them: a process's live children, and whether a
process ended.

A zombie (ended, not yet reaped by its parent) counts as ended everywhere here.
``medsecrets.testing.serverproc.ServerProcess.children`` lists a server's children (its
workers, with or without its monitor process, zombies included) for the tests that hold
a ``ServerProcess``; ``live_children`` is for the others.
"""

from __future__ import annotations

import os
from pathlib import Path


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


def live_children(command: bytes, parent: int | None = None) -> list[int]:
    """The children of ``parent`` (this process by default) that have not ended and whose
    command line contains ``command``, sorted."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _state_and_parent(entry)
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if stat is not None and stat[1] == parent and stat[0] != "Z" and command in cmdline:
            found.append(int(entry))
    return sorted(found)
