"""``get_or_create``: a key generated once and kept through the barrier.

Several processes may race to create it: the first batch wins (an ``Expect``
of absence guards the put) and everyone reads back the stored value, so all
processes end up with the same key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from medsecrets.barrier.base import SecureStorage
from medsecrets.errors import ConflictError, StorageError
from medsecrets.storage.base import Expect, Put

__all__ = ["get_or_create"]


def get_or_create(secure: SecureStorage, key: str, create: Callable[[], bytes]) -> bytes:
    """The value at ``key`` (through the barrier), storing ``create()`` there first if absent.

    Raises ``SealedError`` while the barrier is sealed.
    """
    stored = secure.get(key)
    if stored is not None:
        return stored
    with contextlib.suppress(ConflictError):
        secure.batch([Expect(key, None), Put(key, create())])
    stored = secure.get(key)
    if stored is None:  # pragma: no cover - storage misbehaving
        raise StorageError(f"{key} could not be stored")
    return stored
