"""The aws-kms KEK provider against hostile KMS peers (real sockets on 127.0.0.1): a peer
answering garbage, refusing (disabled key, key pending deletion), throttling or never
answering. Each is a ``ProviderError`` naming the operation and AWS's error code only, and
no secret is written."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from tests.support.peers import FixedAnswer, RawPeer, answer, read_head

from medsecrets.errors import MedsecretsError, ProviderError
from medsecrets.keys.awskms import (
    KEK_KMS_ATTEMPTS,
    KEK_KMS_TIMEOUT,
    AwsKmsKekProvider,
    kek_kms_client,
)
from medsecrets.keys.base import WrappedKey
from medsecrets.keys.manager import KeyManager
from medsecrets.schema.seal import KeyFileSealConfig
from medsecrets.sensitive import Sensitive
from medsecrets.storage.base import Put
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore

_JSON = "Content-Type: application/x-amz-json-1.1"
_KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/0a1b2c3d-0000-0000-0000-000000000000"
_CONTEXT = {"path": "medessence/production/database", "version": "1", "category": "database"}
_DEK = b"\x07" * 32


@pytest.fixture
def plain_store(tmp_path: Path) -> Iterator[SecretStore]:
    """A local-only store whose ``database`` category has a KMS KEK table already (version 1
    names ``_KEY_ARN``), so the provider calls only ``Encrypt`` and ``Decrypt``."""
    store = SecretStore(SqliteStorage(tmp_path / "s.db"))
    store.initialize(KeyFileSealConfig(str(tmp_path / "k")))
    entry = {"version": "1", "created_at": "2026-01-01T00:00:00+00:00", "key_id": _KEY_ARN}
    store.barrier.batch([Put("keys/aws-kms/database", json.dumps({"versions": [entry]}).encode())])
    yield store
    store.close()


def _client(peer: FixedAnswer):  # type: ignore[no-untyped-def]
    """A boto3 KMS client of ``peer`` that tries each call once."""
    return boto3.client(
        "kms",
        endpoint_url=peer.addr,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}),
    )


def _provider(store: SecretStore, peer: FixedAnswer) -> AwsKmsKekProvider:
    return AwsKmsKekProvider(store.barrier, _client(peer))


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b"<html>not KMS</html>",
        b'{"CiphertextBlob": null, "Plaintext": null}',
        b'{"CiphertextBlob": "", "Plaintext": ""}',
        b'{"CiphertextBlob": 7, "Plaintext": 7}',
    ],
    ids=["empty", "html", "null", "empty-blob", "number"],
)
def test_a_peer_answering_garbage_is_a_provider_error(
    plain_store: SecretStore, body: bytes
) -> None:
    """An answer without a usable blob is refused: it used to raise ``KeyError`` (a 500), or
    (an empty blob) wrap the data key as nothing, a secret that could never be read again."""
    peer = FixedAnswer(answer("200 OK", body, _JSON))
    try:
        provider = _provider(plain_store, peer)
        with pytest.raises(ProviderError) as wrapping:
            provider.wrap("database", Sensitive(_DEK), _CONTEXT)
        assert str(wrapping.value) == "AWS KMS Encrypt failed: malformed answer"
        with pytest.raises(ProviderError) as unwrapping:
            provider.unwrap("database", WrappedKey("aws-kms", 1, b"blob"), _CONTEXT)
        assert str(unwrapping.value) == "AWS KMS Decrypt failed: malformed answer"
    finally:
        peer.stop()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("DisabledException", f"{_KEY_ARN} is disabled."),
        ("KMSInvalidStateException", f"{_KEY_ARN} is pending deletion."),
        ("ThrottlingException", "Rate exceeded"),
    ],
)
def test_a_refusing_peer_is_a_provider_error_naming_only_the_code(
    plain_store: SecretStore, code: str, message: str
) -> None:
    body = json.dumps({"__type": code, "message": message}).encode()
    peer = FixedAnswer(answer("400 Bad Request", body, _JSON))
    try:
        provider = _provider(plain_store, peer)
        for call in (
            lambda: provider.wrap("database", Sensitive(_DEK), _CONTEXT),
            lambda: provider.unwrap("database", WrappedKey("aws-kms", 1, b"blob"), _CONTEXT),
        ):
            with pytest.raises(ProviderError) as info:
                call()
            assert str(info.value).endswith(f" failed: {code}")
            assert info.value.__cause__ is None and info.value.__suppress_context__
    finally:
        peer.stop()


def test_a_put_whose_wrap_fails_writes_nothing(tmp_path: Path) -> None:
    """A category on a KMS that answers garbage: the write fails as a ``ProviderError``, and
    neither the secret nor any of its records exist afterwards."""
    from tests.keys.test_awskms import kms_catalog

    peer = FixedAnswer(answer("200 OK", b"{}", _JSON))
    store = SecretStore(
        SqliteStorage(tmp_path / "s.db"),
        catalog=kms_catalog("garbage"),
        kms_client_factory=lambda: _client(peer),
    )
    try:
        store.initialize(KeyFileSealConfig(str(tmp_path / "k")))
        entry = {"version": "1", "created_at": "2026-01-01T00:00:00+00:00", "key_id": _KEY_ARN}
        store.barrier.batch(
            [Put("keys/aws-kms/database", json.dumps({"versions": [entry]}).encode())]
        )
        before = set(store.storage.list("").keys)
        path = "medessence/production/database"
        value = store.catalog.category("database").build({}, development=True)
        with pytest.raises(MedsecretsError) as info:
            store.secrets.put(path, value)
        assert isinstance(info.value, ProviderError), repr(info.value)
        assert set(store.storage.list("").keys) == before
    finally:
        store.close()
        peer.stop()


class Silent(RawPeer):
    """A KMS that reads each request and never answers; counts the requests."""

    def __init__(self) -> None:
        self.requests = 0
        super().__init__()
        self.addr = f"http://127.0.0.1:{self.port}"

    def serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if read_head(conn) is None:
                return
            self.requests += 1
            self.stopping.wait()


@pytest.fixture
def kms_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3's default chain finds a region and credentials (the endpoint is set by each test)."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("kms_env")
def test_the_default_kek_client_waits_a_bounded_time(plain_store: SecretStore) -> None:
    """Without an injected factory the aws-kms provider gets ``kek_kms_client``: 3 s to
    connect and per read, 2 attempts (boto3's defaults are 60 s each; a KMS that never
    answered held a request for minutes). Before, it refused to build at all."""
    keys = KeyManager(plain_store.barrier, plain_store.catalog)
    provider = keys.named("aws-kms")
    assert isinstance(provider, AwsKmsKekProvider)
    config = provider._client.meta.config  # type: ignore[attr-defined]
    assert config.connect_timeout == config.read_timeout == KEK_KMS_TIMEOUT == 3.0
    assert config.retries["total_max_attempts"] == KEK_KMS_ATTEMPTS == 2


@pytest.mark.usefixtures("kms_env")
def test_a_kms_that_never_answers_fails_after_the_bounded_attempts(
    plain_store: SecretStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer = Silent()
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", peer.addr)
    try:
        provider = AwsKmsKekProvider(plain_store.barrier, kek_kms_client(timeout=0.2))
        with pytest.raises(ProviderError) as info:
            provider.wrap("database", Sensitive(_DEK), _CONTEXT)
        assert str(info.value) == "AWS KMS Encrypt failed: ReadTimeoutError"
        # the peer counts a request in a thread of its own, which a loaded machine may run
        # after the client gave up on it
        deadline = time.monotonic() + 30
        while peer.requests < KEK_KMS_ATTEMPTS and time.monotonic() < deadline:
            time.sleep(0.01)
        assert peer.requests == KEK_KMS_ATTEMPTS
    finally:
        peer.stop()


@pytest.mark.usefixtures("kms_env")
def test_a_throttling_kms_fails_after_the_bounded_attempts(
    plain_store: SecretStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = b'{"__type": "ThrottlingException", "message": "Rate exceeded"}'
    peer = FixedAnswer(answer("400 Bad Request", body, _JSON))
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", peer.addr)
    try:
        provider = AwsKmsKekProvider(plain_store.barrier, kek_kms_client())
        with pytest.raises(ProviderError) as info:
            provider.unwrap("database", WrappedKey("aws-kms", 1, b"blob"), _CONTEXT)
        assert str(info.value) == "AWS KMS Decrypt failed: ThrottlingException"
        assert len(peer.heads) == KEK_KMS_ATTEMPTS
    finally:
        peer.stop()


def test_no_region_is_a_provider_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ProviderError) as info:
        kek_kms_client()
    assert str(info.value) == "AWS KMS client: NoRegionError"
