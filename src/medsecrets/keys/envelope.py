"""Envelope encryption: a fresh data key per secret version, wrapped by the category KEK.

``Envelope.seal`` encrypts a value with a new random 256-bit data key
(AES-256-GCM) and wraps the data key with the category's newest KEK; both the
value and the wrapped key are bound to the encryption context
``{"path", "version", "category"}``. ``open`` reverses it; any tampering,
transplant or wrong context raises the opaque ``DecryptionError``.
``rewrap`` re-wraps the data key under the newest KEK without touching the
value ciphertext. ``opener`` unwraps once and returns an ``Opener`` that
decrypts the same value on every call (for a reader that keeps no plaintext).

Unwrapped data keys are cached by their wrapped blob (content-addressed, so a
cache entry can never serve a different key); ``forget`` drops the cache, and an
unwrap under way at a ``forget`` caches nothing (a generation count, raised first
by ``forget`` and checked by every fill against the one read before its unwrap).
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medsecrets.errors import DecryptionError
from medsecrets.keys.base import KekProvider, WrappedKey
from medsecrets.keys.context import canonical_context, secret_context
from medsecrets.sensitive import Sensitive

__all__ = ["Envelope", "Opener", "SealedValue", "encryption_context"]

_NONCE = 12


def _b64(data: bytes) -> str:
    """Standard base64 with padding, as ``base64.b64encode(data).decode()`` (fewer calls)."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def encryption_context(*, path: str, version: int, category: str) -> dict[str, str]:
    """The context every secret version's data key and value are bound to."""
    return {"path": path, "version": str(version), "category": category}


@dataclass(frozen=True, slots=True)
class SealedValue:
    """One envelope-encrypted value: wrapped data key, nonce and ciphertext."""

    wrapped: WrappedKey
    nonce: bytes
    ciphertext: bytes

    def __repr__(self) -> str:
        return f"SealedValue(wrapped={self.wrapped!r}, size={len(self.ciphertext)})"

    def to_json(self) -> dict[str, str | int]:
        """JSON-ready form (standard base64 with padding for bytes)."""
        return {
            "p": self.wrapped.provider,
            "k": self.wrapped.kek_version,
            "w": _b64(self.wrapped.blob),
            "n": _b64(self.nonce),
            "c": _b64(self.ciphertext),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, str | int]) -> SealedValue:
        """Inverse of ``to_json``; malformed input raises ``DecryptionError``."""
        try:
            return cls(
                wrapped=WrappedKey(
                    provider=str(doc["p"]),
                    kek_version=int(doc["k"]),
                    blob=base64.b64decode(str(doc["w"]), validate=True),
                ),
                nonce=base64.b64decode(str(doc["n"]), validate=True),
                ciphertext=base64.b64decode(str(doc["c"]), validate=True),
            )
        except (KeyError, ValueError, TypeError):
            raise DecryptionError() from None

    def dumps(self) -> bytes:
        """Serialized JSON bytes (compact; ``orjson.dumps(to_json())``)."""
        return orjson.dumps(self.to_json())

    @classmethod
    def loads(cls, raw: bytes) -> SealedValue:
        """Inverse of ``dumps``; malformed input raises ``DecryptionError``."""
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise DecryptionError() from None
        if not isinstance(doc, dict):
            raise DecryptionError()
        return cls.from_json(doc)


class Opener:
    """One sealed value with its data key already unwrapped: ``open()`` decrypts it.

    Holds the ciphertext and the data key's cipher (as ``Envelope``'s own
    cache does), never the plaintext; ``DecryptionError`` on a bad tag.
    """

    __slots__ = ("_aad", "_aead", "_ciphertext", "_nonce")

    def __init__(self, aead: AESGCM, nonce: bytes, ciphertext: bytes, aad: bytes) -> None:
        self._aead = aead
        self._nonce = nonce
        self._ciphertext = ciphertext
        self._aad = aad

    def __repr__(self) -> str:
        return f"Opener(size={len(self._ciphertext)})"

    def open(self) -> bytes:
        """The plaintext (a fresh decryption each call)."""
        try:
            return self._aead.decrypt(self._nonce, self._ciphertext, self._aad)
        except InvalidTag:
            raise DecryptionError() from None


