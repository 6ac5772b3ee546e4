"""A worker catching up with an init served by another never waits on KMS in a request.

Two ``SecretStore``s over one SQLite file and one shared latch (two workers of
a server), the AWS KMS seal on a moto server; the second store's KMS client is
the real one with a gate in front of ``Decrypt``, so the test holds KMS "slow"
for as long as it needs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from medsecrets.errors import SealedError
from medsecrets.schema.seal import AwsKmsSealConfig
from medsecrets.seal.kms import SEAL_KMS_ATTEMPTS, SEAL_KMS_TIMEOUT, AwsKmsClient, KmsClient
from medsecrets.seal.latch import SharedLatch
from medsecrets.seal.manager import _default_kms
from medsecrets.sensitive import Sensitive
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore
from medsecrets.testing.motoserver import MotoServer

PROMPT = 20.0
"""Seconds a call that must not wait for KMS is given: time for a loaded machine, and far
below the 60 s a gated ``decrypt`` waits for ``go`` (a call that waits for it fails)."""


class GatedKms:
    """A real KMS client whose ``decrypt`` waits for ``go`` (``entered`` once it does)."""

    def __init__(self, inner: KmsClient) -> None:
        self._inner = inner
        self.entered = threading.Event()
        self.go = threading.Event()

    def encrypt(
        self, key_id: str, plaintext: Sensitive[bytes], context: Mapping[str, str]
    ) -> bytes:
        return self._inner.encrypt(key_id, plaintext, context)

    def decrypt(
        self, blob: bytes, context: Mapping[str, str], *, key_id: str | None = None
    ) -> Sensitive[bytes]:
        self.entered.set()
        assert self.go.wait(60)
        return self._inner.decrypt(blob, context, key_id=key_id)


def _prompt(call: Callable[[], object]) -> object:
    """``call()``, which must return within ``PROMPT`` seconds (run in a thread: a call that
    blocks fails the test instead of hanging it)."""
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(PROMPT)
    assert not thread.is_alive(), f"still waiting after {time.monotonic() - started:.1f} s"
    return out[0] if out else None


@pytest.fixture
def workers(
    tmp_path: Path,
    moto_server: MotoServer,
    boto_kms: Any,
    kms_factory: Callable[[AwsKmsSealConfig], KmsClient],
) -> Iterator[tuple[SecretStore, SecretStore, GatedKms]]:
    key_id = boto_kms.create_key()["KeyMetadata"]["KeyId"]
    latch = SharedLatch.create(str(tmp_path))
    first = SecretStore(SqliteStorage(tmp_path / "s.db"), latch=latch, seal_kms_factory=kms_factory)
    gated: list[GatedKms] = []

    def gated_factory(config: AwsKmsSealConfig) -> KmsClient:
        gated.append(GatedKms(kms_factory(config)))
        return gated[-1]

    second = SecretStore(
        SqliteStorage(tmp_path / "s.db"),
        latch=SharedLatch.open(latch.path),
        seal_kms_factory=gated_factory,
    )
    first.initialize(AwsKmsSealConfig(key_id, endpoint_url=moto_server.endpoint_url))
    try:
        # starts the catch-up, whose KMS client is gated, and returns at once
        assert _prompt(second.follow_latch) is False
        for _ in range(3000):
            if gated:
                break
            time.sleep(0.01)
        yield first, second, gated[0]
    finally:
        for g in gated:
            g.go.set()
        second.wait_catch_up(30)
        first.close()
        second.close()
        latch.remove()


def test_a_slow_kms_never_blocks_the_seal_check_or_the_status(
    workers: tuple[SecretStore, SecretStore, GatedKms],
) -> None:
    _, second, gate = workers
    assert gate.entered.wait(30)  # the catch-up is in KMS now, and stays there
    for _ in range(3):  # every request meanwhile: the seal check answers at once, sealed
        assert _prompt(second.follow_latch) is False
        assert second.barrier.sealed
        with pytest.raises(SealedError):
            second.barrier.get("app/x")
    status = _prompt(second.status)  # health and seal-status: not held by the seal's lock
    assert status is not None and status.sealed and status.initialized  # type: ignore[attr-defined]
    gate.go.set()
    assert second.wait_catch_up(30)
    assert not second.barrier.sealed  # caught up once KMS answered


def test_an_operator_seal_while_kms_answers_wins(
    workers: tuple[SecretStore, SecretStore, GatedKms],
) -> None:
    first, second, gate = workers
    assert gate.entered.wait(30)
    first.seal(by_operator=True)  # served by the other worker while this one waits on KMS
    gate.go.set()
    assert second.wait_catch_up(30)
    assert second.barrier.sealed  # the root key KMS returned was not installed
    assert second.follow_latch() is True


def test_a_seal_while_kms_answers_wins(
    workers: tuple[SecretStore, SecretStore, GatedKms],
) -> None:
    _, second, gate = workers
    assert gate.entered.wait(30)
    _prompt(second.seal)  # a seal (a stop) does not wait for KMS either
    gate.go.set()
    assert second.wait_catch_up(30)
    assert second.barrier.sealed


def test_the_seal_kms_client_has_a_short_deadline() -> None:
    client = _default_kms(AwsKmsSealConfig("alias/x", endpoint_url="http://127.0.0.1:9"))
    assert isinstance(client, AwsKmsClient)
    config = client._client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (SEAL_KMS_TIMEOUT, SEAL_KMS_TIMEOUT)
    assert config.retries["total_max_attempts"] == SEAL_KMS_ATTEMPTS
    assert SEAL_KMS_TIMEOUT * 2 * SEAL_KMS_ATTEMPTS <= 15
