"""A seal must leave nothing decrypted behind, also when a read or a token check was under way.

The seam: ``Paused`` is the real barrier, except that one of its calls (``open_record``
of a chosen key prefix, also inside ``get`` and ``get_with_etag``, or ``batch``), once
armed, stops when done (the record passed the seal check and is open, or the write is
stored) until the test releases it. The
test seals meanwhile, as ``POST /v1/sys/seal`` does, then lets the caller finish:
whatever it would put in a cache after that must not stay there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from medsecrets.audit.keys import BarrierKeySource
from medsecrets.auth.tokens import TokenStore
from medsecrets.barrier.aes_gcm import AesGcmBarrier
from medsecrets.engines.secrets.engine import SecretsEngine
from medsecrets.errors import SealedError
from medsecrets.keys.envelope import Envelope
from medsecrets.keys.manager import KeyManager
from medsecrets.schema.seal import KeyFileSealConfig
from medsecrets.seal.latch import SharedLatch
from medsecrets.storage.base import Operation
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore

PATH = "medessence/production/database/primary"
FIELDS = {
    "host": "db.internal",
    "port": "5432",
    "username": "app",
    "password": "S3cure!Passw0rd#2026xyz",
    "database": "medessence",
}


class Paused:
    """The real barrier; ``open_record`` of keys under ``prefix`` (or, with ``prefix``
    ``None``, ``batch``) waits when done once armed (the seam)."""

    def __init__(self, barrier: AesGcmBarrier, prefix: str | None) -> None:
        self._barrier = barrier
        self._prefix = prefix
        self._armed = False
        self.reached = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._barrier, name)

    def arm(self) -> None:
        self._armed = True

    def open_record(self, key: str, record: bytes) -> bytes:
        plaintext = self._barrier.open_record(key, record)
        if self._prefix is not None and key.startswith(self._prefix):
            self._wait()
        return plaintext

    def get_with_etag(self, key: str) -> tuple[bytes | None, bytes | None]:
        record = self._barrier.get_record(key)  # as the barrier's own, through the seam
        return (None, None) if record is None else (self.open_record(key, record), record)

    def get(self, key: str) -> bytes | None:
        return self.get_with_etag(key)[0]

    def batch(self, ops: Sequence[Operation]) -> Mapping[str, bytes]:
        etags = self._barrier.batch(ops)
        if self._prefix is None:
            self._wait()
        return etags

    def _wait(self) -> None:
        if self._armed:
            self._armed = False
            self.reached.set()
            assert self.release.wait(30)


def _sealed_while_under_way(
    paused: Paused, call: Callable[[], object], seal: Callable[[], object]
) -> None:
    """Run ``call`` in a thread, seal when it has decrypted its record, then let it finish."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except SealedError:
            pass  # the read may fail later on (its data key): either way nothing may stay
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    paused.arm()
    thread = threading.Thread(target=run)
    thread.start()
    assert paused.reached.wait(30)
    seal()
    paused.release.set()
    thread.join(30)
    assert not thread.is_alive()
    assert not errors


def test_a_read_under_way_at_a_seal_caches_nothing(store: SecretStore) -> None:
    store.secrets.put(PATH, FIELDS)
    paused = Paused(store.barrier, "secrets/meta/")
    engine = SecretsEngine(
        paused, catalog=store.catalog, envelope=store.envelope, clock=store.clock
    )

    def seal() -> None:
        store.seal(by_operator=True)
        engine.forget()

    _sealed_while_under_way(paused, lambda: engine.get(PATH), seal)
    assert not engine._views  # no decrypted record kept through the seal
    with pytest.raises(SealedError):
        engine.get(PATH)


def test_a_write_under_way_at_a_seal_remembers_nothing(store: SecretStore) -> None:
    store.secrets.put(PATH, FIELDS)
    paused = Paused(store.barrier, None)
    engine = SecretsEngine(
        paused, catalog=store.catalog, envelope=store.envelope, clock=store.clock
    )

    def seal() -> None:
        store.seal(by_operator=True)
        engine.forget()

    _sealed_while_under_way(paused, lambda: engine.update_metadata(PATH, owner="ops"), seal)
    assert not engine._written  # no decrypted record kept through the seal


