"""``write_all``: all of a buffer to a file descriptor."""

from __future__ import annotations

import os

__all__ = ["write_all"]


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd``, calling ``os.write`` until it has taken them
    all (a pipe or a full disk may take part of a buffer); raises its ``OSError``."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
