"""System facts on the wire: health and the barrier keyring (never key material)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

__all__ = ["Health", "KeyringInfo"]


@dataclass(frozen=True, slots=True)
class Health:
    """``GET /v1/sys/health``: liveness, initialisation and seal state."""

    initialized: bool
    sealed: bool
    version: str
    server_time: dt.datetime


@dataclass(frozen=True, slots=True)
class KeyringInfo:
    """Public facts about the keyring: never key material."""

    term: int
    terms: int
    installed_at: dt.datetime
    encryptions: int
    rotation_threshold: int