def test_a_token_check_under_way_at_a_seal_caches_nothing(store: SecretStore) -> None:
    paused = Paused(store.barrier, "auth/tokens/")
    tokens = TokenStore(paused, clock=store.clock)  # type: ignore[arg-type]
    token, _ = tokens.create_root()
    tokens.forget()

    def seal() -> None:
        store.seal(by_operator=True)
        tokens.forget()  # what sys/seal does

    _sealed_while_under_way(paused, lambda: tokens.authenticate(token.reveal()), seal)
    assert repr(tokens) == "TokenStore(cached=0)"
    assert tokens._key is None and tokens._mac is None
    with pytest.raises(SealedError):
        tokens.authenticate(token.reveal())


def test_a_seal_by_another_worker_drops_this_workers_tokens(tmp_path: Path) -> None:
    """Two stores over one storage and one latch, as two workers: the second follows the
    latch (its watcher thread, no request) and must drop its token cache and HMAC key too."""
    first = SecretStore(SqliteStorage(tmp_path / "s.db"), latch=SharedLatch.create(str(tmp_path)))
    assert isinstance(first.latch, SharedLatch)
    second = SecretStore(SqliteStorage(tmp_path / "s.db"), latch=SharedLatch.open(first.latch.path))
    try:
        first.initialize(KeyFileSealConfig(str(tmp_path / "unseal.key")))
        second.auto_unseal()
        tokens = TokenStore(second.barrier)
        token, _ = tokens.create_root()
        tokens.authenticate(token.reveal())
        assert repr(tokens) == "TokenStore(cached=1)"
        first.seal(by_operator=True)
        assert second.follow_latch() is True
        assert repr(tokens) == "TokenStore(cached=0)"
        assert tokens._key is None and tokens._mac is None
    finally:
        first.close()
        second.close()


def test_an_unwrap_under_way_at_a_seal_keeps_no_key_material(store: SecretStore) -> None:
    """The unwrap stops once the category's KEK record is open; after the seal it must not
    put the KEK table (raw KEK bytes), the KEK cipher or the data key in a cache."""
    paused = Paused(store.barrier, "keys/local/")
    keys = KeyManager(paused, store.catalog, clock=store.clock)  # type: ignore[arg-type]
    envelope = Envelope(keys.provider, provider_named=keys.named)
    sealed = envelope.seal(b"phi", path="p", version=1, category="auth")
    keys.forget()
    envelope.forget()

    def seal() -> None:
        store.seal(by_operator=True)
        keys.forget()  # what SecretStore.seal does for its own
        envelope.forget()

    opened = lambda: envelope.open(sealed, path="p", version=1, category="auth")  # noqa: E731
    _sealed_while_under_way(paused, opened, seal)
    local = keys.named("local")
    assert repr(local) == "LocalKekProvider(categories=[])"  # no KEK table
    assert not local._aead  # type: ignore[attr-defined]  # no KEK cipher
    assert repr(envelope) == "Envelope(cached_keys=0)"  # no data key
    with pytest.raises(SealedError):
        opened()


@pytest.mark.parametrize("read", ["keys", "material"])
def test_an_audit_key_read_under_way_at_a_seal_keeps_nothing(store: SecretStore, read: str) -> None:
    """The key source (``__call__`` for a lane here, ``material`` for an audit process)
    stops once the checkpoint signing key is open (the device's HMAC key read before
    it); after the seal it must keep no key."""
    assert BarrierKeySource(store.barrier)("file") is not None  # both keys stored
    paused = Paused(store.barrier, "sys/audit/signing-key")
    source = BarrierKeySource(paused)  # type: ignore[arg-type]
    call = source if read == "keys" else source.material
    _sealed_while_under_way(paused, lambda: call("file"), lambda: store.seal(by_operator=True))
    assert repr(source) == "BarrierKeySource(cached=0)"
    assert source._signer is None and not source._material
    assert call("file") is None
