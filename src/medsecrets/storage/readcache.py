"""``ReadCache``: stored values remembered between writes, validated by a change stamp.

The cache holds raw storage values (ciphertext: storage is untrusted bytes,
so the cache holds nothing the file does not). It is valid for exactly one
stamp value (``storage.stamp.ChangeStamp``): a ``lookup`` that finds the stamp
changed drops everything first. A value is only stored (``offer``) if the
stamp read *before* it was fetched is still the cache's stamp, so a value
fetched while a write was committing can never outlive that write's bump.
Entries also expire after ``max_age`` seconds, a bound on what a writer that
crashed between its commit and its bump could leave behind.

At most ``max_bytes`` of values are kept (the whole cache is dropped when an
offer would exceed it: simple, and a full cache only costs re-reads).
Thread-safe under the GIL (dict operations are atomic; races only ever drop
entries or refuse an offer).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["ReadCache"]


class ReadCache:
    """See module docstring. ``stamp`` returns the current change stamp."""

    __slots__ = ("_bytes", "_clock", "_entries", "_max_age", "_max_bytes", "_stamp", "_valid_for")

    def __init__(
        self,
        stamp: Callable[[], int],
        *,
        max_bytes: int = 64 * 1024 * 1024,
        max_age: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stamp = stamp
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._clock = clock
        self._entries: dict[str, tuple[bytes, float, int]] = {}  # value, fetched at, stamp
        self._bytes = 0
        self._valid_for = -1

    def __repr__(self) -> str:
        return f"ReadCache(entries={len(self._entries)}, bytes={self._bytes})"

    def lookup(self, key: str) -> tuple[bytes | None, int]:
        """``(value or None, stamp)``: pass the stamp to ``offer`` after a miss."""
        stamp = self._stamp()
        if stamp != self._valid_for:
            self.clear()
            self._valid_for = stamp
            return None, stamp
        entry = self._entries.get(key)
        if entry is None or entry[2] != stamp:
            return None, stamp
        if self._clock() - entry[1] > self._max_age:
            return None, stamp
        return entry[0], stamp

    def offer(self, key: str, value: bytes, stamp: int) -> None:
        """Remember ``value``, fetched after ``lookup`` returned ``stamp``, if still valid."""
        if stamp != self._valid_for or stamp != self._stamp():
            return
        size = len(value)
        if self._bytes + size > self._max_bytes:
            self.clear()
            self._valid_for = stamp
            if size > self._max_bytes:
                return
        previous = self._entries.get(key)
        if previous is not None:
            self._bytes -= len(previous[0])
        self._entries[key] = (value, self._clock(), stamp)
        self._bytes += size

    def clear(self) -> None:
        """Forget everything (the next lookup starts afresh)."""
        self._entries = {}
        self._bytes = 0
        self._valid_for = -1
