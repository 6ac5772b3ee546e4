"""The forms a secret value could leak in, for the tests that plant canaries and look for them."""

from __future__ import annotations

import base64
import json

__all__ = ["leak_forms"]


def leak_forms(value: str) -> list[bytes]:
    """Every form a value could leak in: raw, base64 (standard, and URL-safe unpadded),
    hex, JSON-escaped (as inside a JSON string, and with non-ASCII escaped)."""
    raw = value.encode()
    return [
        raw,
        base64.b64encode(raw),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
        raw.hex().encode(),
        json.dumps(value).encode()[1:-1],
        json.dumps(value, ensure_ascii=True).encode("unicode_escape"),
    ]
