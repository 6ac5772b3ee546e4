"""Seal configurations: how the root key is protected at rest.

``SealConfig`` is one of:

- ``ShamirSealConfig(shares, threshold)``: an unseal key split into SLIP-39
  shares; ``threshold`` of them unseal. ``1 <= threshold <= shares <= 16`` and
  threshold 1 only with a single share (a SLIP-39 rule).
- ``KeyFileSealConfig(path)``: the unseal key lives in a 0600 file (auto-unseal).
- ``AwsKmsSealConfig(key_id, region, endpoint_url)``: the root key is encrypted
  by AWS KMS (auto-unseal).

``config_to_document`` / ``config_from_document`` map a config to the JSON
object stored at ``core/seal-config`` (no secret material: paths and key ids
only); unknown fields are rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from medsecrets.errors import InvalidRequest, StorageError

__all__ = [
    "MAX_SHARES",
    "AwsKmsSealConfig",
    "KeyFileSealConfig",
    "SealConfig",
    "SealType",
    "ShamirSealConfig",
    "config_from_document",
    "config_to_document",
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


def config_to_document(config: SealConfig) -> dict[str, str | int | None]:
    """The JSON object stored at ``core/seal-config`` for ``config``."""
    if isinstance(config, ShamirSealConfig):
        return {"type": "shamir", "shares": config.shares, "threshold": config.threshold}
    if isinstance(config, KeyFileSealConfig):
        return {"type": "keyfile", "shares": 0, "threshold": 0, "path": config.path}
    return {
        "type": "awskms",
        "shares": 0,
        "threshold": 0,
        "key_id": config.key_id,
        "region": config.region,
        "endpoint_url": config.endpoint_url,
    }


_FIELDS: dict[str, frozenset[str]] = {
    "shamir": frozenset({"type", "shares", "threshold"}),
    "keyfile": frozenset({"type", "shares", "threshold", "path"}),
    "awskms": frozenset({"type", "shares", "threshold", "key_id", "region", "endpoint_url"}),
}


def config_from_document(doc: object, *, extra: frozenset[str] = frozenset()) -> SealConfig:
    """Parse a stored seal config; ``StorageError`` naming the problem if malformed.

    ``extra`` names additional fields the caller handles itself (allowed, ignored).
    """
    if not isinstance(doc, dict):
        raise StorageError("seal config: not a JSON object")
    kind = doc.get("type")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise StorageError("seal config: unknown seal type")
    unknown = set(doc) - _FIELDS[kind] - extra
    if unknown:
        raise StorageError(f"seal config: unknown fields {sorted(unknown)}")
    try:
        if kind == "shamir":
            return ShamirSealConfig(shares=doc["shares"], threshold=doc["threshold"])
        if kind == "keyfile":
            return KeyFileSealConfig(path=doc["path"])
        endpoint = doc.get("endpoint_url")
        if endpoint is not None and not isinstance(endpoint, str):
            raise StorageError("seal config: endpoint_url must be a string")
        return AwsKmsSealConfig(key_id=doc["key_id"], region=doc["region"], endpoint_url=endpoint)
    except (KeyError, InvalidRequest) as exc:
        raise StorageError(f"seal config: invalid ({type(exc).__name__})") from None
