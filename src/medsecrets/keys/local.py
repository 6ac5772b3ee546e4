"""``LocalKekProvider``: KEK material generated here and kept through the barrier.

Each category's KEKs live at ``keys/local/<category>`` in the barrier (so they
are encrypted under the keyring). A data key is wrapped with AES-256-GCM under
the newest version; the associated data is the canonical encryption context
plus the KEK version, so a wrapped key moved to another secret, version or
category does not unwrap.

A KEK's cipher is cached per (category, version) while unsealed. ``forget`` drops
the version tables and the ciphers, and runs by itself whenever the barrier given
seals (``Barrier.on_seal``); a wrap or unwrap under way then keeps no cipher (its
fill checks the table's generation, read before the table was).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import threading
from collections.abc import Callable, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medsecrets.barrier.base import Barrier, SecureStorage
from medsecrets.clock import Clock, SystemClock
from medsecrets.errors import DecryptionError
from medsecrets.keys.base import WrappedKey
from medsecrets.keys.context import canonical_context
from medsecrets.keys.table import Entry, VersionTable
from medsecrets.schema.keys import KekVersion
from medsecrets.sensitive import Sensitive

__all__ = ["LocalKekProvider"]

_NONCE = 12


class LocalKekProvider:
    """Per-category AES-256 KEKs stored (encrypted) through the barrier."""

    def __init__(
        self,
        secure: SecureStorage,
        *,
        clock: Clock | None = None,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._random = random
        self._table = VersionTable(
            secure, "keys/local/", clock=clock or SystemClock(), make_entry=self._make_entry
        )
        self._aead: dict[tuple[str, int], AESGCM] = {}
        self._lock = threading.Lock()
        if isinstance(secure, Barrier):
            secure.on_seal(self.forget)

    @property
    def name(self) -> str:
        return "local"

    def __repr__(self) -> str:
        return f"LocalKekProvider(categories={self._table.categories()!r})"

    def _make_entry(self, category: str, number: int) -> dict[str, str]:
        return {"key": base64.b64encode(self._random(32)).decode()}

    def forget(self) -> None:
        """Drop cached key material (called when the store seals; runs by itself on the
        barrier's seal). The table's count is raised before the ciphers are dropped."""
        self._table.forget()
        with self._lock:
            self._aead.clear()

    def _cipher(self, category: str, entry: Entry, generation: int) -> AESGCM:
        """The cipher of ``entry``'s KEK, cached unless the table was forgotten since
        ``generation`` (read before ``entry``)."""
        slot = (category, int(entry["version"]))
        aead = self._aead.get(slot)
        if aead is None:
            aead = AESGCM(base64.b64decode(entry["key"]))
            with self._lock:  # forget raises the table's count, then waits for this lock
                if self._table.generation == generation:
                    aead = self._aead.setdefault(slot, aead)
        return aead

    def current_version(self, category: str) -> int:
        return int(self._table.newest(category)["version"])

    def versions(self, category: str) -> tuple[KekVersion, ...]:
        return tuple(
            KekVersion(
                category=category,
                version=int(e["version"]),
                created_at=dt.datetime.fromisoformat(e["created_at"]),
            )
            for e in self._table.entries(category, refresh=True)
        )

    def wrap(self, category: str, dek: Sensitive[bytes], context: Mapping[str, str]) -> WrappedKey:
        generation = self._table.generation
        newest = self._table.newest(category)
        nonce = self._random(_NONCE)
        aad = canonical_context(context, kek_version=newest["version"])
        cipher = self._cipher(category, newest, generation)
        blob = nonce + cipher.encrypt(nonce, dek.reveal(), aad)
        return WrappedKey(provider=self.name, kek_version=int(newest["version"]), blob=blob)

    def unwrap(
        self, category: str, wrapped: WrappedKey, context: Mapping[str, str]
    ) -> Sensitive[bytes]:
        if wrapped.provider != self.name or len(wrapped.blob) < _NONCE + 16:
            raise DecryptionError()
        generation = self._table.generation
        entry = self._table.find(category, wrapped.kek_version)
        aad = canonical_context(context, kek_version=str(wrapped.kek_version))
        try:
            dek = self._cipher(category, entry, generation).decrypt(
                wrapped.blob[:_NONCE], wrapped.blob[_NONCE:], aad
            )
        except InvalidTag:
            raise DecryptionError() from None
        return Sensitive(dek)

    def rotate(self, category: str) -> int:
        return int(self._table.add(category)[-1]["version"])