class Envelope:
    """Per-version data keys wrapped by per-category KEKs."""

    def __init__(
        self,
        provider_for: Callable[[str], KekProvider],
        *,
        provider_named: Callable[[str], KekProvider] | None = None,
        random: Callable[[int], bytes] = os.urandom,
        cache_size: int = 4096,
    ) -> None:
        """``provider_for(category)`` returns the KEK provider that category uses now (it
        wraps new data keys); ``provider_named(name)`` the provider of that name, which
        unwraps the data keys it wrapped, so values stay readable (and rewrappable) after
        their category moved to another provider or left the catalog. Without it, a data
        key opens only with its category's current provider."""
        self._provider_for = provider_for
        self._provider_named = provider_named
        self._random = random
        self._cache_size = cache_size
        self._cache: OrderedDict[bytes, AESGCM] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0  # forgets so far: a fill that saw one come keeps nothing

    def __repr__(self) -> str:
        return f"Envelope(cached_keys={len(self._cache)})"

    def forget(self) -> None:
        """Drop every cached data key (on seal); an unwrap under way keeps none."""
        with self._lock:
            self._generation += 1
            self._cache.clear()

    def seal(self, plaintext: bytes, *, path: str, version: int, category: str) -> SealedValue:
        """Encrypt ``plaintext`` for (path, version, category) with a fresh data key."""
        context = encryption_context(path=path, version=version, category=category)
        dek = Sensitive(self._random(32))
        wrapped = self._provider_for(category).wrap(category, dek, context)
        nonce = self._random(_NONCE)
        ciphertext = AESGCM(dek.reveal()).encrypt(nonce, plaintext, canonical_context(context))
        return SealedValue(wrapped=wrapped, nonce=nonce, ciphertext=ciphertext)

    def open(self, sealed: SealedValue, *, path: str, version: int, category: str) -> bytes:
        """Decrypt; ``DecryptionError`` on any mismatch or tampering."""
        return self.opener(sealed, path=path, version=version, category=category).open()

    def opener(self, sealed: SealedValue, *, path: str, version: int, category: str) -> Opener:
        """``sealed`` ready to decrypt (``Opener``); ``DecryptionError`` if its key
        does not unwrap for this context (a bad value fails at ``open``)."""
        context = encryption_context(path=path, version=version, category=category)
        aad = secret_context(path, version, category)
        aead = self._data_cipher(sealed.wrapped, category, context, aad)
        return Opener(aead, sealed.nonce, sealed.ciphertext, aad)

    def needs_rewrap(self, sealed: SealedValue, *, category: str) -> bool:
        """Whether the data key is wrapped by an older KEK version or another provider."""
        provider = self._provider_for(category)
        return (
            sealed.wrapped.provider != provider.name
            or sealed.wrapped.kek_version < provider.current_version(category)
        )

    def rewrap(self, sealed: SealedValue, *, path: str, version: int, category: str) -> SealedValue:
        """The same value with its data key wrapped by the newest KEK version."""
        context = encryption_context(path=path, version=version, category=category)
        old = self._unwrap(sealed.wrapped, category, context)
        wrapped = self._provider_for(category).wrap(category, old, context)
        # The value ciphertext is untouched; verify it still opens before handing it back.
        AESGCM(old.reveal()).decrypt(sealed.nonce, sealed.ciphertext, canonical_context(context))
        return SealedValue(wrapped=wrapped, nonce=sealed.nonce, ciphertext=sealed.ciphertext)

    def _unwrap(
        self, wrapped: WrappedKey, category: str, context: Mapping[str, str]
    ) -> Sensitive[bytes]:
        if self._provider_named is not None:
            provider = self._provider_named(wrapped.provider)
        else:
            provider = self._provider_for(category)
        if wrapped.provider != provider.name:
            raise DecryptionError()
        dek = provider.unwrap(category, wrapped, context)
        if len(dek) != 32:
            raise DecryptionError()
        return dek

    def _data_cipher(
        self, wrapped: WrappedKey, category: str, context: Mapping[str, str], aad: bytes
    ) -> AESGCM:
        # The cache key includes the context: a wrapped key only ever opens for its own context.
        slot = wrapped.blob + b"\x00" + aad
        with self._lock:
            aead = self._cache.get(slot)
            if aead is not None:
                self._cache.move_to_end(slot)
                return aead
            generation = self._generation  # before the KEK provider's seal check
        aead = AESGCM(self._unwrap(wrapped, category, context).reveal())
        with self._lock:
            if self._generation != generation:  # sealed since: keep no data key
                return aead
            self._cache[slot] = aead
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return aead
