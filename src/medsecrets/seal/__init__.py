"""The seal: how the root key is protected at rest (Shamir shares, key file, AWS KMS)."""

from medsecrets.seal.config import (
    AwsKmsSealConfig,
    KeyFileSealConfig,
    SealConfig,
    SealType,
    ShamirSealConfig,
)
from medsecrets.seal.kms import AwsCredentials, AwsKmsClient, KmsClient
from medsecrets.seal.manager import InitResult, SealManager, SealStatus

__all__ = [
    "AwsCredentials",
    "AwsKmsClient",
    "AwsKmsSealConfig",
    "InitResult",
    "KeyFileSealConfig",
    "KmsClient",
    "SealConfig",
    "SealManager",
    "SealStatus",
    "SealType",
    "ShamirSealConfig",
]
