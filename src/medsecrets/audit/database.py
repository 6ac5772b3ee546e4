"""``DatabaseAuditDevice``: audit records in the store's own storage backend.

Each record line is stored as-is under ``audit/<node>/<name>/<seq:020d>``
(zero-padded, so key order is chain order). Records are written *raw*, not
through the barrier: they hold no secret value (every sensitive field is an
HMAC, see ``record.Salter``), and raw records stay readable and verifiable
while the store is sealed.

Contract:

- ``write(lines)`` is one storage batch: all the lines commit together,
  durably (one fsync for SQLite), or none does. Each ``Put`` carries
  ``Expect(key, None)``, so a record is never overwritten: a second writer
  on the same chain (two servers sharing a node id, a stale head) fails with
  ``ConflictError`` instead of forking the chain silently. A batch that was
  committed although its caller saw an error is recognised on retry (same
  bytes already stored) and accepted; a spurious serialization failure of
  the backend is retried a few times.
- ``open()`` finds the last record with a binary search over ``list``
  (about 2·log2(n) one-key listings, not a scan) and returns its head.
- ``records(since_seq)`` yields the stored lines with ``seq > since_seq`` in
  order (paginated ``list`` + ``get``).
- ``close()`` does nothing: the storage belongs to the caller.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final

from medsecrets.audit.device import ChainHead
from medsecrets.audit.record import LineError, split_line
from medsecrets.errors import ConfigError, ConflictError, InvalidRequest
from medsecrets.storage.base import Expect, Operation, Put, StorageBackend

__all__ = ["DatabaseAuditDevice"]

_WIDTH: Final = 20
_MAX_SEQ: Final = 10**_WIDTH - 1
_ATTEMPTS: Final = 3
_PAGE: Final = 1000


def _check_segment(what: str, value: str) -> None:
    if not value or "/" in value or "\x00" in value:
        raise ConfigError(f"database audit device: {what} must be non-empty, without '/' or NUL")


class DatabaseAuditDevice:
    """An ``AuditDevice`` over a ``StorageBackend`` (see module docstring)."""

    def __init__(self, name: str, storage: StorageBackend, *, node: str) -> None:
        _check_segment("name", name)
        _check_segment("node", node)
        self._name = name
        self._storage = storage
        self._prefix = f"audit/{node}/{name}/"

    def __repr__(self) -> str:
        return f"DatabaseAuditDevice(name={self._name!r}, prefix={self._prefix!r})"

    @property
    def name(self) -> str:
        """The device's configured name."""
        return self._name

    @property
    def prefix(self) -> str:
        """The storage key prefix of this device's records."""
        return self._prefix

    @property
    def storage(self) -> StorageBackend:
        """The storage the records are kept in (the store's own)."""
        return self._storage

    def key(self, seq: int) -> str:
        """The storage key of the record ``seq``."""
        return f"{self._prefix}{seq:0{_WIDTH}d}"

    def open(self) -> ChainHead:
        """The head of the chain already stored (``ChainHead()`` when none)."""
        last = self._last_key()
        if last is None:
            return ChainHead()
        line = self._storage.get(last)
        if line is None:  # never deleted by us; someone removed it meanwhile
            raise ConfigError(f"audit record {last!r} vanished while opening the device")
        try:
            _prev, seq, digest = split_line(line)
        except LineError:
            raise ConfigError(f"audit record {last!r} is not an audit record") from None
        if self.key(seq) != last:
            raise ConfigError(f"audit record {last!r} holds seq {seq}")
        return ChainHead(seq=seq, hash=digest)

    def write(self, lines: Sequence[bytes]) -> None:
        """Store ``lines`` in one atomic, durable batch (see module docstring)."""
        if not lines:
            return
        puts: list[Put] = []
        for line in lines:
            try:
                seq = split_line(line)[1]
            except LineError:
                raise InvalidRequest("the database audit device stores record lines only") from None
            puts.append(Put(self.key(seq), line))
        ops: list[Operation] = [Expect(put.key, None) for put in puts]
        ops.extend(puts)
        for attempt in range(_ATTEMPTS):
            try:
                self._storage.batch(ops)
                return
            except ConflictError:
                stored = [self._storage.get(put.key) for put in puts]
                if all(value == put.value for value, put in zip(stored, puts, strict=True)):
                    return  # an earlier attempt committed
                if any(value is not None for value in stored) or attempt == _ATTEMPTS - 1:
                    raise ConflictError(
                        f"audit device {self._name!r}: records exist already under"
                        f" {self._prefix!r} (a second writer on this chain?)"
                    ) from None

    def recover(self) -> ChainHead:
        """The head the storage really holds (after a write whose outcome is unknown)."""
        return self.open()

    def records(self, since_seq: int = 0) -> Iterator[bytes]:
        """The stored lines with ``seq > since_seq``, in chain order."""
        after = self.key(max(since_seq, 0))
        while True:
            page = self._storage.list(self._prefix, after=after, limit=_PAGE)
            for key in page.keys:
                line = self._storage.get(key)
                if line is not None:
                    yield line
            if page.next_after is None:
                return
            after = page.next_after

    def close(self) -> None:
        """Nothing to release: the storage belongs to the caller."""

    # -- internals ---------------------------------------------------------

    def _first_after(self, seq: int) -> str | None:
        page = self._storage.list(self._prefix, after=self.key(seq), limit=1)
        return page.keys[0] if page.keys else None

    def _last_key(self) -> str | None:
        """The greatest key under the prefix, by binary search on ``seq``."""
        if self._first_after(0) is None:
            return None
        low, high = 0, 1  # invariant: some key sorts after key(low)
        while high < _MAX_SEQ and self._first_after(high) is not None:
            low, high = high, min(high * 2, _MAX_SEQ)
        while high - low > 1:  # now nothing sorts after key(high) (or high is the max)
            middle = (low + high) // 2
            if self._first_after(middle) is None:
                high = middle
            else:
                low = middle
        last = self._first_after(low)
        if last is None or self._first_after(high) is not None:
            raise ConfigError(f"unexpected keys under the audit prefix {self._prefix!r}")
        return last
