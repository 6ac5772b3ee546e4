"""File descriptor helpers: ``write_all`` (all of a buffer) and ``open_regular`` (a regular
file only, never blocking on a FIFO)."""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO, Final

__all__ = ["NOT_REGULAR", "NotRegularFileError", "open_regular", "write_all"]

NOT_REGULAR: Final = (
    "not a regular file (a pipe, FIFO, device or directory cannot be read: copy it to a file)"
)


class NotRegularFileError(OSError):
    """``open_regular`` was given something other than a regular file."""


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd``, calling ``os.write`` until it has taken them
    all (a pipe or a full disk may take part of a buffer); raises its ``OSError``."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def open_regular(path: str | os.PathLike[str], *, buffered: bool = True) -> BinaryIO:
    """The regular file at ``path`` opened for binary reading (the caller closes it).

    Anything else (a FIFO or pipe would be read once, or block forever without
    a writer; a device may never end) raises ``NotRegularFileError`` (an
    ``OSError`` with ``EINVAL``, ``NOT_REGULAR`` and the name) before it is
    opened; the file is opened with ``O_NONBLOCK`` and checked again
    (``fstat``), so a FIFO put at the name meanwhile cannot block either.
    Raises ``OSError`` for a file that cannot be opened.
    """
    name = os.fspath(path)
    if not stat.S_ISREG(os.stat(name).st_mode):
        raise NotRegularFileError(errno.EINVAL, NOT_REGULAR, name)
    descriptor = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise NotRegularFileError(errno.EINVAL, NOT_REGULAR, name)
        return open(descriptor, "rb", buffering=-1 if buffered else 0)
    except BaseException:
        os.close(descriptor)
        raise
