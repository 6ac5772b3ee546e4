"""The seal on the wire: configurations, status, and the shares handed out once.

``SealConfig`` is one of:

- ``ShamirSealConfig(shares, threshold)``: an unseal key split into SLIP-39
  shares; ``threshold`` of them unseal. ``1 <= threshold <= shares <= 16`` and
  threshold 1 only with a single share (a SLIP-39 rule).
- ``KeyFileSealConfig(path)``: the unseal key lives in a 0600 file (auto-unseal).
- ``AwsKmsSealConfig(key_id, region, endpoint_url)``: the root key is encrypted
  by AWS KMS (auto-unseal).

Configs check themselves on construction (``InvalidRequest`` naming the
problem). Their stored form (``core/seal-config``) is
``medsecrets.seal.config``'s business; their request form is
``{"type": seal_type(config), **fields}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from medsecrets.errors import InvalidRequest
from medsecrets.sensitive import Sensitive

__all__ = [
    "MAX_SHARES",
    "AwsKmsSealConfig",
    "InitResponse",
    "InitResult",
    "KeyFileSealConfig",
    "SealConfig",
    "SealStatus",
    "SealType",
    "ShamirSealConfig",
    "seal_type",
]

MAX_SHARES = 16

SealType = Literal["shamir", "keyfile", "awskms"]


@dataclass(frozen=True, slots=True)
class ShamirSealConfig:
    """Split the unseal key into ``shares`` SLIP-39 shares; any ``threshold`` unseal."""

    shares: int = 5
    threshold: int = 3

    def __post_init__(self) -> None:
        if type(self.shares) is not int or type(self.threshold) is not int:
            raise InvalidRequest("shares and threshold must be integers")
        if not 1 <= self.threshold <= self.shares <= MAX_SHARES:
            raise InvalidRequest(f"need 1 <= threshold <= shares <= {MAX_SHARES}")
        if self.threshold == 1 and self.shares != 1:
            raise InvalidRequest("threshold 1 is only allowed with a single share")


@dataclass(frozen=True, slots=True)
class KeyFileSealConfig:
    """Keep the unseal key in the file at ``path`` (mode 0600, created at init)."""

    path: str

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise InvalidRequest("the key file path must be a non-empty string")


@dataclass(frozen=True, slots=True)
class AwsKmsSealConfig:
    """Encrypt the root key with the AWS KMS key ``key_id`` (auto-unseal)."""

    key_id: str
    region: str = "us-east-1"
    endpoint_url: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or not self.key_id:
            raise InvalidRequest("the KMS key id must be a non-empty string")
        if not isinstance(self.region, str) or not self.region:
            raise InvalidRequest("the AWS region must be a non-empty string")


SealConfig = ShamirSealConfig | KeyFileSealConfig | AwsKmsSealConfig


def seal_type(config: SealConfig) -> SealType:
    """The stable name of the seal type of ``config``."""
    if isinstance(config, ShamirSealConfig):
        return "shamir"
    if isinstance(config, KeyFileSealConfig):
        return "keyfile"
    return "awskms"


@dataclass(frozen=True, slots=True)
class SealStatus:
    """Public seal state (works while sealed). ``term`` is ``None`` while sealed."""

    initialized: bool
    sealed: bool
    seal_type: SealType | None
    shares: int
    threshold: int
    progress: int
    term: int | None


@dataclass(frozen=True, slots=True)
class InitResult:
    """What init and rekey hand out once: the unseal shares (empty unless shamir).

    ``POST /v1/sys/rekey`` answers with it as it is.
    """

    shares: tuple[Sensitive[str], ...]
    threshold: int
    seal_type: SealType


@dataclass(frozen=True, slots=True)
class InitResponse:
    """``POST /v1/sys/init``: the unseal shares (empty unless shamir) and the root token, once."""

    shares: tuple[Sensitive[str], ...]
    threshold: int
    seal_type: SealType
    root_token: Sensitive[str]
