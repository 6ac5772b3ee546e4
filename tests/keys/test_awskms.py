"""The aws-kms KEK provider against a real moto server process (boto3 over HTTP)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from medsecrets.catalog.loader import default_catalog
from medsecrets.catalog.model import Catalog, KekSpec
from medsecrets.clock import ManualClock
from medsecrets.errors import DecryptionError, NotFoundError, ProviderError
from medsecrets.keys.awskms import AwsKmsKekProvider
from medsecrets.schema.seal import KeyFileSealConfig
from medsecrets.sensitive import Sensitive
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore
from medsecrets.testing.motoserver import DUMMY_ACCESS_KEY_ID, DUMMY_SECRET_ACCESS_KEY, MotoServer


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


def kms_client(moto: MotoServer):  # type: ignore[no-untyped-def]
    return boto3.client(
        "kms",
        endpoint_url=moto.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=DUMMY_ACCESS_KEY_ID,
        aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
    )


def kms_catalog(prefix: str) -> Catalog:
    """The default catalog with two categories moved to AWS KMS (aliases unique per test)."""
    base = default_catalog()
    categories = dict(base.categories)
    for name in ("database", "medical-encryption"):
        categories[name] = dataclasses.replace(
            categories[name], kek=KekSpec(provider="aws-kms", key_id=f"alias/{prefix}-{name}")
        )
    return dataclasses.replace(base, categories=categories)


@pytest.fixture
def kms_store(
    tmp_path: Path, moto: MotoServer, request: pytest.FixtureRequest
) -> Iterator[SecretStore]:
    prefix = f"t{abs(hash(request.node.nodeid)) % 10**8}"
    store = SecretStore(
        SqliteStorage(tmp_path / "s.db"),
        catalog=kms_catalog(prefix),
        clock=ManualClock(),
        kms_client_factory=lambda: kms_client(moto),
    )
    store.initialize(KeyFileSealConfig(str(tmp_path / "k")))
    store.kms_prefix = prefix  # type: ignore[attr-defined]
    yield store
    store.close()


def test_provision_writes_nothing_when_a_later_category_cannot_be_wrapped(
    tmp_path: Path,
) -> None:
    """``medical-encryption`` on AWS KMS with no client to be had: provision used to create
    ``database`` and ``ai-providers`` (local KEKs, earlier in the catalog), then fail."""
    base = default_catalog()
    categories = dict(base.categories)
    categories["medical-encryption"] = dataclasses.replace(
        categories["medical-encryption"], kek=KekSpec(provider="aws-kms", key_id="alias/x")
    )

    def no_client() -> object:
        raise ProviderError("AWS KMS client: NoRegionError")

    store = SecretStore(
        SqliteStorage(tmp_path / "s.db"),
        catalog=dataclasses.replace(base, categories=categories),
        clock=ManualClock(),
        kms_client_factory=no_client,  # type: ignore[arg-type]
    )
    store.initialize(KeyFileSealConfig(str(tmp_path / "k")))
    try:
        assert list(base.categories).index("medical-encryption") > 0
        with pytest.raises(ProviderError):
            store.provision("development")
        for name in base.categories:
            with pytest.raises(NotFoundError):
                store.secrets.describe(f"medessence/development/{name}")
    finally:
        store.close()


def test_values_round_trip_through_kms(kms_store: SecretStore, moto: MotoServer) -> None:
    report = kms_store.provision("development")
    assert report.created == 5
    for item in report.items:
        assert kms_store.secrets.get(item.path).number == 1
    prefix = kms_store.kms_prefix  # type: ignore[attr-defined]
    client = kms_client(moto)
    aliases = {a["AliasName"]: a.get("TargetKeyId") for a in client.list_aliases()["Aliases"]}
    assert f"alias/{prefix}-database" in aliases
    assert f"alias/{prefix}-medical-encryption" in aliases
    assert aliases[f"alias/{prefix}-database"] != aliases[f"alias/{prefix}-medical-encryption"]
    [v] = kms_store.key_versions("database")
    assert v.key_id is not None and v.key_id.startswith("arn:aws:kms:")


def test_kms_rotation_and_rewrap(kms_store: SecretStore, moto: MotoServer) -> None:
    path = "medessence/production/database"
    build = kms_store.catalog.category("database").build
    first = build({}, development=True)
    kms_store.secrets.put(path, first)
    assert kms_store.rotate_key("database") == 2
    versions = kms_store.key_versions("database")
    assert versions[0].key_id != versions[1].key_id
    prefix = kms_store.kms_prefix  # type: ignore[attr-defined]
    target = kms_client(moto).describe_key(KeyId=f"alias/{prefix}-database")["KeyMetadata"]["Arn"]
    assert target == versions[1].key_id  # the alias follows the newest version
    assert kms_store.secrets.get(path).fields == first  # old KEK version still decrypts
    report = kms_store.rewrap()
    assert report.rewrapped == 1
    assert [v.kek_version for v in kms_store.secrets.versions(path)] == [2]
    kms_store.envelope.forget()
    assert kms_store.secrets.get(path).fields == first


def test_kms_context_binding(kms_store: SecretStore) -> None:
    sealed = kms_store.envelope.seal(b"v", path="p", version=1, category="database")
    assert sealed.wrapped.provider == "aws-kms"
    with pytest.raises(DecryptionError):
        kms_store.envelope.open(sealed, path="p", version=2, category="database")


def test_a_category_moved_from_local_to_kms_keeps_its_values(
    tmp_path: Path, moto: MotoServer
) -> None:
    """Values written under a local KEK stay readable once the catalog moves their category
    to AWS KMS (the provider that wrapped a data key unwraps it); new versions are wrapped
    by KMS, and a rewrap moves the old ones there."""
    path = "medessence/production/medical-encryption"
    first = SecretStore(SqliteStorage(tmp_path / "s.db"), clock=ManualClock())
    first.initialize(KeyFileSealConfig(str(tmp_path / "k")))
    old = first.catalog.category("medical-encryption").build({}, development=False)
    first.secrets.put(path, old)
    first.close()
    moved = SecretStore(
        SqliteStorage(tmp_path / "s.db"),
        catalog=kms_catalog(f"moved{abs(hash(str(tmp_path))) % 10**8}"),
        clock=ManualClock(),
        kms_client_factory=lambda: kms_client(moto),
    )
    try:
        moved.auto_unseal()
        assert moved.secrets.get(path).fields == old
        new = moved.catalog.category("medical-encryption").build({}, development=False)
        moved.secrets.put(path, new)
        assert moved.secrets.get(path).fields == new
        report = moved.secrets.rewrap()
        assert report.rewrapped == 1  # the local version, now wrapped by KMS
        assert moved.secrets.get(path, version=1).fields == old
        assert moved.secrets.rewrap().rewrapped == 0
    finally:
        moved.close()


def test_a_barrier_seal_alone_drops_the_kms_version_table(kms_store: SecretStore) -> None:
    kms_store.envelope.seal(b"phi", path="p", version=1, category="database")
    aws = kms_store.keys.named("aws-kms")
    assert repr(aws) == "AwsKmsKekProvider(categories=['database'])"
    kms_store.seal_manager.seal()  # the barrier seals, without SecretStore.seal
    assert repr(aws) == "AwsKmsKekProvider(categories=[])"


class _RacingClient:
    """A real KMS client whose first ``create_key`` first lets ``before`` run (another
    process's first use of the category, at the worst moment)."""

    def __init__(self, client, before) -> None:  # type: ignore[no-untyped-def]
        self._client = client
        self._before = before

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._client, name)

    def create_key(self, **kwargs):  # type: ignore[no-untyped-def]
        before, self._before = self._before, None
        if before is not None:
            before()
        return self._client.create_key(**kwargs)


