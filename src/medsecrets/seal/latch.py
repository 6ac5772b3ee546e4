"""The operator-seal latch: once an operator seals, every process of the server stays sealed.

An operator's seal (``POST /v1/sys/seal``) must hold for the whole server
until it restarts, against an auto-unseal asked for by anyone who can reach
the port (as Vault's does). With one process that is a flag in memory
(``LocalLatch``). A server with several worker processes shares one latch
file instead (``SharedLatch``): one byte, mapped by every worker, set by the
worker that served the seal and seen by the others on their next request
(``SecretStore.follow_latch``) and by their latch watchers within a tick.

The server process creates the file (``SharedLatch.create``) before it starts
its workers, which open it by path (``SharedLatch.open``); the file lives as
long as the server process (``SharedLatch.remove`` at its exit), so a restart
starts unlatched, while a worker respawned during the run finds the latch set
and stays sealed.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import tempfile
from typing import Final, Protocol

from medsecrets.processes import alive

__all__ = ["LATCH_PREFIX", "LatchError", "LocalLatch", "SealLatch", "SharedLatch"]

LATCH_PREFIX: Final = ".seal-latch-"
"""File name prefix of a shared latch (followed by the server process's pid)."""

_SIZE: Final = mmap.PAGESIZE
_SET: Final = 1


class LatchError(Exception):
    """A shared latch file that cannot be created or opened (the message says why)."""


class SealLatch(Protocol):
    """Whether an operator sealed the server (see module docstring).

    ``shared``: the latch of several processes, each with its own copy of the keys
    (then only auto-unseal seals work, and a process follows the others' unseal).
    """

    shared: bool

    def is_set(self) -> bool:
        """True once an operator sealed (until ``clear``)."""
        ...

    def set(self) -> None:
        """An operator sealed: every process must stay sealed."""
        ...

    def clear(self) -> None:
        """Unsealed with Shamir shares (which an operator holds): the latch is lifted."""
        ...


class LocalLatch:
    """The latch of a one-process server: a flag in memory."""

    __slots__ = ("_set",)

    shared = False

    def __init__(self) -> None:
        self._set = False

    def __repr__(self) -> str:
        return f"LocalLatch(set={self._set})"

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True

    def clear(self) -> None:
        self._set = False


class SharedLatch:
    """One byte of a file mapped by every process of a server (see module docstring)."""

    __slots__ = ("_map", "path")

    shared = True

    def __init__(self, path: str, fd: int) -> None:
        """Map the open latch file ``fd`` (use ``create`` or ``open``); ``fd`` is closed."""
        try:
            self._map = mmap.mmap(fd, _SIZE, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)
        self.path = path

    def __repr__(self) -> str:
        return f"SharedLatch(path={self.path!r}, set={self.is_set()})"

    @classmethod
    def create(cls, directory: str) -> SharedLatch:
        """A new, unset latch file in ``directory`` (0600), named for this process.

        Latch files left by server processes that no longer run (killed before
        ``remove``) are removed first. ``LatchError`` when it cannot be made.
        """
        _remove_stale(directory)
        try:
            fd, path = tempfile.mkstemp(prefix=f"{LATCH_PREFIX}{os.getpid()}-", dir=directory)
        except OSError as exc:
            reason = exc.strerror
            raise LatchError(f"cannot create a seal latch in {directory} ({reason})") from None
        try:
            os.ftruncate(fd, _SIZE)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise LatchError(f"cannot size the seal latch {path} ({exc.strerror})") from None
        return cls(path, fd)

    @classmethod
    def open(cls, path: str) -> SharedLatch:
        """The latch file a server process created; ``LatchError`` when ``path`` is not one."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise LatchError(f"cannot open the seal latch {path} ({exc.strerror})") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size != _SIZE or info.st_uid != os.getuid():
            os.close(fd)
            raise LatchError(f"{path} is not a seal latch of this server")
        return cls(path, fd)

    def is_set(self) -> bool:
        return self._map[0] == _SET

    def set(self) -> None:
        self._map[0] = _SET

    def clear(self) -> None:
        self._map[0] = 0

    def remove(self) -> None:
        """Delete the file (the server process, at its exit); the mapping stays usable."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _remove_stale(directory: str) -> None:
    """Remove the latch files of server processes that are gone."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not name.startswith(LATCH_PREFIX):
            continue
        pid_text = name[len(LATCH_PREFIX) :].partition("-")[0]
        if not pid_text.isdigit() or alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, name))
