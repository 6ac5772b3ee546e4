"""``BarrierKeySource``: the audit devices' keys, kept through the barrier.

- one HMAC key per device (32 random bytes) at ``sys/audit/devices/<name>/hmac``,
  so the same value hashes differently on two devices, as in Vault;
- one Ed25519 checkpoint signing key per server at ``sys/audit/signing-key``.

Keys are created on first use, cached while the barrier is unsealed and
dropped from memory as soon as it is sealed: ``forget`` runs on every seal of the
barrier (``Barrier.on_seal``, also a seal that follows another worker's), not at
the next audit event. While sealed the source answers ``None`` and records are
written without sensitive data (see ``record.render_line``). A key read under way
at a seal keeps nothing: ``forget`` raises a generation count first, and every
fill checks afterwards that it is the one read before its read, else undoes itself.

One exception: a file device's deferred at-rest key (``ciphers``: its secret could not be
read at start, the store being sealed) is read with the device's HMAC key, as its records
are rendered after an unseal, and kept from then on, seals included, as the device keeps
its cipher (and as a key read at start is kept): a record rendered while unsealed is
sealed even when its write comes after a seal (``cipher``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping

from medsecrets.audit.checkpoint import CheckpointSigner
from medsecrets.audit.lane import DeviceKeys
from medsecrets.audit.record import Salter
from medsecrets.barrier.base import Barrier
from medsecrets.barrier.stored_key import get_or_create
from medsecrets.errors import MedsecretsError

__all__ = ["SIGNING_KEY", "BarrierKeySource", "Material"]

SIGNING_KEY = "sys/audit/signing-key"

Material = tuple[bytes, bytes, "bytes | str | None"]
"""``BarrierKeySource.material``: HMAC key, checkpoint signing key, deferred cipher."""


def _hmac_path(device: str) -> str:
    return f"sys/audit/devices/{device}/hmac"


class BarrierKeySource:
    """Callable ``device name -> DeviceKeys | None`` (see module docstring)."""

    def __init__(
        self,
        secure: Barrier,
        *,
        random: Callable[[int], bytes] = os.urandom,
        ciphers: Mapping[str, Callable[[], bytes]] | None = None,
    ) -> None:
        self._secure = secure
        self._random = random
        self._ciphers = dict(ciphers or {})
        self._kept: dict[str, bytes] = {}  # deferred at-rest keys read (never forgotten)
        self._lock = threading.Lock()
        self._cache: dict[str, DeviceKeys] = {}
        self._material: dict[str, Material] = {}
        self._signer: _Signer | None = None
        self._generation = 0  # forgets so far: a fill that saw one come undoes itself
        secure.on_seal(self.forget)

    def __repr__(self) -> str:
        return f"BarrierKeySource(cached={len(self._cache)})"

    def __call__(self, device: str) -> DeviceKeys | None:
        if self._secure.sealed:
            return None
        found = self._cache.get(device)
        if found is not None:
            return found
        with self._lock:  # one filler at a time; forget takes no lock (a seal never waits)
            generation = self._generation  # before the barrier's seal check
            key = get_or_create(self._secure, _hmac_path(device), lambda: self._random(32))
            signer = self._checkpoint_signer(generation)
            keys = DeviceKeys(salter=Salter(key), sign=signer.sign_fields)
            self._cipher(device)  # a deferred at-rest key, kept before any record needs it
            self._cache[device] = keys
            if self._generation != generation:  # sealed since the key was read: keep nothing
                self._cache.pop(device, None)
            return keys

    def material(self, device: str) -> Material | None:
        """``(HMAC key, checkpoint signing key, cipher)`` of ``device`` as raw bytes, for an
        audit process (``None`` while sealed). The same tuple object while unsealed, so a
        caller can tell a change by identity. ``cipher`` is ``None`` unless the device's
        at-rest key is deferred (``ciphers``: a file device whose key, a secret, could not
        be read at start because the store was sealed): then that key as its resolver gave
        it, or the text saying why it cannot be had (the message of a ``MedsecretsError``,
        else the exception's type: whatever the resolver raises, the HMAC and signing
        keys still come, and the device fails its writes rather than write in clear). A
        tuple holding such a text is not kept: the next call reads the key again (storage
        trouble heals; a seal, which would have to be audited, is no way out)."""
        if self._secure.sealed:
            return None
        found = self._material.get(device)
        if found is not None:
            return found
        with self._lock:
            generation = self._generation  # before the barrier's seal check
            key = get_or_create(self._secure, _hmac_path(device), lambda: self._random(32))
            found = (
                key,
                self._checkpoint_signer(generation).signer.private_bytes(),
                self._cipher(device),
            )
            if not isinstance(found[2], str):  # a key that could not be had is read again
                self._material[device] = found
            if self._generation != generation:  # sealed since the key was read: keep nothing
                self._material.pop(device, None)
            return found

    def defers(self, device: str) -> bool:
        """Whether ``device``'s at-rest key is deferred (see ``material``)."""
        return device in self._ciphers

    def cipher(self, device: str) -> bytes | str | None:
        """``device``'s deferred at-rest key for its writes: the key once read (also while
        sealed since), else ``None`` while sealed, else read now (or why it cannot be had,
        as in ``material``)."""
        kept = self._kept.get(device)
        if kept is not None or self._secure.sealed:
            return kept
        with self._lock:
            found = self._cipher(device)
        return None if isinstance(found, str) and self._secure.sealed else found

    def _cipher(self, device: str) -> bytes | str | None:
        """The deferred at-rest key of ``device`` (kept once read), why it cannot be had,
        or ``None`` (not deferred). Called with ``_lock`` held."""
        resolve = self._ciphers.get(device)
        if resolve is None:
            return None
        kept = self._kept.get(device)
        if kept is not None:
            return kept
        try:
            key = resolve()
        except MedsecretsError as exc:  # a setting's problem, said without any value
            return exc.message
        except Exception as exc:  # anything else: its type only (its text may hold anything)
            return f"reading it failed ({type(exc).__name__})"
        self._kept[device] = key
        return key

    def forget(self) -> None:
        """Drop every key from memory but deferred at-rest keys (see module docstring;
        runs on every seal of the barrier). Takes no lock: a fill under way sees the
        raised count and undoes itself."""
        self._generation += 1  # first
        self._cache.clear()
        self._material.clear()
        self._signer = None

    def _checkpoint_signer(self, generation: int) -> _Signer:
        """The signer, read (and kept unless ``forget`` ran since ``generation``) if not
        held. Called with ``_lock`` held."""
        signer = self._signer
        if signer is None:
            raw = get_or_create(
                self._secure, SIGNING_KEY, lambda: CheckpointSigner.generate().private_bytes()
            )
            signer = self._signer = _Signer(CheckpointSigner.from_private_bytes(raw))
            if self._generation != generation:  # sealed since the key was read: keep none
                self._signer = None
        return signer

    def public_key_pem(self) -> bytes | None:
        """The checkpoint verification key (PEM), or ``None`` while sealed."""
        if self._secure.sealed:
            return None
        with self._lock:
            return self._checkpoint_signer(self._generation).signer.public_key_pem()


class _Signer:
    __slots__ = ("signer",)

    def __init__(self, signer: CheckpointSigner) -> None:
        self.signer = signer

    def sign_fields(
        self, node: str, device: str, covers: int, covers_hash: str
    ) -> dict[str, object]:
        return self.signer.extra(node=node, device=device, covers=covers, covers_hash=covers_hash)
