"""``ChangeStamp``: a shared 64-bit value that changes after every write to a file.

Every process that writes a SQLite file through ``SqliteStorage`` maps the
same small side file (``<database>-stamp``, mode 0600) and stores a fresh
random value in it after each commit (``bump``). A reader that remembers the
value it saw before reading knows, by reading it again (``read``: one load from
shared memory, no system call and no release of the GIL), whether anything
may have been written since: if the value is unchanged, nothing was committed
in between by any process on this host that writes through ``SqliteStorage``.

Values are random 64-bit numbers, not a counter, so concurrent bumps from
several processes need no lock: each makes the value differ from what every
reader saw, and a torn read (two halves of different values) equals a
remembered value with probability 2^-64.

The stamp is advisory for caches only: it never decides what is stored. A
file opened by software that does not bump the stamp (the ``sqlite3`` shell)
must not be written while a server runs (the same rule as for any backup).
"""

from __future__ import annotations

import mmap
import os
import random
import struct

__all__ = ["ChangeStamp"]

_FORMAT = struct.Struct("<Q")


class ChangeStamp:
    """The stamp side file of one database (see module docstring)."""

    __slots__ = ("_fd", "_map", "_random")

    def __init__(self, path: str) -> None:
        """Open (creating with mode 0600) and map ``path``; ``OSError`` if impossible."""
        self._random = random.Random(os.urandom(16))  # noqa: S311 (uniqueness, not secrecy)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            if os.fstat(fd).st_size < _FORMAT.size:
                os.ftruncate(fd, _FORMAT.size)
            self._map: mmap.mmap | None = mmap.mmap(fd, _FORMAT.size, mmap.MAP_SHARED)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.bump()  # a new process: whatever a crashed writer left unstamped is now stale

    def __repr__(self) -> str:
        return f"ChangeStamp({'open' if self._map is not None else 'closed'})"

    def read(self) -> int:
        """The current value (0 once closed: callers then treat every read as changed)."""
        mapped = self._map
        if mapped is None:
            return 0
        try:
            value: int = _FORMAT.unpack_from(mapped, 0)[0]
        except ValueError:  # closed by another thread meanwhile
            return 0
        return value

    def bump(self) -> None:
        """Store a fresh value: every reader's remembered value is now out of date."""
        mapped = self._map
        if mapped is not None:
            _FORMAT.pack_into(mapped, 0, self._random.getrandbits(64) | 1)

    def close(self) -> None:
        """Unmap and close the file (idempotent)."""
        mapped, self._map = self._map, None
        if mapped is not None:
            mapped.close()
            os.close(self._fd)
