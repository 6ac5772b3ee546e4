from __future__ import annotations

import itertools
import json
import os
import random
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from medsecrets.barrier.aes_gcm import ROOT_KEY_KEY, SEAL_CONFIG_KEY, AesGcmBarrier
from medsecrets.errors import (
    AlreadyExistsError,
    AlreadyInitializedError,
    ConfigError,
    DecryptionError,
    InvalidRequest,
    InvalidShareError,
    NotInitializedError,
    ProviderError,
    SealedError,
)
from medsecrets.schema.seal import (
    AwsKmsSealConfig,
    InitResult,
    KeyFileSealConfig,
    SealStatus,
    ShamirSealConfig,
)
from medsecrets.seal.kms import KmsClient
from medsecrets.seal.manager import SealManager
from medsecrets.sensitive import Sensitive
from medsecrets.storage.base import Put
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.testing.motoserver import MotoServer

CANARY = b"SEAL-CANARY-5e2b9c41-plaintext"


def words(share: Sensitive[str]) -> list[str]:
    return share.reveal().split()


def corrupt(share: Sensitive[str]) -> str:
    w = words(share)
    w[10] = "academic" if w[10] != "academic" else "acid"
    return " ".join(w)


@pytest.fixture
def shamir(manager: SealManager, barrier: AesGcmBarrier) -> tuple[SealManager, InitResult]:
    result = manager.initialize(ShamirSealConfig(shares=5, threshold=3))
    barrier.put("app/secret", CANARY)
    manager.seal()
    return manager, result


def other_store_shares(tmp_path: Path) -> tuple[Sensitive[str], ...]:
    store = SqliteStorage(tmp_path / "other.db")
    try:
        other = SealManager(store, AesGcmBarrier(store))
        return other.initialize(ShamirSealConfig(shares=5, threshold=3)).shares
    finally:
        store.close()


# --------------------------------------------------------------------------- status/init


def test_status_before_and_after_initialize(manager: SealManager, barrier: AesGcmBarrier) -> None:
    assert manager.status() == SealStatus(False, True, None, 0, 0, 0, None)
    with pytest.raises(NotInitializedError):
        manager.submit_share("x")
    with pytest.raises(NotInitializedError):
        manager.auto_unseal()
    result = manager.initialize(ShamirSealConfig(shares=5, threshold=3))
    assert result.seal_type == "shamir" and result.threshold == 3
    assert len(result.shares) == 5 and len(set(s.reveal() for s in result.shares)) == 5
    assert not barrier.sealed
    assert manager.status() == SealStatus(True, False, "shamir", 5, 3, 0, 1)
    manager.seal()
    assert manager.status() == SealStatus(True, True, "shamir", 5, 3, 0, None)


def test_initialize_twice_is_refused(manager: SealManager) -> None:
    manager.initialize(ShamirSealConfig(shares=1, threshold=1))
    with pytest.raises(AlreadyInitializedError):
        manager.initialize(ShamirSealConfig())


def test_interrupted_initialize_can_be_run_again(
    manager: SealManager, storage: SqliteStorage, tmp_path: Path
) -> None:
    """A store an older version left half-initialised (a seal config and a root key, no
    keyring: init used to take two transactions) is initialised again, in one batch."""
    other = SqliteStorage(tmp_path / "other.db")
    try:
        SealManager(other, AesGcmBarrier(other)).initialize(ShamirSealConfig(1, 1))
        storage.batch([Put(k, other.get(k) or b"") for k in (SEAL_CONFIG_KEY, ROOT_KEY_KEY)])
    finally:
        other.close()
    assert not manager.status().initialized
    result = manager.initialize(ShamirSealConfig(shares=3, threshold=2))
    assert len(result.shares) == 3
    assert manager.status().initialized and not manager.status().sealed
    with pytest.raises(AlreadyInitializedError):
        manager.initialize(ShamirSealConfig())


