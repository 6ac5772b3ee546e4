"""The key-encryption-key (KEK) contract: one versioned KEK per secret category.

A ``KekProvider`` wraps and unwraps data keys for a category. Wrapping binds an
encryption context (path, version, category): unwrapping with any other
context fails with ``DecryptionError``. Versions only grow; every version ever
created keeps unwrapping until the provider is told otherwise. ``versions``
answers with ``medsecrets.schema.keys.KekVersion`` (an API value type).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from medsecrets.schema.keys import KekVersion
from medsecrets.sensitive import Sensitive

__all__ = ["KekProvider", "WrappedKey"]


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key wrapped by version ``kek_version`` of a category's KEK."""

    provider: str
    kek_version: int
    blob: bytes

    def __repr__(self) -> str:
        return f"WrappedKey(provider={self.provider!r}, kek_version={self.kek_version})"


@runtime_checkable
class KekProvider(Protocol):
    """Wraps data keys under per-category, versioned KEKs."""

    @property
    def name(self) -> str:
        """Provider name as written in the catalog (``local``, ``aws-kms``)."""
        ...

    def current_version(self, category: str) -> int:
        """The newest KEK version of ``category``, creating version 1 on first use."""
        ...

    def versions(self, category: str) -> tuple[KekVersion, ...]:
        """Every KEK version of ``category``, oldest first."""
        ...

    def wrap(self, category: str, dek: Sensitive[bytes], context: Mapping[str, str]) -> WrappedKey:
        """Wrap ``dek`` under the newest KEK version, bound to ``context``."""
        ...

    def unwrap(
        self, category: str, wrapped: WrappedKey, context: Mapping[str, str]
    ) -> Sensitive[bytes]:
        """Unwrap; ``DecryptionError`` if anything (blob, context, version) is off."""
        ...

    def rotate(self, category: str) -> int:
        """Add a KEK version for ``category`` and return its number."""
        ...
