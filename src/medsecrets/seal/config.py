"""The stored form of a seal configuration (``core/seal-config``).

The configuration types themselves (``SealConfig`` and its three kinds) are
value types of the API: see ``medsecrets.schema.seal``.

``config_to_document`` / ``config_from_document`` map a config to the JSON
object stored at ``core/seal-config`` (no secret material: paths and key ids
only); unknown fields are rejected.
"""

from __future__ import annotations

from medsecrets.errors import InvalidRequest, StorageError
from medsecrets.schema.seal import (
    AwsKmsSealConfig,
    KeyFileSealConfig,
    SealConfig,
    ShamirSealConfig,
)

__all__ = ["config_from_document", "config_to_document"]


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
