from __future__ import annotations

import pytest

from medsecrets.errors import InvalidRequest, StorageError
from medsecrets.seal.config import (
    AwsKmsSealConfig,
    KeyFileSealConfig,
    ShamirSealConfig,
    config_from_document,
    config_to_document,
    seal_type,
)


@pytest.mark.parametrize(("shares", "threshold"), [(1, 1), (2, 2), (5, 3), (16, 16), (16, 2)])
def test_valid_shamir_configs(shares: int, threshold: int) -> None:
    config = ShamirSealConfig(shares=shares, threshold=threshold)
    assert config_from_document(config_to_document(config)) == config


@pytest.mark.parametrize(
    ("shares", "threshold"), [(0, 0), (5, 0), (3, 4), (17, 3), (5, 1), (2, 1), (-1, 1)]
)
def test_invalid_shamir_configs(shares: int, threshold: int) -> None:
    with pytest.raises(InvalidRequest):
        ShamirSealConfig(shares=shares, threshold=threshold)


def test_defaults_and_types() -> None:
    assert ShamirSealConfig() == ShamirSealConfig(5, 3)
    kms = AwsKmsSealConfig("alias/medsecrets-root")
    assert (kms.region, kms.endpoint_url) == ("us-east-1", None)
    assert [seal_type(c) for c in (ShamirSealConfig(), KeyFileSealConfig("/k"), kms)] == [
        "shamir",
        "keyfile",
        "awskms",
    ]
    for config in (KeyFileSealConfig("/k"), kms, AwsKmsSealConfig("k", "eu-west-1", "http://x")):
        assert config_from_document(config_to_document(config)) == config
    with pytest.raises(InvalidRequest):
        KeyFileSealConfig("")
    with pytest.raises(InvalidRequest):
        AwsKmsSealConfig("")


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        {"type": "other"},
        {"type": "shamir", "shares": 5, "threshold": 3, "unknown": 1},
        {"type": "shamir", "shares": 5},
        {"type": "shamir", "shares": 3, "threshold": 5},
        {"type": "keyfile", "shares": 0, "threshold": 0},
        {
            "type": "awskms",
            "shares": 0,
            "threshold": 0,
            "key_id": "k",
            "region": "r",
            "endpoint_url": 5,
        },
    ],
)
def test_malformed_documents(doc: object) -> None:
    with pytest.raises(StorageError):
        config_from_document(doc)
