"""Fixtures for the seal tests: real SQLite storage, a barrier, and a moto server process.

``moto_server`` is session-scoped and built on ``medsecrets.testing.motoserver.MotoServer``
so other test packages can reuse the same pattern.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from medsecrets.barrier.aes_gcm import AesGcmBarrier
from medsecrets.schema.seal import AwsKmsSealConfig
from medsecrets.seal.kms import AwsCredentials, AwsKmsClient, KmsClient
from medsecrets.seal.manager import SealManager
from medsecrets.sensitive import Sensitive
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.testing.motoserver import (
    DUMMY_ACCESS_KEY_ID,
    DUMMY_SECRET_ACCESS_KEY,
    MotoServer,
)

REGION = "us-east-1"
CREDENTIALS = AwsCredentials(DUMMY_ACCESS_KEY_ID, Sensitive(DUMMY_SECRET_ACCESS_KEY))


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def boto_kms(moto_server: MotoServer) -> Any:
    import boto3

    return boto3.session.Session().client(
        "kms",
        region_name=REGION,
        endpoint_url=moto_server.endpoint_url,
        aws_access_key_id=DUMMY_ACCESS_KEY_ID,
        aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
    )


@pytest.fixture
def kms_factory() -> Callable[[AwsKmsSealConfig], KmsClient]:
    def factory(config: AwsKmsSealConfig) -> KmsClient:
        return AwsKmsClient(
            region=config.region, endpoint_url=config.endpoint_url, credentials=CREDENTIALS
        )

    return factory


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def storage(db_path: Path) -> Iterator[SqliteStorage]:
    store = SqliteStorage(db_path)
    yield store
    store.close()


@pytest.fixture
def barrier(storage: SqliteStorage) -> AesGcmBarrier:
    return AesGcmBarrier(storage)


@pytest.fixture
def manager(
    storage: SqliteStorage,
    barrier: AesGcmBarrier,
    kms_factory: Callable[[AwsKmsSealConfig], KmsClient],
) -> SealManager:
    return SealManager(storage, barrier, kms_factory=kms_factory)
