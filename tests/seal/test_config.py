"""The stored form of a seal configuration: round trips, and malformed documents refused."""

from __future__ import annotations

import pytest

from medsecrets.errors import StorageError
from medsecrets.schema.seal import AwsKmsSealConfig, KeyFileSealConfig, ShamirSealConfig
from medsecrets.seal.config import config_from_document, config_to_document


@pytest.mark.parametrize(("shares", "threshold"), [(1, 1), (2, 2), (5, 3), (16, 16), (16, 2)])
def test_valid_shamir_configs(shares: int, threshold: int) -> None:
    config = ShamirSealConfig(shares=shares, threshold=threshold)
    assert config_from_document(config_to_document(config)) == config


def test_every_kind_round_trips() -> None:
    kms = AwsKmsSealConfig("alias/medsecrets-root")
    for config in (KeyFileSealConfig("/k"), kms, AwsKmsSealConfig("k", "eu-west-1", "http://x")):
        assert config_from_document(config_to_document(config)) == config


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
