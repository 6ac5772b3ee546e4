"""``VersionTable``: the per-category list of KEK versions, kept through the barrier.

Both KEK providers keep one record per category at ``<prefix><category>``: a
JSON list of version entries (``version``, ``created_at`` and the provider's own
fields). Versions are appended atomically with check-and-set, so two processes
rotating at once never lose a version, and two using a category first at once make
one version 1 (the loser takes the winner's). An entry made for a write that lost its
check-and-set is handed to the provider's ``on_lost`` once the append is over, so that it
can dispose of what it made for it (a KMS key nobody records). Entries are cached for
unwrapping (re-read when a version newer than the cache is asked for); the newest version,
which wrapping and rewrapping go by, is read afresh each time: the sealed record is read from
storage, and decrypted and parsed only if it is not the record the cache was filled from
(the same sealed bytes under the same key hold the same table; a write made here is read
afresh next time).

The cache holds key material (a local KEK's raw bytes): its provider's ``forget``
drops it when the barrier seals. A read that was under way at a ``forget`` caches
nothing: ``forget`` raises a generation count first, and a fill is made only if the
count is the one read before its read (``generation``, for the provider's caches too).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence

from medsecrets.barrier.base import SecureStorage
from medsecrets.clock import Clock
from medsecrets.errors import ConflictError, DecryptionError
from medsecrets.storage.base import Expect, Put

__all__ = ["Entry", "VersionTable"]

Entry = Mapping[str, str]
"""One version entry: ``version`` (decimal), ``created_at`` (ISO 8601) and provider fields."""


class VersionTable:
    """Cached, append-only per-category version lists."""

    def __init__(
        self,
        secure: SecureStorage,
        prefix: str,
        *,
        clock: Clock,
        make_entry: Callable[[str, int], dict[str, str]],
        on_lost: Callable[[str, Sequence[Entry], Sequence[Entry]], None] | None = None,
    ) -> None:
        """``make_entry(category, number)`` creates the provider fields of a new version.
        ``on_lost(category, lost, stored)``, called when an append ends (returning or
        raising), gets the entries made for writes that lost their check-and-set (never
        stored by this append; a write that failed otherwise, whose outcome may be unknown,
        is not among them) and the entries last seen stored; it must not raise."""
        self._secure = secure
        self._prefix = prefix
        self._clock = clock
        self._make_entry = make_entry
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[Entry, ...]] = {}
        self._records: dict[str, bytes] = {}  # the sealed record each cached table was read from
        self._generation = 0  # forgets so far: a fill that saw one come keeps nothing

    @property
    def generation(self) -> int:
        """How many ``forget`` calls so far: a cache built on these entries reads it before
        asking for them and keeps what it built only while it is unchanged."""
        return self._generation

    def forget(self) -> None:
        """Drop the cache (the store sealed). A read under way keeps nothing it read."""
        with self._lock:
            self._generation += 1
            self._cache.clear()
            self._records.clear()

    def _fill(
        self,
        category: str,
        entries: tuple[Entry, ...],
        generation: int,
        record: bytes | None = None,
    ) -> None:
        """Cache ``entries`` (read from the sealed ``record``; ``None``: written here, so
        its record is not known and the next ``newest`` reads it afresh)."""
        with self._lock:  # forget raises the count under the same lock
            if self._generation == generation:
                self._cache[category] = entries
                if record is None:
                    self._records.pop(category, None)
                else:
                    self._records[category] = record

    def categories(self) -> list[str]:
        """Categories with a cached table (for reprs)."""
        with self._lock:
            return sorted(self._cache)

    def _read(self, category: str) -> tuple[list[dict[str, str]], bytes | None]:
        """The stored entries and their sealed record (the etag), ``([], None)`` if none."""
        key = self._prefix + category
        return self._parse(key, self._secure.get_record(key))

    def _parse(self, key: str, record: bytes | None) -> tuple[list[dict[str, str]], bytes | None]:
        if record is None:
            return [], None
        entries: list[dict[str, str]] = json.loads(self._secure.open_record(key, record))[
            "versions"
        ]
        return entries, record

    def add(self, category: str) -> tuple[Entry, ...]:
        """Append a new version atomically and return the whole list."""
        return self._add(category, self._generation)  # read before the barrier's seal check

    def _add(self, category: str, generation: int, *, first: bool = False) -> tuple[Entry, ...]:
        """Append a version; ``first``: only version 1, so a first use that lost its race
        to another process's first use takes that version 1 (it is not a rotation)."""
        key = self._prefix + category
        lost: list[Entry] = []  # made for a write that lost its check-and-set
        stored: tuple[Entry, ...] = ()
        try:
            for _ in range(20):
                entries, etag = self._read(category)
                stored = tuple(entries)
                if first and entries:
                    self._fill(category, stored, generation, etag)
                    return stored
                number = len(entries) + 1
                entry = self._make_entry(category, number)
                entry.update(version=str(number), created_at=self._clock.now().isoformat())
                body = json.dumps({"versions": [*entries, entry]}).encode()
                try:
                    self._secure.batch([Expect(key, etag), Put(key, body)])
                except ConflictError:
                    lost.append(entry)
                    continue
                stored = (*entries, entry)
                self._fill(category, stored, generation)
                return stored
            raise ConflictError(
                f"could not add a KEK version for {category!r}: too much contention"
            )
        finally:
            if lost and self._on_lost is not None:
                self._on_lost(category, tuple(lost), stored)

    def entries(self, category: str, *, refresh: bool = False) -> tuple[Entry, ...]:
        """All versions of ``category``, oldest first; creates version 1 on first use."""
        with self._lock:
            cached = self._cache.get(category)
        if cached and not refresh:
            return cached
        generation = self._generation  # before the barrier's seal check
        key = self._prefix + category
        record = self._secure.get_record(key)  # raises SealedError while sealed
        with self._lock:
            current = self._cache.get(category)
            if current and record is not None and self._records.get(category) == record:
                return current  # the very record the cache was read from
        found, _ = self._parse(key, record)
        entries: tuple[Entry, ...] = tuple(found)
        if not entries:
            return self._add(category, generation, first=True)
        self._fill(category, entries, generation, record)
        return entries

    def newest(self, category: str) -> Entry:
        """The newest version entry, read afresh: another process (a worker, a node) may
        have rotated, and wrapping (or judging a rewrap) under a cached older version
        would keep data keys under the KEK being retired."""
        return self.entries(category, refresh=True)[-1]

    def find(self, category: str, number: int) -> Entry:
        """Version ``number``; re-reads once if newer than the cache; else ``DecryptionError``."""
        entries = self.entries(category)
        if number > len(entries):
            entries = self.entries(category, refresh=True)
        if not 1 <= number <= len(entries):
            raise DecryptionError()
        return entries[number - 1]
