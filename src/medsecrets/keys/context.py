"""Canonical encoding of encryption contexts (the associated data of envelopes).

The encoding is fixed forever (stored ciphertexts are bound to it): UTF-8 JSON
with keys sorted by code point, no spaces, non-ASCII characters as themselves,
exactly what ``json.dumps(merged, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` produces. It is computed by orjson, which gives the same
bytes for string keys and values (pinned by ``tests/keys/test_context.py``) in
a fraction of the time: a context is encoded twice per secret written.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import orjson

__all__ = ["canonical_context", "secret_context"]


def canonical_context(context: Mapping[str, str], **extra: str) -> bytes:
    """Deterministic UTF-8 JSON of ``context`` plus ``extra`` (sorted keys, no spaces)."""
    return orjson.dumps({**context, **extra}, option=orjson.OPT_SORT_KEYS)


@functools.lru_cache(maxsize=65536)
def secret_context(path: str, version: int, category: str) -> bytes:
    """``canonical_context`` of a secret version's context, memoised (it is on every read)."""
    return canonical_context({"path": path, "version": str(version), "category": category})
