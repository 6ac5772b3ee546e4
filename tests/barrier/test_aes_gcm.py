from __future__ import annotations

import base64
import json
import struct
import threading
from collections import Counter
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medsecrets.barrier.aes_gcm import (
    HEADER_SIZE,
    KEYRING_KEY,
    KEYRING_USAGE_KEY,
    RESERVED_KEYS,
    AesGcmBarrier,
)
from medsecrets.barrier.base import Barrier, SecureStorage
from medsecrets.clock import ManualClock
from medsecrets.errors import (
    AlreadyInitializedError,
    ConflictError,
    DecryptionError,
    InvalidRequest,
    NotInitializedError,
    SealedError,
)
from medsecrets.sensitive import Sensitive
from medsecrets.storage.base import Delete, Expect, Put
from medsecrets.storage.sqlite import SqliteStorage

from .conftest import ROOT_KEY

TERM_KEY = bytes(range(32))
NONCE = bytes(range(100, 112))


def fixed_random(n: int) -> bytes:
    """Deterministic 'randomness' for known-answer tests."""
    return {32: TERM_KEY, 12: NONCE}.get(n) or bytes(n)


def term_of(record: bytes) -> int:
    return int(struct.unpack(">I", record[1:5])[0])


# --------------------------------------------------------------------------- format


def test_known_answer_record(storage: SqliteStorage, clock: ManualClock) -> None:
    barrier = AesGcmBarrier(storage, clock=clock, random=fixed_random)
    barrier.initialize(ROOT_KEY)
    barrier.put("secret/data/alice", b"hello, barrier")
    record = storage.get("secret/data/alice")
    assert record is not None
    # Computed independently with cryptography's AESGCM:
    # header 01 || 00000001 || nonce, AAD = 01 || 00000001 || b"secret/data/alice".
    expected = bytes.fromhex(
        "01000000016465666768696a6b6c6d6e6f207eb20a16c576fc5f102d81bf17ad7f25da3a"
        "f44274d66ea828ab417db9"
    )
    assert record == expected
    aad = b"\x01\x00\x00\x00\x01" + b"secret/data/alice"
    assert AESGCM(TERM_KEY).decrypt(NONCE, expected[HEADER_SIZE:], aad) == b"hello, barrier"
    assert barrier.get("secret/data/alice") == b"hello, barrier"


def test_keyring_record_is_sealed_under_root_key_with_term_zero(
    barrier: AesGcmBarrier, storage: SqliteStorage
) -> None:
    record = storage.get(KEYRING_KEY)
    assert record is not None
    assert record[0] == 1 and term_of(record) == 0
    aad = record[:5] + KEYRING_KEY.encode()
    doc = json.loads(AESGCM(ROOT_KEY.reveal()).decrypt(record[5:17], record[17:], aad))
    assert doc["format"] == 1 and [t["term"] for t in doc["terms"]] == [1]
    assert len(base64.b64decode(doc["terms"][0]["key"])) == 32


def test_implements_the_protocols(barrier: AesGcmBarrier) -> None:
    assert isinstance(barrier, Barrier)
    assert isinstance(barrier, SecureStorage)


