"""``fd_paths``: file names that read back given bytes, with no file on any disk.

For APIs that take only a path (``ssl.SSLContext.load_cert_chain``) when the bytes
were read and checked already: opening the original path again would read whatever
is there by then (another file swapped in; a FIFO, which blocks for ever). Each blob
becomes, on Linux, an anonymous in-memory file (``memfd_create``) sealed against any
change, named ``/proc/self/fd/N``; where that is missing or refused, a pipe that a
thread fills, named ``/dev/fd/N``, which can be read once. Neither is ever written to
a disk, so a private key's bytes never reach a persistent place; every descriptor is
closed (and every feeding thread joined) when the context ends.

Fork-safe: a child made by ``os.fork`` meanwhile (another thread's ``multiprocessing``)
closes every descriptor opened here at once (``os.register_at_fork``), so its copy of a
pipe's write end cannot keep OpenSSL in the parent from seeing the end of the data; and a
feeding thread gives up when the context ends even if a copy of the read end lives on in
such a child (OpenSSL's own, which it opened by path), so the parent never waits for the
child. Either used to hold the parent for as long as the child lived.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import threading
from collections.abc import Iterator
from typing import Final

from medsecrets.fdio import write_all

__all__ = ["fd_paths"]

_OPEN: set[int] = set()
"""The descriptors ``fd_paths`` holds open now (closed in a forked child)."""

_FEED_POLL_SECONDS: Final = 0.05
"""How often a feeding thread blocked on a full pipe looks whether it should give up."""


def _opened(fd: int) -> int:
    _OPEN.add(fd)
    return fd


def _close(fd: int) -> None:
    """Close ``fd`` unless a fork closed it already (in the child: ``_close_inherited``)."""
    if fd in _OPEN:
        _OPEN.discard(fd)  # (first: a fork in between closes nothing reused since)
        os.close(fd)


def _close_inherited() -> None:
    """In a child made by ``os.fork``: close every descriptor ``fd_paths`` held in the
    parent (the child has no feeding thread and no use for them)."""
    for fd in list(_OPEN):
        with contextlib.suppress(OSError):
            os.close(fd)
    _OPEN.clear()


if hasattr(os, "register_at_fork"):  # (not on Windows, which has no /dev/fd either)
    os.register_at_fork(after_in_child=_close_inherited)


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
        stack.callback(_close, fd)
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
        fd = _opened(create("medsecrets-pem", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING))
    except OSError:  # (a sandbox without the system call)
        return None
    try:
        write_all(fd, data)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except OSError:
        _close(fd)
        return None
    return fd


def _fed_pipe(stack: contextlib.ExitStack, data: bytes) -> str:
    """``/dev/fd/N`` of a pipe's read end that a thread fills with ``data`` (a pipe holds
    less than a large file) then closes; at the end of ``stack`` the read end is closed
    (a writer the reader left blocked stops at once: ``EPIPE``), the thread told to give
    up (a copy of the read end in a forked child would keep it blocked) and joined."""
    if not os.path.isdir("/dev/fd"):
        raise OSError(errno.ENOTSUP, "no memfd_create or /dev/fd on this platform")
    read_end, write_end = (_opened(fd) for fd in os.pipe())
    os.set_blocking(write_end, False)  # (its own open file: the read end's stays blocking)
    stop = threading.Event()

    def feed() -> None:
        try:
            _feed(write_end, data, stop)
        finally:
            _close(write_end)

    thread = threading.Thread(target=feed, name="medsecrets-pem-feed", daemon=True)
    try:
        thread.start()
    except BaseException:
        _close(read_end)
        _close(write_end)
        raise
    stack.callback(thread.join)
    stack.callback(stop.set)
    stack.callback(_close, read_end)  # (callbacks run last first: closed, stopped, joined)
    return f"/dev/fd/{read_end}"


def _feed(fd: int, data: bytes, stop: threading.Event) -> None:
    """Write ``data`` to the non-blocking pipe end ``fd`` until it is all taken, the reader
    is gone (``EPIPE``) or ``stop`` is set (looked at while the pipe is full)."""
    view = memoryview(data)
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_WRITE)
        while view and not stop.is_set():
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:  # full: wait for room, the reader's end, or stop
                selector.select(_FEED_POLL_SECONDS)
            except OSError:  # the reader stopped early: the rest is unwanted
                return
