"""``fd_paths``: file names that read back given bytes, with no file on any disk.

For APIs that take only a path (``ssl.SSLContext.load_cert_chain``) when the bytes
were read and checked already: opening the original path again would read whatever
is there by then (another file swapped in; a FIFO, which blocks for ever). Each blob
becomes, on Linux, an anonymous in-memory file (``memfd_create``) sealed against any
change, named ``/proc/self/fd/N``; where that is missing or refused, a pipe that a
thread fills, named ``/dev/fd/N``, which can be read once. Neither is ever written to
a disk, so a private key's bytes never reach a persistent place; every descriptor is
closed (and every feeding thread joined) when the context ends.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator

from medsecrets.fdio import write_all

__all__ = ["fd_paths"]


@contextlib.contextmanager
def fd_paths(*blobs: bytes) -> Iterator[list[str]]:
    """A path for each of ``blobs`` that reads back exactly its bytes (at least once),
    valid inside the context only. Raises ``OSError`` (``ENOTSUP``) on a platform with
    neither ``memfd_create`` nor ``/dev/fd``: a path to the caller's file is never
    handed out in their place."""
    with contextlib.ExitStack() as stack:
        yield [_fd_path(stack, blob) for blob in blobs]


def _fd_path(stack: contextlib.ExitStack, data: bytes) -> str:
    fd = _sealed_memfd(data)
    if fd is not None:
        stack.callback(os.close, fd)
        return f"/proc/self/fd/{fd}"
    return _fed_pipe(stack, data)


def _sealed_memfd(data: bytes) -> int | None:
    """An anonymous in-memory file holding ``data``, sealed (no write, no resize); ``None``
    where there is no ``memfd_create`` or ``/proc/self/fd``, or the kernel refuses."""
    create = getattr(os, "memfd_create", None)
    if create is None or not os.path.isdir("/proc/self/fd"):
        return None
    import fcntl  # (Linux only: no seals elsewhere, no such module on Windows)

    seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
    try:
        fd: int = create("medsecrets-pem", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError:  # (a sandbox without the system call)
        return None
    try:
        write_all(fd, data)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except OSError:
        os.close(fd)
        return None
    return fd


def _fed_pipe(stack: contextlib.ExitStack, data: bytes) -> str:
    """``/dev/fd/N`` of a pipe's read end that a thread fills with ``data`` (a pipe holds
    less than a large file) then closes; at the end of ``stack`` the read end is closed
    (a writer the reader left blocked stops at once: ``EPIPE``) and the thread joined."""
    if not os.path.isdir("/dev/fd"):
        raise OSError(errno.ENOTSUP, "no memfd_create or /dev/fd on this platform")
    read_end, write_end = os.pipe()

    def feed() -> None:
        with contextlib.suppress(OSError):  # the reader stopped early: the rest is unwanted
            write_all(write_end, data)
        os.close(write_end)

    thread = threading.Thread(target=feed, name="medsecrets-pem-feed", daemon=True)
    try:
        thread.start()
    except BaseException:
        os.close(read_end)
        os.close(write_end)
        raise
    stack.callback(thread.join)
    stack.callback(os.close, read_end)  # (callbacks run last first: closed, then joined)
    return f"/dev/fd/{read_end}"
