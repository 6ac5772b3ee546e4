"""Binding of stored values to (path, version, category), KEK rotation across stores, and
nonce uniqueness, checked on the records a real SQLite store holds."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from medsecrets.errors import DecryptionError
from medsecrets.storage.base import Put
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore

A = "medessence/production/auth/alpha"
B = "medessence/production/auth/beta"


def _data_keys(store: SecretStore, path: str) -> list[str]:
    """The storage keys of ``path``'s version records, oldest first."""
    raw = store.barrier.get(f"secrets/meta/{path}")
    assert raw is not None
    secret_id = orjson.loads(raw)["id"]
    return sorted(store.storage.list(f"secrets/data/{secret_id}/").keys)


@pytest.fixture
def two(store: SecretStore) -> SecretStore:
    """``A`` and ``B`` (category ``auth``), two versions each: version 2 is current, so
    reading version 1 reads its data record (not the inline copy in the metadata)."""
    build = store.catalog.category("auth").build
    for path in (A, B):
        store.secrets.put(path, build({}, development=False))
        store.secrets.put(path, build({}, development=False))
    return store


@pytest.fixture
def reopen(two: SecretStore, tmp_path: Path) -> Iterator[SecretStore]:
    """Another store over the same file (no cache shared with ``two``), as another process."""
    other = SecretStore(SqliteStorage(tmp_path / "store.db"))
    other.auto_unseal()
    yield other
    other.close()


def test_a_record_copied_under_another_key_in_raw_storage_does_not_open(
    two: SecretStore, reopen: SecretStore
) -> None:
    """The barrier binds each record to its storage key: A's version 2 record copied over
    A's version 1, or over B's version 1, fails opaquely (version 1 is read from its data
    record; the current one from the copy in the metadata)."""
    a1, a2 = _data_keys(two, A)
    b1, _ = _data_keys(two, B)
    raw = two.storage.get(a2)
    assert raw is not None
    two.storage.batch([Put(a1, raw), Put(b1, raw)])
    for path in (A, B):
        with pytest.raises(DecryptionError):
            reopen.secrets.get(path, version=1)
    assert reopen.secrets.get(A, version=2).number == 2


def test_a_sealed_value_moved_to_another_path_or_version_does_not_open(
    two: SecretStore, reopen: SecretStore
) -> None:
    """Even re-encrypted by the barrier under its new key (what a bug in the engine could
    do), a sealed value moved to another path or version fails: the envelope binds it."""
    a1, a2 = _data_keys(two, A)
    b1, _ = _data_keys(two, B)
    sealed = two.barrier.get(a2)
    assert sealed is not None
    two.barrier.batch([Put(a1, sealed), Put(b1, sealed)])
    for path in (A, B):
        with pytest.raises(DecryptionError):
            reopen.secrets.get(path, version=1)


def test_rotation_by_another_store_keeps_old_versions_and_wraps_new_ones_under_it(
    two: SecretStore, reopen: SecretStore
) -> None:
    old = {n: two.secrets.get(A, version=n).fields for n in (1, 2)}
    assert reopen.rotate_key("auth") == 2
    build = two.catalog.category("auth").build
    third = build({}, development=False)
    two.secrets.put(A, third)  # ``two`` had KEK version 1 cached
    assert [v.kek_version for v in two.secrets.versions(A)] == [1, 1, 2]
    for store in (two, reopen):
        store.envelope.forget()
        assert {n: store.secrets.get(A, version=n).fields for n in (1, 2)} == old
        assert store.secrets.get(A, version=3).fields == third


def test_no_nonce_repeats_across_stored_records(store: SecretStore) -> None:
    """Every value nonce and every local KEK wrapping nonce is fresh, across many versions
    and secrets (and a rewrap under a rotated KEK, which re-wraps every data key)."""
    build = store.catalog.category("auth").build
    paths = [f"medessence/production/auth/svc-{i}" for i in range(20)]
    for _ in range(10):
        for path in paths:
            store.secrets.put(path, build({}, development=False))
    store.rotate_key("auth")
    store.rewrap()
    value_nonces: list[bytes] = []
    wrap_nonces: list[bytes] = []
    blobs: list[bytes] = []
    page = store.storage.list("secrets/data/", limit=10_000)
    for key in page.keys:
        raw = store.barrier.get(key)
        assert raw is not None
        doc = orjson.loads(raw)
        assert doc["p"] == "local" and doc["k"] == 2
        value_nonces.append(base64.b64decode(doc["n"]))
        blob = base64.b64decode(doc["w"])
        wrap_nonces.append(blob[:12])
        blobs.append(blob)
    assert len(value_nonces) == 200
    assert {len(n) for n in value_nonces + wrap_nonces} == {12}
    assert len(set(value_nonces)) == len(value_nonces)
    assert len(set(wrap_nonces)) == len(wrap_nonces)
    assert len(set(blobs)) == len(blobs)