def test_every_single_bit_flip_fails(barrier: AesGcmBarrier, storage: SqliteStorage) -> None:
    barrier.put("k", b"v")
    record = storage.get("k")
    assert record is not None
    for bit in range(len(record) * 8):
        flipped = bytearray(record)
        flipped[bit // 8] ^= 1 << (bit % 8)
        storage.put("k", bytes(flipped))
        with pytest.raises(DecryptionError) as info:
            barrier.get("k")
        assert str(info.value) == "decryption failed"
        assert info.value.__cause__ is None
    storage.put("k", record)
    assert barrier.get("k") == b"v"


def test_transplanted_record_fails(barrier: AesGcmBarrier, storage: SqliteStorage) -> None:
    barrier.put("tenant/a/key", b"value of a")
    record = storage.get("tenant/a/key")
    assert record is not None
    storage.put("tenant/b/key", record)
    with pytest.raises(DecryptionError):
        barrier.get("tenant/b/key")


def test_truncated_record_fails(barrier: AesGcmBarrier, storage: SqliteStorage) -> None:
    barrier.put("k", b"some value")
    record = storage.get("k")
    assert record is not None
    for length in range(len(record)):
        storage.put("k", record[:length])
        with pytest.raises(DecryptionError):
            barrier.get("k")
    storage.put("k", record + b"\x00")
    with pytest.raises(DecryptionError):
        barrier.get("k")


def test_record_relabelled_to_another_existing_term_fails(
    barrier: AesGcmBarrier, storage: SqliteStorage
) -> None:
    barrier.put("k", b"v")
    barrier.rotate()
    record = storage.get("k")
    assert record is not None and term_of(record) == 1
    storage.put("k", record[:1] + struct.pack(">I", 2) + record[5:])
    with pytest.raises(DecryptionError):
        barrier.get("k")


def test_empty_and_large_values_roundtrip(barrier: AesGcmBarrier) -> None:
    barrier.put("empty", b"")
    barrier.put("large", bytes(range(256)) * 4096)
    assert barrier.get("empty") == b""
    assert barrier.get("large") == bytes(range(256)) * 4096
    assert barrier.get("missing") is None


# --------------------------------------------------------------------------- lifecycle


def test_lifecycle_errors(storage: SqliteStorage, clock: ManualClock) -> None:
    barrier = AesGcmBarrier(storage, clock=clock)
    assert not barrier.initialized() and barrier.sealed
    with pytest.raises(NotInitializedError):
        barrier.unseal(ROOT_KEY)
    barrier.initialize(ROOT_KEY)
    assert barrier.initialized() and not barrier.sealed
    with pytest.raises(AlreadyInitializedError):
        AesGcmBarrier(storage).initialize(ROOT_KEY)
    barrier.put("k", b"v")
    barrier.seal()
    barrier.seal()  # idempotent
    with pytest.raises(DecryptionError):
        barrier.unseal(Sensitive(bytes(32)))
    assert barrier.sealed
    with pytest.raises(InvalidRequest):
        barrier.unseal(Sensitive(b"short"))
    barrier.unseal(ROOT_KEY)
    assert barrier.get("k") == b"v"


def test_sealed_refuses_everything(barrier: AesGcmBarrier) -> None:
    barrier.put("k", b"v")
    barrier.seal()
    calls = [
        lambda: barrier.get("k"),
        lambda: barrier.get_with_etag("k"),
        lambda: barrier.put("k", b"x"),
        lambda: barrier.delete("k"),
        lambda: barrier.list(""),
        lambda: barrier.batch([Put("k", b"x")]),
        barrier.rotate,
        barrier.keyring_info,
        lambda: barrier.change_root_key(Sensitive(bytes(32))),
    ]
    for call in calls:
        with pytest.raises(SealedError):
            call()
    assert barrier.initialized()


def test_reopen_with_a_new_instance(db_path: Path, barrier: AesGcmBarrier) -> None:
    barrier.put("a", b"1")
    barrier.rotate()
    barrier.put("b", b"2")
    other_storage = SqliteStorage(db_path)
    try:
        other = AesGcmBarrier(other_storage)
        assert other.sealed
        other.unseal(ROOT_KEY)
        assert (other.get("a"), other.get("b")) == (b"1", b"2")
        assert other.keyring_info().term == 2
    finally:
        other_storage.close()


def test_change_root_key(barrier: AesGcmBarrier, storage: SqliteStorage) -> None:
    barrier.put("k", b"v")
    new_root = Sensitive(bytes(range(1, 33)))
    barrier.change_root_key(new_root)
    assert barrier.get("k") == b"v"
    fresh = AesGcmBarrier(storage)
    with pytest.raises(DecryptionError):
        fresh.unseal(ROOT_KEY)
    fresh.unseal(new_root)
    assert fresh.get("k") == b"v"
    fresh.put("k2", b"v2")  # the usage record was re-encrypted too


# --------------------------------------------------------------------------- storage view


def test_reserved_keys_are_refused_and_hidden(barrier: AesGcmBarrier) -> None:
    barrier.put("app/x", b"1")
    for key in sorted(RESERVED_KEYS):
        for call in (
            lambda k=key: barrier.put(k, b"x"),
            lambda k=key: barrier.delete(k),
            lambda k=key: barrier.get(k),
            lambda k=key: barrier.batch([Put(k, b"x")]),
            lambda k=key: barrier.batch([Delete(k)]),
        ):
            with pytest.raises(InvalidRequest):
                call()
    assert barrier.list("").keys == ("app/x",)
    assert barrier.list("core/").keys == ()


def test_invalid_keys_are_refused(barrier: AesGcmBarrier) -> None:
    for key in ("", "a\x00b", "x" * 5000):
        with pytest.raises(InvalidRequest):
            barrier.put(key, b"v")


def test_list_delete_and_batch(barrier: AesGcmBarrier, storage: SqliteStorage) -> None:
    barrier.batch([Put("p/a", b"1"), Put("p/b", b"2"), Put("q/c", b"3")])
    assert barrier.list("p/").keys == ("p/a", "p/b")
    page = barrier.list("", limit=1)
    assert page.keys == ("p/a",) and page.next_after == "p/a"
    barrier.batch([Delete("p/a"), Put("p/b", b"22")])
    assert barrier.get("p/a") is None and barrier.get("p/b") == b"22"
    raw = storage.get("p/b")
    assert raw is not None and b"22" not in raw[HEADER_SIZE:]
    barrier.delete("p/b")
    barrier.delete("p/b")
    assert barrier.get("p/b") is None


def test_etag_check_and_set(barrier: AesGcmBarrier, storage: SqliteStorage) -> None:
    assert barrier.get_with_etag("cas") == (None, None)
    barrier.batch([Expect("cas", None), Put("cas", b"v1")])
    with pytest.raises(ConflictError):
        barrier.batch([Expect("cas", None), Put("cas", b"other")])
    value, etag = barrier.get_with_etag("cas")
    assert value == b"v1" and etag == storage.get("cas")
    barrier.batch([Expect("cas", etag), Put("cas", b"v2")])
    with pytest.raises(ConflictError):
        barrier.batch([Expect("cas", etag), Put("cas", b"v3")])
    assert barrier.get("cas") == b"v2"


# --------------------------------------------------------------------------- rotation


def test_rotate_keeps_old_data_and_new_writes_use_new_term(
    barrier: AesGcmBarrier, storage: SqliteStorage, clock: ManualClock
) -> None:
    barrier.put("old", b"old value")
    clock.advance(days=30)
    assert barrier.rotate() == 2
    barrier.put("new", b"new value")
    old, new = storage.get("old"), storage.get("new")
    assert old is not None and new is not None
    assert (term_of(old), term_of(new)) == (1, 2)
    assert barrier.get("old") == b"old value"
    assert barrier.get("new") == b"new value"
    info = barrier.keyring_info()
    assert (info.term, info.terms, info.encryptions) == (2, 2, 1)
    assert info.installed_at == clock.now()


def test_automatic_rotation_at_threshold(storage: SqliteStorage, clock: ManualClock) -> None:
    barrier = AesGcmBarrier(storage, clock=clock, rotation_threshold=3)
    barrier.initialize(ROOT_KEY)
    for i in range(7):
        barrier.put(f"k{i}", str(i).encode())
    terms = [term_of(storage.get(f"k{i}") or b"") for i in range(7)]
    assert terms == [1, 1, 1, 2, 2, 2, 3]
    assert [barrier.get(f"k{i}") for i in range(7)] == [str(i).encode() for i in range(7)]
    info = barrier.keyring_info()
    assert (info.term, info.terms, info.encryptions, info.rotation_threshold) == (3, 3, 1, 3)


def test_usage_count_survives_reopen_conservatively(db_path: Path, clock: ManualClock) -> None:
    first = SqliteStorage(db_path)
    barrier = AesGcmBarrier(first, clock=clock, rotation_threshold=10, usage_reservation=4)
    barrier.initialize(ROOT_KEY)
    for i in range(5):
        barrier.put(f"k{i}", b"v")
    assert barrier.keyring_info().encryptions == 5
    # "crash": no seal, no close; a new process opens the same file
    second = SqliteStorage(db_path)
    try:
        reopened = AesGcmBarrier(second, clock=clock, rotation_threshold=10, usage_reservation=4)
        reopened.unseal(ROOT_KEY)
        # two blocks of 4 were reserved: the count never goes backwards
        assert reopened.keyring_info().encryptions == 8
        reopened.put("a", b"v")
        reopened.put("b", b"v")
        assert reopened.keyring_info().encryptions == 10
        assert reopened.keyring_info().term == 1
        reopened.put("c", b"v")  # the 11th encryption needs a new term
        assert reopened.keyring_info().term == 2
        assert term_of(second.get("c") or b"") == 2
    finally:
        second.close()
        first.close()


def test_missing_usage_record_forces_rotation(
    barrier: AesGcmBarrier, storage: SqliteStorage
) -> None:
    storage.delete(KEYRING_USAGE_KEY)
    barrier.put("k", b"v")
    assert barrier.keyring_info().term == 2


def test_concurrent_writers_rotate_exactly_at_threshold(
    storage: SqliteStorage, clock: ManualClock
) -> None:
    barrier = AesGcmBarrier(storage, clock=clock, rotation_threshold=25, usage_reservation=5)
    barrier.initialize(ROOT_KEY)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(50):
                barrier.put(f"t{n}/{i}", f"{n}-{i}".encode())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    per_term = Counter(
        term_of(storage.get(f"t{n}/{i}") or b"") for n in range(4) for i in range(50)
    )
    assert per_term == {term: 25 for term in range(1, 9)}
    assert barrier.keyring_info().term == 8
    for n in range(4):
        for i in range(50):
            assert barrier.get(f"t{n}/{i}") == f"{n}-{i}".encode()


def test_two_nodes_share_the_count_and_see_each_others_terms(db_path: Path) -> None:
    store_a, store_b = SqliteStorage(db_path), SqliteStorage(db_path)
    try:
        node_a = AesGcmBarrier(store_a, rotation_threshold=6, usage_reservation=2)
        node_a.initialize(ROOT_KEY)
        node_b = AesGcmBarrier(store_b, rotation_threshold=6, usage_reservation=2)
        node_b.unseal(ROOT_KEY)
        for i in range(15):
            writer, reader = (node_a, node_b) if i % 2 == 0 else (node_b, node_a)
            writer.put(f"k{i}", str(i).encode())
            assert reader.get(f"k{i}") == str(i).encode()
        per_term = Counter(term_of(store_a.get(f"k{i}") or b"") for i in range(15))
        assert max(per_term.values()) <= 6
        assert sorted(per_term) == list(range(1, len(per_term) + 1))
        assert len(per_term) >= 3
    finally:
        store_a.close()
        store_b.close()


def test_a_rotation_on_one_node_is_used_by_the_others_next_write(db_path: Path) -> None:
    """``sys/rotate`` on one node (worker): every write committed after it, on any node,
    uses the new term, even from a node holding a reserved block of the old term."""
    store_a, store_b = SqliteStorage(db_path), SqliteStorage(db_path)
    try:
        node_a = AesGcmBarrier(store_a)  # default threshold: blocks of 65,536 encryptions
        node_a.initialize(ROOT_KEY)
        node_b = AesGcmBarrier(store_b)
        node_b.unseal(ROOT_KEY)
        node_b.put("before", b"1")  # node b now holds a block of term 1
        node_b.batch([Put("before-batch", b"1")])
        assert node_a.rotate() == 2
        node_b.put("after", b"2")
        node_b.batch([Put("after-batch", b"2"), Expect("before", store_b.get("before"))])
        assert term_of(store_a.get("before") or b"") == 1
        assert term_of(store_a.get("after") or b"") == 2
        assert term_of(store_a.get("after-batch") or b"") == 2
        assert node_b.keyring_info().term == 2
        assert [node_b.get(k) for k in ("before", "before-batch", "after")] == [b"1", b"1", b"2"]
        with pytest.raises(ConflictError):  # the caller's own condition still decides
            node_b.batch([Expect("before", b"stale"), Put("never", b"x")])
        assert store_a.get("never") is None
    finally:
        store_a.close()
        store_b.close()


# --------------------------------------------------------------------------- leaks

CANARY = b"CANARY-4b1d7e0c-9f3a-plaintext"


def test_canary_never_leaks(db_path: Path, storage: SqliteStorage, clock: ManualClock) -> None:
    barrier = AesGcmBarrier(storage, clock=clock, random=fixed_random)
    barrier.initialize(ROOT_KEY)
    barrier.put("secret/canary", CANARY)
    barrier.put("other", CANARY * 3)
    record = storage.get("secret/canary")
    assert record is not None
    storage.put("secret/canary", record[:-1] + bytes([record[-1] ^ 1]))
    with pytest.raises(DecryptionError) as info:
        barrier.get("secret/canary")
    texts = [
        str(info.value),
        repr(info.value),
        repr(barrier),
        repr(barrier.keyring_info()),
        repr(barrier._state),
        repr(storage),
    ]
    for path in (db_path, Path(f"{db_path}-wal")):
        if path.exists():
            data = path.read_bytes()
            assert CANARY not in data
            assert TERM_KEY not in data and ROOT_KEY.reveal() not in data
    for text in texts:
        for needle in (CANARY, TERM_KEY, ROOT_KEY.reveal()):
            assert needle.decode("latin-1") not in text
            assert needle.hex() not in text
            assert base64.b64encode(needle).decode() not in text


def test_on_seal_runs_after_every_seal_and_holds_methods_weakly(barrier: AesGcmBarrier) -> None:
    calls: list[bool] = []

    class Cache:
        def forget(self) -> None:
            calls.append(barrier.sealed)  # the keys are gone by then

    kept, dropped = Cache(), Cache()
    barrier.on_seal(kept.forget)
    barrier.on_seal(dropped.forget)
    del dropped  # a cache that went away is not kept alive by the barrier
    barrier.seal()
    assert calls == [True]
    barrier.unseal(ROOT_KEY)
    barrier.seal()
    assert calls == [True, True]
