"""Processes as Linux's ``/proc`` shows them: a process's live children, and whether a
process ended (``medsecrets.testing.procs``, which ``ServerProcess.children`` uses too).

A zombie (ended, not yet reaped by its parent) counts as ended everywhere here.
``medsecrets.testing.serverproc.ServerProcess.children`` lists a server's children (its
workers, with or without its monitor process, zombies included) for the tests that hold
a ``ServerProcess``; ``live_children`` is for the others.
"""

from __future__ import annotations

import os

from medsecrets.testing.procs import children_of, ended

__all__ = ["ended", "live_children"]


def live_children(command: bytes, parent: int | None = None) -> list[int]:
    """The children of ``parent`` (this process by default) that have not ended and whose
    command line contains ``command``, sorted."""
    parent = os.getpid() if parent is None else parent
    return [
        child.pid
        for child in children_of(parent)
        if child.state != "Z" and command in child.cmdline
    ]
