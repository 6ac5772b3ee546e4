"""``SlowFsync``: an fsync seam for ``SqliteStorage(_fsync=...)`` tests."""

from __future__ import annotations

import os
import threading


class SlowFsync:
    """Records the file it flushed, holds each flush until ``open`` is set, raises
    ``error`` when one is given, and counts the flushes made (``finished``)."""

    def __init__(self) -> None:
        self.files: list[str] = []
        self.finished = 0
        self.open = threading.Event()
        self.open.set()
        self.error: OSError | None = None

    def __call__(self, fd: int) -> None:
        self.files.append(os.readlink(f"/proc/self/fd/{fd}"))
        assert self.open.wait(10)
        if self.error is not None:
            raise self.error
        os.fsync(fd)
        self.finished += 1
