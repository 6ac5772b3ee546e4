"""Wrapper types that keep secret material out of reprs, logs and tracebacks.

``Sensitive`` holds one value (``str`` or ``bytes``); ``SecretFields`` holds the
string fields of one secret version. Both mask themselves in ``repr``/``str``
and are unwrapped only at the crypto or transport edge (``reveal()``).
Equality compares in constant time; hashing is refused so values never land in
sets or dict keys by accident.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

__all__ = ["MASK", "SecretFields", "Sensitive"]

MASK = "**********"

T = TypeVar("T", str, bytes)


class Sensitive(Generic[T]):
    """One secret value with a masked ``repr``.

    >>> Sensitive("hunter2")
    Sensitive('**********')
    """

    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value: T = value

    def reveal(self) -> T:
        """Return the plaintext. Call only where the value must leave the process."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"Sensitive({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sensitive):
            return NotImplemented
        a, b = self._value, other._value
        if isinstance(a, str) and isinstance(b, str):
            return hmac.compare_digest(a.encode(), b.encode())
        if isinstance(a, bytes) and isinstance(b, bytes):
            return hmac.compare_digest(a, b)
        return False

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Sensitive values cannot be pickled")


class SecretFields(Mapping[str, str]):
    """The string fields of one secret version; a read-only mapping with masked repr.

    Iteration and ``[]`` give plaintext (this *is* the crypto/transport edge for
    callers who asked for the secret); ``repr``/``str`` show only field names.
    """

    __slots__ = ("_fields",)

    def __init__(self, fields: Mapping[str, str]) -> None:
        self._fields: dict[str, str] = dict(fields)

    def __getitem__(self, key: str) -> str:
        return self._fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def to_dict(self) -> dict[str, str]:
        """A plain copy of the fields (plaintext)."""
        return dict(self._fields)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k!r}: {MASK!r}" for k in self._fields)
        return f"SecretFields({{{inner}}})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SecretFields):
            return self._fields == other._fields
        if isinstance(other, Mapping):
            return self._fields == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("SecretFields cannot be pickled")
