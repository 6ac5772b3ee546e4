"""Canonical encoding of encryption contexts (the associated data of envelopes)."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping

__all__ = ["canonical_context", "secret_context"]


def canonical_context(context: Mapping[str, str], **extra: str) -> bytes:
    """Deterministic UTF-8 JSON of ``context`` plus ``extra`` (sorted keys, no spaces)."""
    merged = {**context, **extra}
    return json.dumps(merged, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@functools.lru_cache(maxsize=65536)
def secret_context(path: str, version: int, category: str) -> bytes:
    """``canonical_context`` of a secret version's context, memoised (it is on every read)."""
    return canonical_context({"path": path, "version": str(version), "category": category})
