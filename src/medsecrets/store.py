"""``SecretStore``: the library facade that assembles the layers.

::

    SecretStore
      ├── seal_manager   init / unseal (shares, key file, AWS KMS) / seal / rekey
      ├── barrier        AES-256-GCM over the untrusted storage backend
      ├── keys           per-category KEK providers (local, aws-kms)
      ├── envelope       a data key per secret version, wrapped by the category KEK
      └── secrets        the versioned secrets engine

It starts sealed. Everything that reads or writes secrets raises
``SealedError`` until it is unsealed. It owns the storage backend it is given
and closes it in ``close``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Final

from medsecrets.barrier.aes_gcm import AesGcmBarrier
from medsecrets.catalog.loader import default_catalog
from medsecrets.catalog.model import Catalog
from medsecrets.clock import Clock, SystemClock
from medsecrets.engines.secrets.engine import SecretsEngine
from medsecrets.errors import InvalidRequest, PermissionDenied
from medsecrets.keys.envelope import Envelope
from medsecrets.keys.manager import KeyManager
from medsecrets.provision import provision
from medsecrets.schema.keys import KekVersion, RewrapReport
from medsecrets.schema.provision import ProvisionReport
from medsecrets.schema.seal import (
    AwsKmsSealConfig,
    InitResult,
    SealConfig,
    SealStatus,
    ShamirSealConfig,
)
from medsecrets.schema.system import KeyringInfo
from medsecrets.seal.kms import KmsClient
from medsecrets.seal.latch import LocalLatch, SealLatch
from medsecrets.seal.manager import SealManager
from medsecrets.sensitive import Sensitive
from medsecrets.storage.base import StorageBackend

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

__all__ = ["SecretStore"]

log = logging.getLogger(__name__)

_LATCHED: Final = "sealed by an operator: an auto-unseal seal unseals when the server restarts"

_AUTO_UNSEAL: Final = frozenset({"keyfile", "awskms"})
"""Seal types a process unseals by itself (no operator holds a share)."""


class SecretStore:
    """An encrypted, versioned secret store over one storage backend."""

    def __init__(
        self,
        storage: StorageBackend,
        *,
        catalog: Catalog | None = None,
        clock: Clock | None = None,
        rotation_threshold: int = 2**30,
        max_versions: int = 100,
        kms_client_factory: Callable[[], KMSClient] | None = None,
        seal_kms_factory: Callable[[AwsKmsSealConfig], KmsClient] | None = None,
        random: Callable[[int], bytes] = os.urandom,
        cache_values: bool = True,
        latch: SealLatch | None = None,
    ) -> None:
        """Assemble the layers; ``kms_client_factory`` serves ``aws-kms`` KEKs,
        ``seal_kms_factory`` the AWS KMS seal (both default to boto3);
        ``cache_values=False`` decrypts every read (``SecretsEngine``); ``latch``
        is shared with the server's other processes (default: this process's own)."""
        self.clock: Clock = clock or SystemClock()
        self.catalog = catalog or default_catalog()
        self.storage = storage
        self.barrier = AesGcmBarrier(
            storage, clock=self.clock, rotation_threshold=rotation_threshold, random=random
        )
        self.seal_manager = SealManager(
            storage, self.barrier, clock=self.clock, kms_factory=seal_kms_factory, random=random
        )
        self.latch: SealLatch = latch if latch is not None else LocalLatch()
        self._retry_unseal_at = 0.0
        self._catch_up_lock = threading.Lock()
        self._catching_up: threading.Thread | None = None  # the auto-unseal follow_latch started
        self.keys = KeyManager(
            self.barrier,
            self.catalog,
            clock=self.clock,
            kms_client_factory=kms_client_factory,  # None: keys.awskms.kek_kms_client
        )
        self.envelope = Envelope(self.keys.provider, provider_named=self.keys.named, random=random)
        self.barrier.on_seal(self.envelope.forget)  # data keys go with any seal, whoever seals
        self.secrets = SecretsEngine(
            self.barrier,
            catalog=self.catalog,
            envelope=self.envelope,
            clock=self.clock,
            max_versions=max_versions,
            cache_values=cache_values,
        )

    def __repr__(self) -> str:
        return f"SecretStore(storage={type(self.storage).__name__}, sealed={self.barrier.sealed})"

    def __enter__(self) -> SecretStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- seal ------------------------------------------------------------------
    def status(self) -> SealStatus:
        """Seal status (works while sealed)."""
        return self.seal_manager.status()

    def initialize(self, config: SealConfig) -> InitResult:
        """Create the root key and keyring; returns the shares once. Leaves the store unsealed.

        A store shared by several processes (``latch.shared``) refuses a Shamir
        seal (``InvalidRequest``): each process would need the shares.
        """
        if self.latch.shared and isinstance(config, ShamirSealConfig):
            raise InvalidRequest(
                "seal: a server with several worker processes needs an auto-unseal seal "
                "(keyfile or awskms); each worker would need the unseal shares"
            )
        return self.seal_manager.initialize(config)

    def unseal(self, share: str | Sensitive[str]) -> SealStatus:
        """Submit one Shamir share; unseals when the threshold is reached."""
        status = self.seal_manager.submit_share(share)
        if not status.sealed:
            self.latch.clear()
        return status

    def auto_unseal(self) -> SealStatus:
        """Unseal with the key file or AWS KMS seal.

        After an operator sealed the store (``seal(by_operator=True)``, the
        latch) that is refused with ``PermissionDenied`` until the server
        restarts, as Vault's auto-unseal does: no token can be checked while
        sealed, and an emergency seal must hold against anyone who can reach
        the port. Unsealing with Shamir shares lifts the latch.
        """
        if self.latch.is_set() and self.barrier.sealed:
            raise PermissionDenied(_LATCHED)
        try:
            # the latch is checked again before the keys are installed: an operator's seal
            # served by another process while KMS answered wins
            return self.seal_manager.auto_unseal(allowed=lambda: not self.latch.is_set())
        except PermissionDenied:
            raise PermissionDenied(_LATCHED) from None

    def follow_latch(self) -> bool:
        """Bring this process's seal to the server's; whether an operator sealed it.

        Latched (an operator sealed another process of the server): seal here
        too. Not latched, with a shared latch, sealed here while the store is
        initialised with an auto-unseal seal (another process initialised it
        after this one started): unseal. With a key file (local, quick) that is
        done here and now, so the request that found it goes on unsealed (the
        first request after an init by another worker is served). With KMS
        (remote, possibly slow) it runs in a thread of its own
        (``seal-catch-up``, one at a time) and this returns at once: this
        process stays sealed (requests get ``SealedError``) until it has
        unsealed. After a failure, which leaves it sealed, not again for a
        second. Never waits on KMS, so it may run on an event loop: call it on
        every request.
        """
        if self.latch.is_set():
            if not self.barrier.sealed:
                self.seal()
            return True
        if self.latch.shared and self.barrier.sealed:
            self._catch_up()
        return False

    def _catch_up(self) -> None:
        if self._catching_up is not None or self.clock.monotonic() < self._retry_unseal_at:
            return
        status = self.seal_manager.status()
        if not status.initialized or status.seal_type not in _AUTO_UNSEAL:
            return
        if status.seal_type == "keyfile":  # a local file read: at once, in this request
            self._run_catch_up()
            return
        with self._catch_up_lock:
            if self._catching_up is not None:
                return
            thread = threading.Thread(target=self._run_catch_up, name="seal-catch-up", daemon=True)
            self._catching_up = thread
        thread.start()

    def _run_catch_up(self) -> None:
        try:
            self.auto_unseal()
        except Exception as exc:  # say, KMS unreachable: not more than once a second
            self._retry_unseal_at = self.clock.monotonic() + 1.0
            if not isinstance(exc, PermissionDenied):
                log.warning("catching up with the seal failed (%s)", type(exc).__name__)
        finally:
            with self._catch_up_lock:
                self._catching_up = None

    def wait_catch_up(self, timeout: float | None = None) -> bool:
        """Wait for the auto-unseal ``follow_latch`` started, if any; whether none runs now."""
        thread = self._catching_up
        if thread is not None:
            thread.join(timeout)
        return self._catching_up is None

    def seal(self, *, by_operator: bool = False) -> SealStatus:
        """Drop every reference to key material (barrier, KEK and data-key caches); every
        secret operation then raises ``SealedError``. Python cannot overwrite freed memory:
        key bytes may remain in the process until reused (restart it for a clean image).

        ``by_operator``: an operator asked for it; the latch is set first, so the
        server's other processes refuse from their next request (see ``auto_unseal``)."""
        if by_operator:
            self.latch.set()
        status = self.seal_manager.seal()
        self.keys.forget()
        self.envelope.forget()
        self.secrets.forget()
        return status

    def rotate(self) -> KeyringInfo:
        """Add a keyring term (old data stays readable). ``term`` is the term THIS call
        added, even when another rotation (another thread or node) came right after it;
        the other facts are the keyring's as read just after."""
        term = self.barrier.rotate()
        info = self.barrier.keyring_info()
        return info if info.term == term else dataclasses.replace(info, term=term)

    def rekey(
        self, current_shares: Sequence[str | Sensitive[str]], *, shares: int, threshold: int
    ) -> InitResult:
        """Issue new Shamir shares given a threshold of the current ones, pending until
        ``rekey_verify`` (the current shares keep working until then)."""
        return self.seal_manager.rekey(current_shares, shares=shares, threshold=threshold)

    def rekey_verify(self, new_shares: Sequence[str | Sensitive[str]]) -> SealStatus:
        """Make a pending rekey take effect, given a threshold of its new shares."""
        return self.seal_manager.rekey_verify(new_shares)

    def rekey_cancel(self) -> bool:
        """Drop a pending rekey; whether one was pending."""
        return self.seal_manager.rekey_cancel()

    # -- keys ------------------------------------------------------------------
    def rotate_key(self, category: str) -> int:
        """Add a KEK version for ``category``; returns its number."""
        self.catalog.category(category)
        return self.keys.rotate(category)

    def key_versions(self, category: str) -> tuple[KekVersion, ...]:
        """Every KEK version of ``category``."""
        self.catalog.category(category)
        return self.keys.versions(category)

    def rewrap(
        self,
        *,
        after: str = "",
        limit: int | None = None,
        on_progress: Callable[[int, int, str], None] | None = None,
    ) -> RewrapReport:
        """Move every wrapped data key to its category's newest KEK (resumable, pageable)."""
        return self.secrets.rewrap(after=after, limit=limit, on_progress=on_progress)

    # -- provisioning ------------------------------------------------------------
    def provision(
        self,
        environment: str,
        *,
        provided: Mapping[str, Mapping[str, str]] | None = None,
        categories: tuple[str, ...] | None = None,
        on_progress: Callable[[int, int, str], None] | None = None,
    ) -> ProvisionReport:
        """Create every catalog secret of ``environment`` (see ``medsecrets.provision``)."""
        return provision(
            self.secrets,
            self.catalog,
            environment,
            provided=provided,
            categories=categories,
            on_progress=on_progress,
        )

    def close(self) -> None:
        """Seal and close the storage backend. Idempotent."""
        self.seal()
        self.storage.close()
