"""The storage contract: an untrusted key → bytes store.

Storage never sees plaintext: the barrier above it encrypts every value.
Keys are non-empty UTF-8 strings of at most ``MAX_KEY_LENGTH`` characters,
without NUL; values are ``bytes`` of any length up to ``MAX_VALUE_SIZE``.

Every backend must pass ``medsecrets.storage.testing`` (the conformance suite).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from medsecrets.errors import InvalidRequest, StorageError

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_VALUE_SIZE",
    "DefersDurability",
    "Delete",
    "Expect",
    "Lease",
    "ListPage",
    "Operation",
    "Put",
    "StorageBackend",
    "WriteLockBusy",
    "check_key",
]

MAX_KEY_LENGTH = 4096
MAX_VALUE_SIZE = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Put:
    """Write ``value`` at ``key`` (create or replace)."""

    key: str
    value: bytes

    def __repr__(self) -> str:  # values are ciphertext, but keep reprs small anyway
        return f"Put(key={self.key!r}, size={len(self.value)})"


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove ``key``; deleting a missing key is not an error."""

    key: str


@dataclass(frozen=True, slots=True)
class Expect:
    """Condition of a batch: ``key`` currently holds exactly ``value`` (``None``: absent).

    If any condition of a batch does not hold, nothing in the batch is applied
    and ``batch`` raises ``medsecrets.errors.ConflictError``.

    ``shared``: the condition is a *read check* (``key`` must not change under the
    batch, which does not write it), not a precondition of writing ``key``. A
    backend may then let batches that only check ``key`` run at once, while a
    write of ``key`` still waits for (or conflicts with) every check in flight.
    A shared check of a key its own batch writes, or of an absent key, is
    treated as a plain condition. The outcome is the same either way.
    """

    key: str
    value: bytes | None
    shared: bool = False

    def __repr__(self) -> str:
        size = None if self.value is None else len(self.value)
        shared = ", shared=True" if self.shared else ""
        return f"Expect(key={self.key!r}, size={size}{shared})"


Operation = Put | Delete | Expect


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of keys, sorted by code point; ``next_after`` continues it (None: done)."""

    keys: tuple[str, ...]
    next_after: str | None


@dataclass(frozen=True, slots=True)
class Lease:
    """A named, expiring lock held by ``holder`` until ``expires_at`` (unix seconds).

    ``token`` changes on every acquire so a holder that lost its lease cannot
    renew or release someone else's.
    """

    name: str
    holder: str
    token: str
    expires_at: float


@runtime_checkable
class StorageBackend(Protocol):
    """An untrusted, durable key → bytes store.

    Contract (checked by the conformance suite):

    - ``get`` returns the stored bytes or ``None``.
    - ``put`` is durable when it returns (fsync'd / committed synchronously).
    - ``delete`` of a missing key is a no-op.
    - ``list(prefix, after=, limit=)`` returns keys that start with ``prefix``
      and sort strictly after ``after``, in code point order, at most ``limit``.
    - ``batch(ops)`` applies all ``Put``/``Delete`` operations atomically and
      durably, or none of them; ``Expect`` operations are checked first under
      the same transaction (``ConflictError`` if one fails).
    - Leases: ``acquire_lease`` returns a ``Lease`` if the name is free or its
      lease has expired (takeover), else ``None``; ``renew_lease`` extends a
      held lease or raises ``LeaseLostError``; ``release_lease`` frees it if
      still held (no error otherwise).
    - Several threads and processes may use the same store at once.
    - Backend failures raise ``StorageError`` with no value in the message.
    """

    def get(self, key: str) -> bytes | None:
        """The value at ``key`` or ``None``."""
        ...

    def put(self, key: str, value: bytes) -> None:
        """Durably store ``value`` at ``key``."""
        ...

    def delete(self, key: str) -> None:
        """Durably remove ``key`` (no error when absent)."""
        ...

    def list(self, prefix: str = "", *, after: str = "", limit: int = 1000) -> ListPage:
        """Keys under ``prefix`` after ``after``, sorted, at most ``limit``."""
        ...

    def batch(self, ops: Sequence[Operation]) -> None:
        """Apply ``ops`` atomically and durably (see class docstring)."""
        ...

    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        """Take the lease ``name`` for ``ttl`` seconds if free or expired."""
        ...

    def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        """Extend a held lease by ``ttl`` seconds from now."""
        ...

    def release_lease(self, lease: Lease) -> None:
        """Give the lease up if still held by this token."""
        ...

    def close(self) -> None:
        """Release connections and file handles. Idempotent."""
        ...


def check_key(key: str) -> str:
    """Validate a storage key; raise ``InvalidRequest`` naming the rule."""
    if not isinstance(key, str) or not key:
        raise InvalidRequest("storage key must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidRequest(f"storage key longer than {MAX_KEY_LENGTH} characters")
    if "\x00" in key:
        raise InvalidRequest("storage key contains NUL")
    return key


@runtime_checkable
class DefersDurability(Protocol):
    """A backend whose writes can return before they are durable, for an event loop.

    Inside ``deferring()`` (a context manager; it applies to the current
    thread or task only), ``put``/``delete``/``batch`` return as soon as the
    write is committed and visible, without waiting for the disk. The caller
    must then await ``settled_async()`` before telling anyone the write
    happened. ``settled_async()`` is ``None`` when every write committed so
    far, in this process, is durable and the calling task waits on no write
    not yet committed, else a future of the running loop that is done when
    they are (or raises the ``StorageError`` that made them fail). A backend
    may hold a task's deferred writes in a transaction it commits later (one
    shared by the writes of a loop iteration): such a write's failure, or a
    failure of a commit whose rows the task read, comes from
    ``settled_async()``.
    Outside ``deferring()`` every write is durable when it returns, as the
    ``StorageBackend`` contract says.
    """

    def deferring(self) -> AbstractContextManager[None]:
        """Writes inside return before they are durable; one that would wait for a lock raises
        ``WriteLockBusy`` instead, having written nothing."""
        ...

    def settled_async(self) -> asyncio.Future[None] | None: ...


class WriteLockBusy(StorageError):
    """A write inside ``deferring()`` found the write lock taken and wrote nothing:
    run it again outside ``deferring()``, where writes wait for the lock."""
