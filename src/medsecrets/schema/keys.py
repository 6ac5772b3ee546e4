"""Key-encryption keys on the wire: KEK versions, KEK rotation and rewrap reports.

Never key material: versions, ids, times and counts only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

__all__ = ["KekVersion", "KeyRotation", "KeyVersions", "RewrapReport"]


@dataclass(frozen=True, slots=True)
class KekVersion:
    """Public facts about one KEK version (never key material)."""

    category: str
    version: int
    created_at: dt.datetime
    key_id: str | None = None


@dataclass(frozen=True, slots=True)
class KeyVersions:
    """``GET /v1/sys/keys/{category}``: every KEK version of a category, oldest first."""

    category: str
    versions: tuple[KekVersion, ...]


@dataclass(frozen=True, slots=True)
class KeyRotation:
    """``POST /v1/sys/keys/{category}/rotate``: the new KEK version."""

    category: str
    version: int


@dataclass(frozen=True, slots=True)
class RewrapReport:
    """What a rewrap pass (or one page of it) did; ``next_after`` continues it."""

    secrets: int
    rewrapped: int
    already_current: int
    total: int = 0
    next_after: str | None = None
