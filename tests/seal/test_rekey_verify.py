"""A Shamir rekey takes effect only once a threshold of its new shares comes back.

The shares a rekey hands out exist nowhere else: if its answer is lost (a crash,
a failed audit of the answer, a client that died) and the rekey had replaced the
stored key at once, no share could open the store. These tests pin the two-step
rekey (``rekey`` stores the new pair as pending, ``rekey_verify`` switches) on
real SQLite storage.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medsecrets.barrier.aes_gcm import ROOT_KEY_KEY, SEAL_CONFIG_KEY, AesGcmBarrier
from medsecrets.errors import ConflictError, InvalidRequest, InvalidShareError
from medsecrets.schema.seal import InitResult, KeyFileSealConfig, ShamirSealConfig
from medsecrets.seal.manager import PENDING_ROOT_KEY_KEY, PENDING_SEAL_CONFIG_KEY, SealManager
from medsecrets.sensitive import Sensitive
from medsecrets.storage.base import Put
from medsecrets.storage.sqlite import SqliteStorage

from .test_manager import CANARY, corrupt, other_store_shares

SEAL_KEYS = (SEAL_CONFIG_KEY, ROOT_KEY_KEY, PENDING_SEAL_CONFIG_KEY, PENDING_ROOT_KEY_KEY)


@pytest.fixture
def shamir(manager: SealManager, barrier: AesGcmBarrier) -> tuple[SealManager, InitResult]:
    result = manager.initialize(ShamirSealConfig(shares=5, threshold=3))
    barrier.put("app/secret", CANARY)
    manager.seal()
    return manager, result


def snapshot(storage: SqliteStorage) -> dict[str, bytes | None]:
    return {key: storage.get(key) for key in SEAL_KEYS}


def unseal_with(manager: SealManager, shares: list[Sensitive[str]]) -> bool:
    """Whether ``shares`` unseal (then sealed again); progress reset either way."""
    manager.reset_unseal()
    try:
        for share in shares:
            status = manager.submit_share(share)
    except InvalidShareError:
        manager.reset_unseal()
        return False
    opened = not status.sealed
    manager.seal()
    return opened


def test_a_rekey_whose_answer_is_lost_leaves_the_old_shares_working(
    shamir: tuple[SealManager, InitResult], storage: SqliteStorage
) -> None:
    manager, old = shamir
    manager.rekey(list(old.shares[:3]), shares=3, threshold=2)  # the answer never arrives
    assert unseal_with(manager, list(old.shares[1:4]))
    # a later rekey with the old shares works too, and replaces the lost one
    again = manager.rekey(list(old.shares[2:5]), shares=2, threshold=2)
    assert unseal_with(manager, list(old.shares[:3]))
    manager.rekey_verify(list(again.shares))
    assert unseal_with(manager, list(again.shares))


def test_verify_with_the_new_shares_switches_over(
    shamir: tuple[SealManager, InitResult], barrier: AesGcmBarrier, storage: SqliteStorage
) -> None:
    manager, old = shamir
    assert manager.status().rekey_pending is False
    new = manager.rekey(list(old.shares[:3]), shares=3, threshold=2)
    assert manager.rekey_pending()
    assert manager.status().rekey_pending is True  # what seal-status tells the operator
    status = manager.rekey_verify([new.shares[2], new.shares[0]])
    assert (status.shares, status.threshold, status.sealed) == (3, 2, True)
    assert status.rekey_pending is False
    assert storage.get(PENDING_SEAL_CONFIG_KEY) is None
    assert storage.get(PENDING_ROOT_KEY_KEY) is None
    assert not manager.rekey_pending()
    assert not unseal_with(manager, list(old.shares[:3]))
    with pytest.raises(InvalidShareError, match="different share set"):
        manager.submit_share(old.shares[0])
    manager.submit_share(new.shares[1])
    assert not manager.submit_share(new.shares[2]).sealed
    assert barrier.get("app/secret") == CANARY
    # nothing is pending any more: a second verify is refused
    with pytest.raises(InvalidRequest, match="no rekey is pending"):
        manager.rekey_verify(list(new.shares[:2]))


def test_verify_refusals_change_nothing(
    shamir: tuple[SealManager, InitResult], storage: SqliteStorage, tmp_path: Path
) -> None:
    manager, old = shamir
    new = manager.rekey(list(old.shares[:3]), shares=3, threshold=2)
    before = snapshot(storage)
    refusals: list[tuple[list[Sensitive[str] | str], str]] = [
        (list(old.shares[:3]), "different share set"),  # the current shares
        ([new.shares[0]], "needs 2 shares of the new set, got 1"),
        ([new.shares[0], new.shares[0]], "duplicate"),
        (list(other_store_shares(tmp_path)[:3]), "different share set"),
        ([new.shares[0], corrupt(new.shares[1])], "malformed"),
        ([], "got 0"),
    ]
    for shares, message in refusals:
        with pytest.raises(InvalidShareError, match=message):
            manager.rekey_verify(shares)
        assert snapshot(storage) == before
    assert unseal_with(manager, list(old.shares[:3]))
    manager.rekey_verify(list(new.shares[:2]))
    assert unseal_with(manager, list(new.shares[1:]))


def test_verify_with_shares_that_do_not_open_the_pending_record(
    shamir: tuple[SealManager, InitResult], storage: SqliteStorage
) -> None:
    manager, old = shamir
    first = manager.rekey(list(old.shares[:3]), shares=2, threshold=2)
    manager.rekey(list(old.shares[:3]), shares=2, threshold=2)  # replaces the first
    before = snapshot(storage)
    with pytest.raises(InvalidShareError, match="different share set"):
        manager.rekey_verify(list(first.shares))
    # the same share set id but another record: the shares do not open it
    storage.batch([Put(PENDING_ROOT_KEY_KEY, storage.get(ROOT_KEY_KEY) or b"")])
    doc = storage.get(PENDING_SEAL_CONFIG_KEY)
    assert doc is not None
    with pytest.raises(InvalidShareError, match="do not open this store"):
        manager.rekey_verify(list(manager_shares_for(storage, first, doc)))
    storage.batch([Put(k, v) for k, v in before.items() if v is not None])
    assert snapshot(storage) == before


def manager_shares_for(
    storage: SqliteStorage, result: InitResult, pending_doc: bytes
) -> tuple[Sensitive[str], ...]:
    """``result``'s shares with the pending config rewritten to their share set."""
    import json

    from medsecrets.seal.shamir import parse_share

    doc = json.loads(pending_doc)
    doc["share_set"] = parse_share(result.shares[0]).identifier
    storage.batch([Put(PENDING_SEAL_CONFIG_KEY, json.dumps(doc).encode())])
    return result.shares


