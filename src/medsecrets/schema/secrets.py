"""Secrets on the wire: versions, metadata, pages, writes and validation reports.

All frozen; none holds secret material except ``SecretVersion.fields`` (masked
``repr``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from medsecrets.sensitive import SecretFields

__all__ = [
    "STAGES",
    "PutResponse",
    "RotationInfo",
    "SecretMetadata",
    "SecretPage",
    "SecretVersion",
    "Stage",
    "ValidationProblem",
    "ValidationReport",
    "VersionInfo",
]

Stage = Literal["current", "pending", "previous"]
STAGES: tuple[Stage, ...] = ("current", "pending", "previous")


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One version of a secret (no value)."""

    number: int
    id: str
    created_at: dt.datetime
    stages: tuple[Stage, ...]
    destroyed: bool
    kek_version: int


@dataclass(frozen=True, slots=True)
class RotationInfo:
    """The rotation policy in force for a secret."""

    interval_days: int
    strategy: str
    overridden: bool


@dataclass(frozen=True, slots=True)
class SecretMetadata:
    """Everything about a secret except its values."""

    path: str
    id: str
    environment: str
    category: str
    description: str
    owner: str
    tags: Mapping[str, str]
    rotation: RotationInfo
    created_at: dt.datetime
    updated_at: dt.datetime
    last_rotated_at: dt.datetime | None
    next_rotation_due: dt.datetime | None
    last_accessed_at: dt.datetime | None
    current_version: int | None
    versions: tuple[VersionInfo, ...]
    deleted_at: dt.datetime | None
    purge_at: dt.datetime | None

    @property
    def scheduled_for_deletion(self) -> bool:
        """Whether the secret is in its recovery window."""
        return self.purge_at is not None


@dataclass(frozen=True, slots=True)
class SecretVersion:
    """One version of a secret with its values (masked in ``repr``)."""

    path: str
    number: int
    id: str
    created_at: dt.datetime
    stages: tuple[Stage, ...]
    fields: SecretFields


@dataclass(frozen=True, slots=True)
class SecretPage:
    """One page of a listing; ``next_after`` continues it (``None``: done)."""

    items: tuple[SecretMetadata, ...]
    next_after: str | None


@dataclass(frozen=True, slots=True)
class PutResponse:
    """``PUT /v1/secrets/{path}``: the version a write created."""

    version: VersionInfo


@dataclass(frozen=True, slots=True)
class ValidationProblem:
    """One field of a stored value that breaks a catalog rule (never the value)."""

    field: str
    rule: str


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """``GET /v1/validate/{path}``: the stored current value against the catalog."""

    path: str
    valid: bool
    problems: tuple[ValidationProblem, ...]