def test_initialize_writes_everything_in_one_batch(
    manager: SealManager, storage: SqliteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash at any write of init leaves the store uninitialised, never half-written."""
    batches: list[list[str]] = []
    real = storage.batch

    def batch(ops: list[Any]) -> None:
        batches.append(sorted(f"{type(op).__name__}:{op.key}" for op in ops))
        real(ops)

    monkeypatch.setattr(storage, "batch", batch)
    manager.initialize(ShamirSealConfig(shares=1, threshold=1))
    assert batches == [
        sorted(
            [
                "Expect:core/seal-config",
                "Expect:core/keyring",
                "Put:core/seal-config",
                "Put:core/root-key",
                "Put:core/keyring",
                "Put:core/keyring-usage",
            ]
        )
    ]


def test_seal_config_and_root_key_written_together(
    manager: SealManager, storage: SqliteStorage
) -> None:
    result = manager.initialize(ShamirSealConfig(shares=3, threshold=2))
    doc = json.loads(storage.get(SEAL_CONFIG_KEY) or b"")
    assert doc["type"] == "shamir" and (doc["shares"], doc["threshold"]) == (3, 2)
    assert isinstance(doc["share_set"], int)
    record = storage.get(ROOT_KEY_KEY)
    assert record is not None and len(record) == 1 + 12 + 32 + 16
    for share in result.shares:
        assert share.reveal().encode() not in (storage.get(SEAL_CONFIG_KEY) or b"")


# --------------------------------------------------------------------------- shamir unseal


def test_any_three_of_five_unseal_in_any_order(
    shamir: tuple[SealManager, InitResult], barrier: AesGcmBarrier
) -> None:
    manager, result = shamir
    rng = random.Random(7)
    for combo in itertools.combinations(result.shares, 3):
        order = list(combo)
        rng.shuffle(order)
        assert manager.submit_share(order[0]).progress == 1
        status = manager.submit_share(order[1].reveal())  # plain str works too
        assert (status.sealed, status.progress, status.threshold) == (True, 2, 3)
        assert barrier.sealed
        status = manager.submit_share(order[2])
        assert (status.sealed, status.progress, status.term) == (False, 0, 1)
        assert barrier.get("app/secret") == CANARY
        manager.seal()
    for perm in itertools.permutations(result.shares[:3]):
        for share in perm:
            manager.submit_share(share)
        assert not barrier.sealed
        manager.seal()


def test_two_shares_leave_it_sealed(
    shamir: tuple[SealManager, InitResult], barrier: AesGcmBarrier
) -> None:
    manager, result = shamir
    manager.submit_share(result.shares[0])
    status = manager.submit_share(result.shares[4])
    assert status.sealed and status.progress == 2
    with pytest.raises(SealedError):
        manager.status() and barrier.get("app/secret")
    assert manager.reset_unseal().progress == 0
    for share in result.shares[1:4]:
        status = manager.submit_share(share)
    assert not status.sealed


def test_malformed_share_is_refused_and_progress_unchanged(
    shamir: tuple[SealManager, InitResult],
) -> None:
    manager, result = shamir
    manager.submit_share(result.shares[0])
    bad = [
        corrupt(result.shares[1]),  # bad checksum
        " ".join(words(result.shares[1])[:-2]),  # truncated
        "correct horse battery staple",  # not words of the list / too short
        "",
    ]
    for share in bad:
        with pytest.raises(InvalidShareError, match="malformed share"):
            manager.submit_share(share)
        assert manager.status().progress == 1


def test_duplicate_share_is_refused(shamir: tuple[SealManager, InitResult]) -> None:
    manager, result = shamir
    manager.submit_share(result.shares[2])
    manager.submit_share(result.shares[0])
    with pytest.raises(InvalidShareError, match="duplicate"):
        manager.submit_share(result.shares[2])
    with pytest.raises(InvalidShareError, match="duplicate"):
        manager.submit_share("  " + result.shares[0].reveal().upper() + " ")
    assert manager.status().progress == 2
    assert not manager.submit_share(result.shares[1]).sealed


def test_share_from_another_store_is_refused(
    shamir: tuple[SealManager, InitResult], tmp_path: Path
) -> None:
    manager, result = shamir
    foreign = other_store_shares(tmp_path)
    manager.submit_share(result.shares[0])
    with pytest.raises(InvalidShareError, match="different share set"):
        manager.submit_share(foreign[1])
    with pytest.raises(InvalidShareError, match="different share set"):
        manager.submit_share(foreign[0])
    assert manager.status().progress == 1


def test_shares_that_do_not_open_the_store_reset_progress(
    shamir: tuple[SealManager, InitResult], storage: SqliteStorage, tmp_path: Path
) -> None:
    manager, _ = shamir
    foreign = other_store_shares(tmp_path)
    # Make the foreign set pass the identifier check (a 15-bit id can collide):
    # the root key must still refuse to open.
    from medsecrets.seal.shamir import parse_share

    doc = json.loads(storage.get(SEAL_CONFIG_KEY) or b"")
    doc["share_set"] = parse_share(foreign[0]).identifier
    storage.put(SEAL_CONFIG_KEY, json.dumps(doc).encode())
    manager.submit_share(foreign[0])
    manager.submit_share(foreign[1])
    with pytest.raises(InvalidShareError) as info:
        manager.submit_share(foreign[2])
    assert str(info.value) == "unseal failed: the shares do not open this store"
    assert info.value.__cause__ is None and info.value.__suppress_context__
    status = manager.status()
    assert status.sealed and status.progress == 0


def test_concurrent_share_submission(
    shamir: tuple[SealManager, InitResult], barrier: AesGcmBarrier
) -> None:
    manager, result = shamir
    errors: list[BaseException] = []
    statuses: list[SealStatus] = []
    start = threading.Barrier(5)

    def submit(share: Sensitive[str]) -> None:
        start.wait()
        try:
            statuses.append(manager.submit_share(share))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(s,)) for s in result.shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert not barrier.sealed and barrier.get("app/secret") == CANARY
    assert sorted(s.progress for s in statuses if s.sealed) == [1, 2]


def test_sealed_refuses_every_operation(
    shamir: tuple[SealManager, InitResult], barrier: AesGcmBarrier
) -> None:
    manager, result = shamir
    for share in result.shares[:3]:
        manager.submit_share(share)
    assert manager.seal().sealed
    for call in (
        lambda: barrier.get("app/secret"),
        lambda: barrier.get_with_etag("app/secret"),
        lambda: barrier.put("app/x", b"v"),
        lambda: barrier.delete("app/secret"),
        lambda: barrier.list("app/"),
        lambda: barrier.batch([Put("app/x", b"v")]),
        barrier.rotate,
        barrier.keyring_info,
    ):
        with pytest.raises(SealedError):
            call()


def test_shamir_cannot_auto_unseal(shamir: tuple[SealManager, InitResult]) -> None:
    manager, _ = shamir
    with pytest.raises(InvalidRequest):
        manager.auto_unseal()


# --------------------------------------------------------------------------- rekey


def test_rekey_replaces_the_shares_and_keeps_the_data(
    shamir: tuple[SealManager, InitResult], barrier: AesGcmBarrier
) -> None:
    manager, old = shamir
    manager.submit_share(old.shares[0])  # progress is kept by rekey, dropped by verify
    new = manager.rekey(list(old.shares[2:5]), shares=3, threshold=2)
    assert new.seal_type == "shamir" and len(new.shares) == 3 and new.threshold == 2
    assert new.verify is True
    status = manager.status()  # pending: the current set is unchanged
    assert (status.shares, status.threshold, status.progress, status.sealed) == (5, 3, 1, True)
    status = manager.rekey_verify(list(new.shares[:2]))
    assert (status.shares, status.threshold, status.progress, status.sealed) == (3, 2, 0, True)
    with pytest.raises(InvalidShareError, match="different share set"):
        manager.submit_share(old.shares[0])
    manager.submit_share(new.shares[2])
    assert not manager.submit_share(new.shares[0]).sealed
    assert barrier.get("app/secret") == CANARY
    assert barrier.keyring_info().term == 1


def test_rekey_needs_a_threshold_of_valid_current_shares(
    shamir: tuple[SealManager, InitResult], tmp_path: Path
) -> None:
    manager, old = shamir
    with pytest.raises(InvalidShareError, match="needs 3"):
        manager.rekey(list(old.shares[:2]), shares=5, threshold=3)
    with pytest.raises(InvalidShareError, match="duplicate"):
        manager.rekey([old.shares[0], old.shares[1], old.shares[0]], shares=5, threshold=3)
    with pytest.raises(InvalidShareError, match="malformed"):
        manager.rekey([old.shares[0], old.shares[1], corrupt(old.shares[2])], shares=5, threshold=3)
    with pytest.raises(InvalidShareError, match="different share set"):
        manager.rekey(list(other_store_shares(tmp_path)[:3]), shares=5, threshold=3)
    with pytest.raises(InvalidRequest):
        manager.rekey(list(old.shares[:3]), shares=2, threshold=3)
    # the old shares still work: nothing changed
    for share in old.shares[:3]:
        status = manager.submit_share(share)
    assert not status.sealed


# --------------------------------------------------------------------------- keyfile


def test_keyfile_initialize_and_auto_unseal(
    manager: SealManager, barrier: AesGcmBarrier, tmp_path: Path
) -> None:
    path = tmp_path / "unseal.key"
    result = manager.initialize(KeyFileSealConfig(str(path)))
    assert result.shares == () and result.seal_type == "keyfile"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".unseal")] == []
    barrier.put("app/secret", CANARY)
    manager.seal()
    status = manager.auto_unseal()
    assert not status.sealed and status.seal_type == "keyfile"
    assert barrier.get("app/secret") == CANARY
    with pytest.raises(InvalidRequest):
        manager.submit_share("abc")


def test_keyfile_with_loose_permissions_is_refused(
    manager: SealManager, barrier: AesGcmBarrier, tmp_path: Path
) -> None:
    path = tmp_path / "unseal.key"
    manager.initialize(KeyFileSealConfig(str(path)))
    manager.seal()
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="0644"):
        manager.auto_unseal()
    assert barrier.sealed
    os.chmod(path, 0o600)
    assert not manager.auto_unseal().sealed


def test_keyfile_refuses_an_existing_file(
    manager: SealManager, storage: SqliteStorage, tmp_path: Path
) -> None:
    path = tmp_path / "unseal.key"
    path.write_text("precious")
    with pytest.raises(AlreadyExistsError):
        manager.initialize(KeyFileSealConfig(str(path)))
    assert path.read_text() == "precious"
    assert storage.get(SEAL_CONFIG_KEY) is None and not manager.status().initialized


def test_keyfile_in_a_missing_directory_is_a_bad_request(
    manager: SealManager, storage: SqliteStorage, tmp_path: Path
) -> None:
    """The path comes with ``sys/init``: a 400 naming it, not a 500, and nothing written."""
    with pytest.raises(InvalidRequest, match="cannot create key file"):
        manager.initialize(KeyFileSealConfig(str(tmp_path / "missing" / "unseal.key")))
    assert storage.get(SEAL_CONFIG_KEY) is None and not manager.status().initialized
    assert manager.initialize(KeyFileSealConfig(str(tmp_path / "unseal.key"))).shares == ()


def test_keyfile_wrong_or_malformed_key(
    manager: SealManager, barrier: AesGcmBarrier, tmp_path: Path
) -> None:
    path = tmp_path / "unseal.key"
    manager.initialize(KeyFileSealConfig(str(path)))
    manager.seal()
    good = path.read_bytes()
    path.write_bytes(good.replace(good[30:34], b"AAAA" if good[30:34] != b"AAAA" else b"BBBB"))
    with pytest.raises(DecryptionError):
        manager.auto_unseal()
    path.write_bytes(b"garbage\n")
    with pytest.raises(ConfigError, match="malformed"):
        manager.auto_unseal()
    path.unlink()
    with pytest.raises(ConfigError):
        manager.auto_unseal()
    assert barrier.sealed


def test_rekey_keyfile(manager: SealManager, barrier: AesGcmBarrier, tmp_path: Path) -> None:
    old_path, new_path = tmp_path / "old.key", tmp_path / "new.key"
    manager.initialize(KeyFileSealConfig(str(old_path)))
    barrier.put("app/secret", CANARY)
    manager.seal()
    manager.rekey_keyfile(str(new_path))
    assert stat.S_IMODE(new_path.stat().st_mode) == 0o600
    assert manager.auto_unseal().sealed is False
    assert barrier.get("app/secret") == CANARY
    manager.seal()
    # the old file no longer opens the store
    new_bytes = new_path.read_bytes()
    new_path.unlink()
    os.rename(old_path, new_path)
    with pytest.raises(DecryptionError):
        manager.auto_unseal()
    new_path.write_bytes(new_bytes)
    os.chmod(new_path, 0o600)
    assert not manager.auto_unseal().sealed


# --------------------------------------------------------------------------- AWS KMS


def test_awskms_initialize_and_auto_unseal(
    manager: SealManager,
    barrier: AesGcmBarrier,
    storage: SqliteStorage,
    boto_kms: Any,
    moto_server: MotoServer,
    kms_factory: Callable[[AwsKmsSealConfig], KmsClient],
) -> None:
    key_id = boto_kms.create_key(Description="medsecrets root")["KeyMetadata"]["KeyId"]
    config = AwsKmsSealConfig(key_id=key_id, endpoint_url=moto_server.endpoint_url)
    result = manager.initialize(config)
    assert result.shares == () and result.seal_type == "awskms"
    barrier.put("app/secret", CANARY)
    manager.seal()
    # the stored blob is a real KMS ciphertext bound to the encryption context
    blob = storage.get(ROOT_KEY_KEY)
    assert blob is not None
    plain = boto_kms.decrypt(CiphertextBlob=blob, EncryptionContext={"medsecrets": "root-key"})
    assert len(plain["Plaintext"]) == 32 and plain["KeyId"].endswith(key_id)
    # a fresh process (new storage handle, barrier and manager) auto-unseals
    fresh_barrier = AesGcmBarrier(storage)
    fresh = SealManager(storage, fresh_barrier, kms_factory=kms_factory)
    status = fresh.auto_unseal()
    assert not status.sealed and status.seal_type == "awskms"
    assert fresh_barrier.get("app/secret") == CANARY


def test_awskms_rekey_to_a_new_key(
    manager: SealManager,
    barrier: AesGcmBarrier,
    storage: SqliteStorage,
    boto_kms: Any,
    moto_server: MotoServer,
) -> None:
    old_key = boto_kms.create_key()["KeyMetadata"]["KeyId"]
    new_key = boto_kms.create_key()["KeyMetadata"]["KeyId"]
    manager.initialize(AwsKmsSealConfig(key_id=old_key, endpoint_url=moto_server.endpoint_url))
    barrier.put("app/secret", CANARY)
    manager.seal()
    manager.rekey_awskms(new_key)
    doc = json.loads(storage.get(SEAL_CONFIG_KEY) or b"")
    assert doc["key_id"] == new_key
    blob = storage.get(ROOT_KEY_KEY) or b""
    assert boto_kms.decrypt(CiphertextBlob=blob, EncryptionContext={"medsecrets": "root-key"})[
        "KeyId"
    ].endswith(new_key)
    assert not manager.auto_unseal().sealed
    assert barrier.get("app/secret") == CANARY


def test_awskms_failures_are_provider_errors(
    manager: SealManager, barrier: AesGcmBarrier, storage: SqliteStorage, moto_server: MotoServer
) -> None:
    with pytest.raises(ProviderError):
        manager.initialize(
            AwsKmsSealConfig(key_id="alias/missing", endpoint_url=moto_server.endpoint_url)
        )
    assert storage.get(SEAL_CONFIG_KEY) is None and not barrier.initialized()


# --------------------------------------------------------------------------- leaks


def test_no_secret_in_files_reprs_or_errors(
    manager: SealManager,
    barrier: AesGcmBarrier,
    storage: SqliteStorage,
    db_path: Path,
    tmp_path: Path,
) -> None:
    result = manager.initialize(ShamirSealConfig(shares=3, threshold=2))
    barrier.put("app/secret", CANARY)
    manager.seal()
    errors: list[str] = []
    for bad in (corrupt(result.shares[0]), result.shares[0].reveal()[:-5]):
        with pytest.raises(InvalidShareError) as info:
            manager.submit_share(bad)
        errors.append(str(info.value))
    manager.submit_share(result.shares[0])
    with pytest.raises(InvalidShareError) as info:
        manager.submit_share(result.shares[0])
    errors.append(str(info.value))
    texts = [
        *errors,
        repr(manager),
        repr(manager.status()),
        repr(result),
        str(result),
        repr(barrier),
        repr(result.shares),
    ]
    # Any two consecutive words of a share would be a leak (a single word may be an
    # ordinary English word of the message itself, such as "length").
    pairs = {" ".join(p) for s in result.shares for p in itertools.pairwise(words(s))}
    for text in texts:
        assert CANARY.decode() not in text
        flat = " ".join(text.lower().replace("'", " ").replace(",", " ").split())
        assert not [p for p in pairs if p in flat]
    files = [db_path, Path(f"{db_path}-wal")]
    blob = b"".join(p.read_bytes() for p in files if p.exists())
    assert CANARY not in blob
    for share in result.shares:
        assert share.reveal().encode() not in blob
        assert " ".join(words(share)[4:8]).encode() not in blob


def test_a_malformed_share_is_refused_when_unsealed_too(
    shamir: tuple[SealManager, InitResult], barrier: AesGcmBarrier
) -> None:
    """Unsealed, a share used to be answered with the status unread: 200 for garbage, so
    a script could not tell its share was wrong. A well-formed one is still not used."""
    manager, result = shamir
    for share in result.shares[:3]:
        manager.submit_share(share)
    assert not barrier.sealed
    with pytest.raises(InvalidShareError):
        manager.submit_share("garbage")
    with pytest.raises(InvalidShareError):
        manager.submit_share(corrupt(result.shares[0]))
    status = manager.submit_share(result.shares[3])
    assert (status.sealed, status.progress) == (False, 0)
