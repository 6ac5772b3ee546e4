"""The seal: how the root key is protected at rest (Shamir shares, key file, AWS KMS).

The configurations and results are API value types (``medsecrets.schema.seal``),
re-exported here as part of the seal's interface.

The names below load lazily (PEP 562): importing the package imports none of its
modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medsecrets.lazy import resolve

if TYPE_CHECKING:
    from medsecrets.schema.seal import (
        AwsKmsSealConfig,
        InitResult,
        KeyFileSealConfig,
        SealConfig,
        SealStatus,
        SealType,
        ShamirSealConfig,
    )
    from medsecrets.seal.kms import AwsCredentials, AwsKmsClient, KmsClient
    from medsecrets.seal.manager import SealManager

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

_EXPORTS = {
    "AwsCredentials": "medsecrets.seal.kms",
    "AwsKmsClient": "medsecrets.seal.kms",
    "AwsKmsSealConfig": "medsecrets.schema.seal",
    "InitResult": "medsecrets.schema.seal",
    "KeyFileSealConfig": "medsecrets.schema.seal",
    "KmsClient": "medsecrets.seal.kms",
    "SealConfig": "medsecrets.schema.seal",
    "SealManager": "medsecrets.seal.manager",
    "SealStatus": "medsecrets.schema.seal",
    "SealType": "medsecrets.schema.seal",
    "ShamirSealConfig": "medsecrets.schema.seal",
}


def __getattr__(name: str) -> object:
    return resolve(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
