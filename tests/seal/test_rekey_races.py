"""Races between the steps of a Shamir rekey made by different nodes over one store.

One process serialises its own rekey, verify and cancel (the manager's lock); another
node (PostgreSQL, or a second process on the same SQLite file) does not take that lock,
so every step must decide on what the storage batch itself checks. Each race is forced
with a seam on the real SQLite storage: the other node's step lands right after this
one's read.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from medsecrets.barrier.aes_gcm import AesGcmBarrier
from medsecrets.schema.seal import InitResult, ShamirSealConfig
from medsecrets.seal.manager import PENDING_SEAL_CONFIG_KEY, SealManager
from medsecrets.storage.sqlite import SqliteStorage

from .test_rekey_verify import unseal_with


@pytest.fixture
def shamir(manager: SealManager) -> tuple[SealManager, InitResult]:
    result = manager.initialize(ShamirSealConfig(shares=3, threshold=2))
    manager.seal()
    return manager, result


def after_read_of(storage: SqliteStorage, key: str, other: Callable[[], object]) -> None:
    """Run ``other`` once, right after the next read of ``key`` (a seam on the storage)."""
    real_get = storage.get
    done: list[bool] = []

    def racing_get(wanted: str) -> bytes | None:
        value = real_get(wanted)
        if wanted == key and not done:
            done.append(True)
            other()
        return value

    storage.get = racing_get  # type: ignore[method-assign]


def test_a_cancel_overtaken_by_a_verify_does_not_claim_to_have_cancelled(
    shamir: tuple[SealManager, InitResult], storage: SqliteStorage, db_path: object
) -> None:
    manager, old = shamir
    new = manager.rekey(list(old.shares[:2]), shares=3, threshold=2)
    other_storage = SqliteStorage(db_path)  # type: ignore[arg-type]
    try:
        other = SealManager(other_storage, AesGcmBarrier(other_storage))
        after_read_of(
            storage, PENDING_SEAL_CONFIG_KEY, lambda: other.rekey_verify(list(new.shares[:2]))
        )
        try:
            cancelled = manager.rekey_cancel()
        finally:
            del storage.get
    finally:
        other_storage.close()
    # the verify took effect: the new shares open the store, the old ones do not
    assert unseal_with(manager, list(new.shares[1:]))
    assert not unseal_with(manager, list(old.shares[:2]))
    assert cancelled is False, "cancel answered that it dropped a rekey that took effect"


def test_a_cancel_overtaken_by_another_rekey_drops_the_newer_one(
    shamir: tuple[SealManager, InitResult], storage: SqliteStorage, db_path: object
) -> None:
    manager, old = shamir
    manager.rekey(list(old.shares[:2]), shares=3, threshold=2)
    other_storage = SqliteStorage(db_path)  # type: ignore[arg-type]
    try:
        other = SealManager(other_storage, AesGcmBarrier(other_storage))
        newer: list[InitResult] = []
        after_read_of(
            storage,
            PENDING_SEAL_CONFIG_KEY,
            lambda: newer.append(other.rekey(list(old.shares[1:]), shares=2, threshold=2)),
        )
        try:
            assert manager.rekey_cancel() is True
        finally:
            del storage.get
    finally:
        other_storage.close()
    assert not manager.rekey_pending()
    assert not unseal_with(manager, list(newer[0].shares))
    assert unseal_with(manager, list(old.shares[:2]))
