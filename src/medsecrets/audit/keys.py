"""``BarrierKeySource``: the audit devices' keys, kept through the barrier.

- one HMAC key per device (32 random bytes) at ``sys/audit/devices/<name>/hmac``,
  so the same value hashes differently on two devices, as in Vault;
- one Ed25519 checkpoint signing key per server at ``sys/audit/signing-key``.

Keys are created on first use, cached while the barrier is unsealed and
dropped from memory as soon as it is sealed (then the source answers ``None``
and records are written without sensitive data, see ``record.render_line``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from medsecrets.audit.checkpoint import CheckpointSigner
from medsecrets.audit.lane import DeviceKeys
from medsecrets.audit.record import Salter
from medsecrets.barrier.base import Barrier
from medsecrets.barrier.stored_key import get_or_create

__all__ = ["SIGNING_KEY", "BarrierKeySource"]

SIGNING_KEY = "sys/audit/signing-key"


def _hmac_path(device: str) -> str:
    return f"sys/audit/devices/{device}/hmac"


class BarrierKeySource:
    """Callable ``device name -> DeviceKeys | None`` (see module docstring)."""

    def __init__(self, secure: Barrier, *, random: Callable[[int], bytes] = os.urandom) -> None:
        self._secure = secure
        self._random = random
        self._lock = threading.Lock()
        self._cache: dict[str, DeviceKeys] = {}
        self._material: dict[str, tuple[bytes, bytes]] = {}
        self._signer: _Signer | None = None

    def __repr__(self) -> str:
        return f"BarrierKeySource(cached={len(self._cache)})"

    def __call__(self, device: str) -> DeviceKeys | None:
        if self._secure.sealed:
            self._forget()
            return None
        found = self._cache.get(device)
        if found is not None:
            return found
        with self._lock:
            key = get_or_create(self._secure, _hmac_path(device), lambda: self._random(32))
            signer = self._checkpoint_signer()
            keys = DeviceKeys(salter=Salter(key), sign=signer.sign_fields)
            self._cache[device] = keys
            return keys

    def material(self, device: str) -> tuple[bytes, bytes] | None:
        """``(HMAC key, checkpoint signing key)`` of ``device`` as raw bytes, for an audit
        process (``None`` while sealed). The same tuple object while unsealed, so a
        caller can tell a change by identity."""
        if self._secure.sealed:
            self._forget()
            return None
        found = self._material.get(device)
        if found is not None:
            return found
        with self._lock:
            key = get_or_create(self._secure, _hmac_path(device), lambda: self._random(32))
            found = (key, self._checkpoint_signer().signer.private_bytes())
            self._material[device] = found
            return found

    def _forget(self) -> None:
        if self._cache or self._material or self._signer is not None:
            with self._lock:
                self._cache.clear()
                self._material.clear()
                self._signer = None

    def _checkpoint_signer(self) -> _Signer:
        if self._signer is None:
            raw = get_or_create(
                self._secure, SIGNING_KEY, lambda: CheckpointSigner.generate().private_bytes()
            )
            self._signer = _Signer(CheckpointSigner.from_private_bytes(raw))
        return self._signer

    def public_key_pem(self) -> bytes | None:
        """The checkpoint verification key (PEM), or ``None`` while sealed."""
        if self._secure.sealed:
            return None
        with self._lock:
            return self._checkpoint_signer().signer.public_key_pem()


class _Signer:
    __slots__ = ("signer",)

    def __init__(self, signer: CheckpointSigner) -> None:
        self.signer = signer

    def sign_fields(
        self, node: str, device: str, covers: int, covers_hash: str
    ) -> dict[str, object]:
        return self.signer.extra(node=node, device=device, covers=covers, covers_hash=covers_hash)
