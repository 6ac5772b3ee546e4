"""The audit key source drops its keys (HMAC keys, checkpoint signing key) when the
barrier seals, not at the next audit event: also when this worker seals by following
another worker's seal (the latch), with no request of its own."""

from __future__ import annotations

from pathlib import Path

from medsecrets.audit.keys import BarrierKeySource
from medsecrets.schema.seal import KeyFileSealConfig
from medsecrets.seal.latch import SharedLatch
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore


def _held(source: BarrierKeySource) -> bool:
    return bool(source._cache or source._material or source._signer is not None)


def test_a_seal_drops_the_audit_keys_at_once(store: SecretStore) -> None:
    source = BarrierKeySource(store.barrier)
    assert source("file") is not None
    assert source.material("file") is not None
    assert _held(source)
    store.seal()
    assert not _held(source)  # before any audit event asks
    assert repr(source) == "BarrierKeySource(cached=0)"


def test_a_seal_by_another_worker_drops_this_workers_audit_keys(tmp_path: Path) -> None:
    first = SecretStore(SqliteStorage(tmp_path / "s.db"), latch=SharedLatch.create(str(tmp_path)))
    assert isinstance(first.latch, SharedLatch)
    second = SecretStore(SqliteStorage(tmp_path / "s.db"), latch=SharedLatch.open(first.latch.path))
    try:
        first.initialize(KeyFileSealConfig(str(tmp_path / "unseal.key")))
        second.auto_unseal()
        source = BarrierKeySource(second.barrier)
        assert source("file") is not None
        assert source.public_key_pem() is not None
        first.seal(by_operator=True)
        assert second.follow_latch() is True  # what the latch watcher does
        assert not _held(source)
    finally:
        first.close()
        second.close()
