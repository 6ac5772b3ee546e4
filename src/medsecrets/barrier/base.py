"""The barrier contract: the only layer that encrypts storage.

Everything above the barrier sees plaintext; everything below sees only
sealed records. ``SecureStorage`` is the view engines get: the storage
operations, with values in plaintext. ``Barrier.keyring_info`` answers with
``medsecrets.schema.system.KeyringInfo`` (an API value type).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from medsecrets.schema.system import KeyringInfo
from medsecrets.sensitive import Sensitive
from medsecrets.storage.base import ListPage, Operation

__all__ = ["Barrier", "SecureStorage"]


@runtime_checkable
class SecureStorage(Protocol):
    """Plaintext view of storage through the barrier.

    Same contract as ``StorageBackend`` except: values given to ``put`` and
    ``Put`` are plaintext and are encrypted with the storage key as associated
    data; ``get_with_etag`` returns the plaintext and an opaque *etag* (the raw
    stored record) to use in ``Expect(key, etag)`` for check-and-set batches;
    ``get_record``/``open_record`` split that read so a caller can skip the
    decryption of a record it has seen before (keyed by storage key and etag).
    Any call while sealed raises ``SealedError``; a record that fails
    authentication raises ``DecryptionError``.
    """

    def get(self, key: str) -> bytes | None: ...

    def get_with_etag(self, key: str) -> tuple[bytes | None, bytes | None]: ...

    def get_record(self, key: str) -> bytes | None:
        """The sealed record (the etag) at ``key``, not decrypted: for content-addressed caches."""
        ...

    def open_record(self, key: str, record: bytes) -> bytes:
        """Decrypt a record that ``get_record(key)`` returned."""
        ...

    def put(self, key: str, value: bytes) -> None: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str = "", *, after: str = "", limit: int = 1000) -> ListPage: ...

    def batch(self, ops: Sequence[Operation]) -> Mapping[str, bytes]:
        """Apply ``ops`` atomically; returns the etag of every key the batch wrote."""
        ...


@runtime_checkable
class Barrier(SecureStorage, Protocol):
    """A sealable ``SecureStorage`` holding the keyring, encrypted under the root key."""

    @property
    def sealed(self) -> bool: ...

    def initialized(self) -> bool:
        """Whether a keyring exists in storage (works while sealed)."""
        ...

    def initialize(self, root_key: Sensitive[bytes], also: Sequence[Operation] = ()) -> None:
        """Create keyring term 1, store it under ``root_key`` in one atomic batch with
        ``also`` (the seal's records and conditions); leaves the barrier unsealed.
        ``AlreadyInitializedError`` if a keyring exists or a condition of ``also`` fails."""
        ...

    def unseal(self, root_key: Sensitive[bytes]) -> None:
        """Load the keyring with ``root_key``; ``DecryptionError`` if it is wrong."""
        ...

    def seal(self) -> None:
        """Drop all key material from memory, then run every ``on_seal`` callback. Idempotent."""
        ...

    def on_seal(self, forget: Callable[[], None]) -> None:
        """Have ``forget`` run after every ``seal``, so a cache of what was read through
        the barrier is dropped with its keys, whoever seals it (an operator's request, the
        latch of another worker, a stop). Run without the barrier's lock held, so it may
        take its own locks; it must not raise. A bound method is held weakly (its object
        may go away first); any other callable strongly."""
        ...

    def rotate(self) -> int:
        """Add a keyring term; the new term encrypts, all terms decrypt. Returns it."""
        ...

    def keyring_info(self) -> KeyringInfo: ...

    def change_root_key(self, new_root_key: Sensitive[bytes]) -> None:
        """Re-encrypt the keyring under a new root key (used by rekey)."""
        ...