def test_verify_is_refused_when_the_seal_changed_meanwhile(
    shamir: tuple[SealManager, InitResult], storage: SqliteStorage
) -> None:
    manager, old = shamir
    new = manager.rekey(list(old.shares[:3]), shares=2, threshold=2)
    real_get = storage.get
    calls = {"n": 0}

    def racing_get(key: str) -> bytes | None:  # another node's rekey lands right after the read
        value = real_get(key)
        if key == PENDING_ROOT_KEY_KEY and calls["n"] == 0:
            calls["n"] += 1
            other = SealManager(storage, AesGcmBarrier(storage))
            other.rekey(list(old.shares[:3]), shares=2, threshold=2)
        return value

    storage.get = racing_get  # type: ignore[method-assign]
    try:
        with pytest.raises(ConflictError, match="changed concurrently"):
            manager.rekey_verify(list(new.shares))
    finally:
        del storage.get
    assert unseal_with(manager, list(old.shares[:3]))


def test_cancel_drops_a_pending_rekey_and_is_idempotent(
    shamir: tuple[SealManager, InitResult], storage: SqliteStorage
) -> None:
    manager, old = shamir
    assert manager.rekey_cancel() is False
    new = manager.rekey(list(old.shares[:3]), shares=2, threshold=2)
    assert manager.status().rekey_pending is True
    assert manager.rekey_cancel() is True
    assert manager.status().rekey_pending is False
    assert manager.rekey_cancel() is False
    assert storage.get(PENDING_SEAL_CONFIG_KEY) is None
    with pytest.raises(InvalidRequest, match="no rekey is pending"):
        manager.rekey_verify(list(new.shares))
    assert unseal_with(manager, list(old.shares[:3]))


def test_keyfile_rekey_still_takes_effect_at_once(
    manager: SealManager, storage: SqliteStorage, tmp_path: Path
) -> None:
    manager.initialize(KeyFileSealConfig(str(tmp_path / "k1")))
    result = manager.rekey_keyfile(str(tmp_path / "k2"))
    assert result.verify is False
    assert storage.get(PENDING_SEAL_CONFIG_KEY) is None
    assert b"k2" in (storage.get(SEAL_CONFIG_KEY) or b"")
