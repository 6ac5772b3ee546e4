"""Argument checks shared by the storage backends.

Every check raises ``InvalidRequest`` (``TooLargeError`` for sizes) naming the
rule, never the value, before a backend touches its driver; so an invalid
operation anywhere in a batch means nothing of the batch is applied.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from medsecrets.errors import InvalidRequest, TooLargeError
from medsecrets.storage.base import (
    MAX_KEY_LENGTH,
    MAX_VALUE_SIZE,
    Delete,
    Expect,
    Operation,
    Put,
    check_key,
)

__all__ = [
    "MAX_HOLDER_LENGTH",
    "check_holder",
    "check_limit",
    "check_ops",
    "check_prefix",
    "check_storage_key",
    "check_ttl",
    "check_value",
    "prefix_upper_bound",
]

MAX_HOLDER_LENGTH = 1024
_MAX_CODE_POINT = 0x10FFFF
_SURROGATE_FIRST = 0xD800
_SURROGATE_LAST = 0xDFFF


def _check_encodable(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{what} is not valid UTF-8 (lone surrogate)") from None


def check_storage_key(key: str) -> str:
    """``check_key`` plus: the key must encode to UTF-8 (no lone surrogates)."""
    check_key(key)
    _check_encodable(key, "storage key")
    return key


def check_prefix(prefix: str, what: str = "list prefix") -> str:
    """A list prefix or ``after`` marker: like a key, but may be empty."""
    if not isinstance(prefix, str):
        raise InvalidRequest(f"{what} must be a string")
    if len(prefix) > MAX_KEY_LENGTH:
        raise InvalidRequest(f"{what} longer than {MAX_KEY_LENGTH} characters")
    if "\x00" in prefix:
        raise InvalidRequest(f"{what} contains NUL")
    _check_encodable(prefix, what)
    return prefix


def check_value(value: bytes) -> bytes:
    """A stored value: ``bytes`` of at most ``MAX_VALUE_SIZE``."""
    if not isinstance(value, bytes):
        raise InvalidRequest("storage value must be bytes")
    if len(value) > MAX_VALUE_SIZE:
        raise TooLargeError(f"storage value larger than {MAX_VALUE_SIZE} bytes")
    return value


def check_limit(limit: int) -> int:
    """A page size: a positive ``int``."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidRequest("list limit must be a positive integer")
    return limit


def check_ttl(ttl: float) -> float:
    """A lease duration: finite and positive seconds."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise InvalidRequest("lease ttl must be a number of seconds")
    if not math.isfinite(ttl) or ttl <= 0:
        raise InvalidRequest("lease ttl must be finite and positive")
    return float(ttl)


def check_holder(holder: str) -> str:
    """A lease holder name: non-empty text without NUL, at most ``MAX_HOLDER_LENGTH``."""
    if not isinstance(holder, str) or not holder:
        raise InvalidRequest("lease holder must be a non-empty string")
    if len(holder) > MAX_HOLDER_LENGTH or "\x00" in holder:
        raise InvalidRequest(f"lease holder must be at most {MAX_HOLDER_LENGTH} chars, no NUL")
    _check_encodable(holder, "lease holder")
    return holder


def check_ops(ops: Sequence[Operation]) -> None:
    """Validate every operation of a batch before any of it runs."""
    if isinstance(ops, str | bytes) or not isinstance(ops, Sequence):
        raise InvalidRequest("batch operations must be a sequence")
    for op in ops:
        if isinstance(op, Put):
            check_storage_key(op.key)
            check_value(op.value)
        elif isinstance(op, Delete):
            check_storage_key(op.key)
        elif isinstance(op, Expect):
            check_storage_key(op.key)
            if op.value is not None:
                check_value(op.value)
            if not isinstance(op.shared, bool):
                raise InvalidRequest("Expect.shared must be a bool")
        else:
            raise InvalidRequest("batch operations must be Put, Delete or Expect")


def prefix_upper_bound(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix``.

    ``None`` when there is none (the prefix is empty or all U+10FFFF). Keys
    ``k`` with ``prefix <= k < bound`` are exactly those starting with
    ``prefix``, in code point (= UTF-8 byte) order; surrogates are skipped
    because they cannot occur in UTF-8 keys.
    """
    stripped = prefix.rstrip(chr(_MAX_CODE_POINT))
    if not stripped:
        return None
    nxt = ord(stripped[-1]) + 1
    if _SURROGATE_FIRST <= nxt <= _SURROGATE_LAST:
        nxt = _SURROGATE_LAST + 1
    return stripped[:-1] + chr(nxt)