def test_two_first_uses_at_once_share_one_kms_key(kms_store: SecretStore, moto: MotoServer) -> None:
    """Two processes use a KMS category first at once: the one whose ``CreateAlias`` finds
    the alias made meanwhile takes the key it names (the other's version 1); it failed the
    write with 'AWS KMS CreateAlias failed: AlreadyExistsException'."""
    prefix = kms_store.kms_prefix  # type: ignore[attr-defined]
    alias = f"alias/{prefix}-database"
    other = AwsKmsKekProvider(kms_store.barrier, kms_client(moto), alias_for=lambda c: alias)
    racing = _RacingClient(kms_client(moto), lambda: other.current_version("database"))
    mine = AwsKmsKekProvider(kms_store.barrier, racing, alias_for=lambda c: alias)  # type: ignore[arg-type]
    context = {"path": "p", "version": "1", "category": "database"}
    wrapped = mine.wrap("database", Sensitive(b"k" * 32), context)
    assert wrapped.kek_version == 1
    assert other.unwrap("database", wrapped, context).reveal() == b"k" * 32
    [version] = mine.versions("database")
    target = kms_client(moto).describe_key(KeyId=alias)["KeyMetadata"]["Arn"]
    assert version.key_id == target


def test_a_debug_log_holds_no_kms_plaintext(moto: MotoServer, tmp_path: Path) -> None:
    """At DEBUG botocore logs request and response bodies: a data key's ``Plaintext`` (and,
    through the seal, the root key) went into the server's log."""
    import base64
    import logging

    from medsecrets.logs import QUIET_LIBRARIES, log_json

    log = tmp_path / "server.log"
    touched = [logging.getLogger(), *(logging.getLogger(name) for name in QUIET_LIBRARIES)]
    levels = [logger.level for logger in touched]  # restored: other tests read these loggers
    handler = log_json("debug", file=str(log))
    try:
        client = kms_client(moto)
        key = client.create_key()["KeyMetadata"]["KeyId"]
        plaintext = client.generate_data_key(KeyId=key, KeySpec="AES_256")["Plaintext"]
        logging.getLogger("medsecrets.test").debug("debug lines are written")
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
        for logger, level in zip(touched, levels, strict=True):
            logger.setLevel(level)
    text = log.read_text()
    assert "debug lines are written" in text
    for form in (base64.b64encode(plaintext).decode(), plaintext.hex()):
        assert form not in text


def test_the_store_s_default_kek_client_is_the_bounded_one(tmp_path: Path) -> None:
    """The store passed boto3's defaults (60 s to connect, 60 s per read, 3 attempts)."""
    from medsecrets.keys.awskms import kek_kms_client
    from medsecrets.storage.sqlite import SqliteStorage

    store = SecretStore(SqliteStorage(str(tmp_path / "s.db")))
    try:
        assert store.keys._kms_client_factory is kek_kms_client  # type: ignore[attr-defined]
    finally:
        store.close()
