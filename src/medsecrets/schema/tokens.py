"""Tokens on the wire: token facts, a created token (shown once) and a revocation.

``TokenInfo`` never holds the token itself; ``CreatedToken.token`` is masked
in ``repr``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from medsecrets.sensitive import Sensitive

__all__ = ["CreatedToken", "Revoked", "TokenInfo", "covers", "covers_listing"]


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """Public facts about a token (never the token itself).

    ``paths`` are path prefixes (``*`` matches every path); ``parent`` is the
    accessor of the token that created this one; ``expires_at`` is ``None`` only
    for root tokens. ``emergency`` marks a break-glass token (and its children):
    every use is recorded with the emergency flag and raises a critical alert.
    """

    accessor: str
    display_name: str
    paths: tuple[str, ...]
    capabilities: tuple[str, ...]
    created_at: dt.datetime
    expires_at: dt.datetime | None
    parent: str | None
    root: bool
    emergency: bool = False

    def allows(self, capability: str, path: str | None) -> bool:
        """Whether this token holds ``capability`` on ``path`` (``None``: no path involved)."""
        if capability not in self.capabilities:
            return False
        return path is None or any(covers(prefix, path) for prefix in self.paths)

    def expired(self, now: dt.datetime) -> bool:
        """Whether the token has expired at ``now``."""
        return self.expires_at is not None and now >= self.expires_at


def covers(prefix: str, path: str) -> bool:
    """Whether the token path ``prefix`` (or ``*``) covers ``path``, segment by segment:
    ``path`` is ``prefix`` itself or lies under it. ``medessence/production`` covers
    ``medessence/production`` and ``medessence/production/database``, not
    ``medessence/production-eu/database``; ``medessence/production/`` covers what lies under
    it."""
    if prefix == "*":
        return True
    if not path.startswith(prefix):
        return False
    return prefix.endswith("/") or len(path) == len(prefix) or path[len(prefix)] == "/"


def covers_listing(prefix: str, listed: str) -> bool:
    """Whether the token path ``prefix`` (or ``*``) covers every path that starts with the
    string ``listed`` (a listing's prefix): ``listed`` starts with ``prefix`` and a ``/``.
    A listing of ``medessence/production`` could name ``medessence/production-eu/...``,
    so a token on ``medessence/production`` lists ``medessence/production/``."""
    if prefix == "*":
        return True
    return listed.startswith(prefix if prefix.endswith("/") else prefix + "/")


@dataclass(frozen=True, slots=True)
class CreatedToken:
    """``POST /v1/auth/token/create``: the new token (shown once) and its facts."""

    token: Sensitive[str]
    info: TokenInfo


@dataclass(frozen=True, slots=True)
class Revoked:
    """``POST /v1/auth/token/revoke``."""

    revoked: bool
