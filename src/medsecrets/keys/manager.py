"""``KeyManager``: which KEK provider serves each category, as the catalog declares, and
the provider of each name (the one that wrapped a stored data key unwraps it).

The ``local`` provider is always available; ``aws-kms`` is built on first use
from an injected KMS client factory (default ``kek_kms_client``: boto3's default
chain with bounded waits; boto3 is an optional extra), with each
category's alias taken from the catalog (``kek.key_id``) or the default
``alias/medessence-<category>``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from medsecrets.barrier.base import SecureStorage
from medsecrets.catalog.model import Catalog
from medsecrets.clock import Clock, SystemClock
from medsecrets.errors import ProviderError
from medsecrets.keys.awskms import AwsKmsKekProvider, default_alias, kek_kms_client
from medsecrets.keys.base import KekProvider
from medsecrets.keys.local import LocalKekProvider
from medsecrets.schema.keys import KekVersion

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

__all__ = ["KeyManager"]


class KeyManager:
    """Routes each category to its KEK provider."""

    def __init__(
        self,
        secure: SecureStorage,
        catalog: Catalog,
        *,
        clock: Clock | None = None,
        kms_client_factory: Callable[[], KMSClient] | None = None,
    ) -> None:
        self._secure = secure
        self._catalog = catalog
        self._clock = clock or SystemClock()
        self._kms_client_factory = kms_client_factory or kek_kms_client
        self._local = LocalKekProvider(secure, clock=self._clock)
        self._aws: AwsKmsKekProvider | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KeyManager(local={self._local!r}, aws={self._aws!r})"

    def _alias(self, category: str) -> str:
        return self._catalog.kek_key_id(category) or default_alias(category)

    def provider(self, category: str) -> KekProvider:
        """The provider the catalog names for ``category`` (it wraps new data keys)."""
        kind = self._catalog.category(category).kek.provider
        try:
            return self.named(kind)
        except ProviderError as exc:
            raise ProviderError(f"category {category!r}: {exc}") from None

    def named(self, kind: str) -> KekProvider:
        """The provider called ``kind`` (``local``, ``aws-kms``): the one that wrapped a
        stored data key unwraps it, whatever the catalog says now."""
        if kind == "local":
            return self._local
        if kind == "aws-kms":
            with self._lock:
                if self._aws is None:
                    self._aws = AwsKmsKekProvider(
                        self._secure,
                        self._kms_client_factory(),
                        alias_for=self._alias,
                        clock=self._clock,
                    )
                return self._aws
        raise ProviderError(f"unknown KEK provider {kind!r}")

    def rotate(self, category: str) -> int:
        """Add a KEK version for ``category``; older versions keep decrypting."""
        return self.provider(category).rotate(category)

    def versions(self, category: str) -> tuple[KekVersion, ...]:
        """Every KEK version of ``category``."""
        return self.provider(category).versions(category)

    def forget(self) -> None:
        """Drop cached key material (on seal)."""
        self._local.forget()
        if self._aws is not None:
            self._aws.forget()
