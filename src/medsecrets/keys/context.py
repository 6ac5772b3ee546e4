"""Canonical encoding of encryption contexts (the associated data of envelopes)."""

from __future__ import annotations

import json
from collections.abc import Mapping

__all__ = ["canonical_context"]


def canonical_context(context: Mapping[str, str], **extra: str) -> bytes:
    """Deterministic UTF-8 JSON of ``context`` plus ``extra`` (sorted keys, no spaces)."""
    merged = {**context, **extra}
    return json.dumps(merged, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
