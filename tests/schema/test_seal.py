"""Seal configurations check themselves; ``seal_type`` names them; results mask their shares."""

from __future__ import annotations

import pytest

from medsecrets.errors import InvalidRequest
from medsecrets.schema.seal import (
    AwsKmsSealConfig,
    InitResponse,
    InitResult,
    KeyFileSealConfig,
    ShamirSealConfig,
    seal_type,
)
from medsecrets.sensitive import Sensitive


@pytest.mark.parametrize(("shares", "threshold"), [(1, 1), (2, 2), (5, 3), (16, 16), (16, 2)])
def test_valid_shamir_configs(shares: int, threshold: int) -> None:
    config = ShamirSealConfig(shares=shares, threshold=threshold)
    assert (config.shares, config.threshold) == (shares, threshold)


@pytest.mark.parametrize(
    ("shares", "threshold"), [(0, 0), (5, 0), (3, 4), (17, 3), (5, 1), (2, 1), (-1, 1)]
)
def test_invalid_shamir_configs(shares: int, threshold: int) -> None:
    with pytest.raises(InvalidRequest):
        ShamirSealConfig(shares=shares, threshold=threshold)


def test_shamir_counts_must_be_integers() -> None:
    with pytest.raises(InvalidRequest, match="integers"):
        ShamirSealConfig(shares=True, threshold=1)


def test_defaults_and_types() -> None:
    assert ShamirSealConfig() == ShamirSealConfig(5, 3)
    kms = AwsKmsSealConfig("alias/medsecrets-root")
    assert (kms.region, kms.endpoint_url) == ("us-east-1", None)
    assert [seal_type(c) for c in (ShamirSealConfig(), KeyFileSealConfig("/k"), kms)] == [
        "shamir",
        "keyfile",
        "awskms",
    ]
    with pytest.raises(InvalidRequest):
        KeyFileSealConfig("")
    with pytest.raises(InvalidRequest):
        AwsKmsSealConfig("")
    with pytest.raises(InvalidRequest):
        AwsKmsSealConfig("k", region="")


def test_shares_and_root_token_are_masked() -> None:
    share, token = "CANARY-share-9f2c", "ms.CANARY-token-5e1d"
    result = InitResult(shares=(Sensitive(share),), threshold=1, seal_type="shamir")
    response = InitResponse(
        shares=result.shares, threshold=1, seal_type="shamir", root_token=Sensitive(token)
    )
    for value in (result, response):
        assert share not in repr(value) and token not in repr(value)
        assert share not in str(value) and token not in str(value)
