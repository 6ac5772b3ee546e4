"""Worker processes for the offline tools (``audit verify``, ``audit analyze``).

``worker_count(workers, paths, extra=)`` decides how many: ``None`` means one
per core this process may run on plus ``extra``, when the files add up to
``PARALLEL_MIN_BYTES`` or more (smaller logs are done faster here than a pool
starts), else none; a number is taken as given. ``process_pool(workers)`` is the pool: forked when
that is safe (Linux, and no other thread in this process that a fork could
copy mid-operation), else started with ``forkserver`` (or ``spawn``); it is
shut down, pending work cancelled, when the block ends.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Final

__all__ = [
    "PARALLEL_MIN_BYTES",
    "cores",
    "file_size",
    "line_end",
    "process_pool",
    "read_range",
    "worker_count",
]

PARALLEL_MIN_BYTES: Final = 16 << 20
"""Files smaller than this (all of them together) are worked through in this process."""


def cores() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def file_size(path: str | os.PathLike[str]) -> int:
    """The size of the file at ``path``; 0 if it cannot be read (its reader reports why)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def worker_count(
    workers: int | None, paths: Iterable[str | os.PathLike[str]], *, extra: int = 0
) -> int:
    """Worker processes for ``paths`` (see module docstring); below 2 means none."""
    if workers is not None:
        return workers
    count = cores()
    if count > 1 and sum(file_size(path) for path in paths) < PARALLEL_MIN_BYTES:
        return 0
    return count + extra if count > 1 else count


@contextlib.contextmanager
def process_pool(workers: int) -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    """A pool of ``workers`` processes (see module docstring)."""
    fork = sys.platform == "linux" and threading.active_count() == 1
    methods = multiprocessing.get_all_start_methods()
    method = "fork" if fork else "forkserver" if "forkserver" in methods else "spawn"
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context(method)
    )
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def read_range(name: str, offset: int, length: int, identity: tuple[int, int]) -> bytes | None:
    """``length`` bytes at ``offset`` of the file at ``name`` (read in a worker, cheaper than
    sending them); ``None`` when that name no longer holds the file whose
    ``(device, inode)`` is ``identity`` (rotated, replaced) or the file is shorter. Opened
    with ``O_NONBLOCK``: a FIFO put at the name does not block (and is not the file)."""
    descriptor = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        status = os.fstat(descriptor)
        if (status.st_dev, status.st_ino) != identity:
            return None
        block = os.pread(descriptor, length, offset)
    finally:
        os.close(descriptor)
    return block if len(block) == length else None


def line_end(descriptor: int, position: int, size: int) -> int:
    """The offset after the first ``\\n`` at or after ``position`` in the open file (``size``
    if there is none before ``size``); reads 64 KiB at a time, only as far as that ``\\n``."""
    while position < size:
        found = os.pread(descriptor, min(1 << 16, size - position), position)
        if not found:
            return size
        newline = found.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        position += len(found)
    return size
