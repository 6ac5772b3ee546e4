"""Per-category KEKs, envelope binding, KEK rotation and rewrap (local provider)."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import pytest

from medsecrets.errors import DecryptionError
from medsecrets.keys.envelope import SealedValue
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore


def kek_material(store: SecretStore, category: str) -> list[bytes]:
    raw = store.barrier.get(f"keys/local/{category}")
    assert raw is not None
    return [base64.b64decode(v["key"]) for v in json.loads(raw)["versions"]]


def test_keys_differ_per_category(store: SecretStore) -> None:
    store.provision("development")
    keys = {c: kek_material(store, c)[0] for c in store.catalog.names()}
    assert len(set(keys.values())) == len(keys) == 5
    assert all(len(k) == 32 for k in keys.values())


def test_value_sealed_for_one_category_does_not_open_as_another(store: SecretStore) -> None:
    sealed = store.envelope.seal(b"phi", path="p", version=1, category="auth")
    assert store.envelope.open(sealed, path="p", version=1, category="auth") == b"phi"
    for path, version, category in (
        ("p", 1, "database"),
        ("q", 1, "auth"),
        ("p", 2, "auth"),
    ):
        with pytest.raises(DecryptionError):
            store.envelope.open(sealed, path=path, version=version, category=category)


def test_each_version_gets_a_fresh_data_key(store: SecretStore) -> None:
    a = store.envelope.seal(b"same", path="p", version=1, category="auth")
    b = store.envelope.seal(b"same", path="p", version=1, category="auth")
    assert a.wrapped.blob != b.wrapped.blob
    assert a.ciphertext != b.ciphertext


def test_tampered_envelope_fails_opaquely(store: SecretStore) -> None:
    sealed = store.envelope.seal(b"value", path="p", version=1, category="auth")
    raw = bytearray(sealed.dumps())
    doc = json.loads(raw)
    for field in ("w", "n", "c"):
        blob = bytearray(base64.b64decode(doc[field]))
        blob[len(blob) // 2] ^= 0x01
        bad = dict(doc, **{field: base64.b64encode(bytes(blob)).decode()})
        store.envelope.forget()
        with pytest.raises(DecryptionError) as info:
            store.envelope.open(SealedValue.from_json(bad), path="p", version=1, category="auth")
        assert str(info.value) == "decryption failed"
    with pytest.raises(DecryptionError):
        SealedValue.loads(b"not json")


def test_rotate_key_keeps_old_versions_readable(store: SecretStore) -> None:
    path = "medessence/production/auth"
    first = store.catalog.category("auth").build({}, development=False)
    store.secrets.put(path, first)
    assert store.rotate_key("auth") == 2
    second = store.catalog.category("auth").build({}, development=False)
    store.secrets.put(path, second)
    versions = store.secrets.versions(path)
    assert [v.kek_version for v in versions] == [1, 2]
    assert store.secrets.get(path, version=1).fields == first
    assert store.secrets.get(path).fields == second
    assert [v.version for v in store.key_versions("auth")] == [1, 2]
    assert [v.version for v in store.key_versions("database")] == [1]


def test_rewrap_moves_every_data_key_and_is_resumable(store: SecretStore) -> None:
    store.provision("development")
    for i in range(10):
        store.secrets.put(
            f"medessence/development/auth/svc-{i:02d}",
            store.catalog.category("auth").build({}, development=True),
        )
    before = {
        m.path: store.secrets.get(m.path).fields.to_dict() for m in store.secrets.list().items
    }
    store.rotate_key("auth")
    seen: list[tuple[int, int, str]] = []
    report = store.rewrap(on_progress=lambda d, t, p: seen.append((d, t, p)))
    assert report.secrets == 15
    assert report.rewrapped == 11  # auth root + 10 services; other categories are current
    assert seen[-1][0] == seen[-1][1] == 15
    for meta in store.secrets.list().items:
        assert store.secrets.get(meta.path).fields == before[meta.path]
        if meta.category == "auth":
            assert {v.kek_version for v in meta.versions} == {2}
    # a second pass finds nothing to do; resuming after the last path does nothing
    assert store.rewrap().rewrapped == 0
    assert store.rewrap(after=seen[-1][2]).secrets == 0
    # resume from the middle: only the rest is visited
    store.rotate_key("auth")
    middle = seen[6][2]
    rest = store.rewrap(after=middle)
    assert rest.secrets == 15 - 7


def test_rotation_and_rewrap_while_four_threads_read_and_write(store: SecretStore) -> None:
    paths = [f"medessence/production/auth/svc-{i}" for i in range(8)]
    build = store.catalog.category("auth").build
    for p in paths:
        store.secrets.put(p, build({}, development=False))
    failures: list[BaseException] = []
    reads = [0]
    stop = threading.Event()

    def reader(offset: int) -> None:
        i = offset
        while not stop.is_set():
            try:
                store.secrets.get(paths[i % len(paths)])
                reads[0] += 1
            except BaseException as exc:  # any failed read fails the test
                failures.append(exc)
            i += 1

    def writer(offset: int) -> None:
        i = offset
        while not stop.is_set():
            try:
                store.secrets.put(paths[i % len(paths)], build({}, development=False))
            except BaseException as exc:
                failures.append(exc)
            i += 3

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(2)]
    threads += [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            store.rotate_key("auth")
            store.rewrap()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert reads[0] > 0
    final = store.rewrap()  # writers may have used a cached older version mid-rotation
    assert final.secrets == 8
    for p in paths:
        for v in store.secrets.versions(p):
            assert store.secrets.get(p, version=v.number).number == v.number
            assert v.kek_version == 4


def test_a_rotation_made_by_another_process_is_used_at_once(
    store: SecretStore, tmp_path: Path
) -> None:
    """Two stores over one database, as two workers or two nodes: after one rotates a
    category's KEK, the other wraps new data keys under the new KEK and its rewrap moves
    the old ones (it used to report them current from its cached version list)."""
    path = "medessence/production/auth"
    other = SecretStore(SqliteStorage(tmp_path / "store.db"))
    try:
        other.auto_unseal()
        value = other.catalog.category("auth").build({}, development=False)
        other.secrets.put(path, value)  # its version list is now cached: KEK 1
        other.secrets.put(path + "/b", value)
        assert store.rotate_key("auth") == 2
        report = other.rewrap()
        assert report.rewrapped == 2
        other.secrets.put(path + "/c", value)
        for meta in store.secrets.list(prefix=path).items:
            assert {v.kek_version for v in meta.versions} == {2}, meta.path
    finally:
        other.close()
