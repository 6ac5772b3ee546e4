"""The KEK providers drop their key material whenever the barrier seals (``on_seal``),
not only when ``SecretStore.seal`` tells them to."""

from __future__ import annotations

from medsecrets.store import SecretStore


def test_a_barrier_seal_alone_drops_the_kek_tables_and_ciphers(store: SecretStore) -> None:
    store.envelope.seal(b"phi", path="p", version=1, category="auth")
    local = store.keys.named("local")
    assert repr(local) == "LocalKekProvider(categories=['auth'])"
    assert local._aead  # type: ignore[attr-defined]
    store.seal_manager.seal()  # the barrier seals, without SecretStore.seal
    assert repr(local) == "LocalKekProvider(categories=[])"
    assert not local._aead  # type: ignore[attr-defined]


def test_a_barrier_seal_alone_drops_the_data_key_cache(store: SecretStore) -> None:
    envelope = store.envelope.seal(b"phi", path="p", version=1, category="auth")
    store.envelope.open(envelope, path="p", version=1, category="auth")
    assert repr(store.envelope) != "Envelope(cached_keys=0)"
    store.seal_manager.seal()  # the barrier seals, without SecretStore.seal
    assert repr(store.envelope) == "Envelope(cached_keys=0)"
