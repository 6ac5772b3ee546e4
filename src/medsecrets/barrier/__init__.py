"""The barrier: the only layer that encrypts storage (AES-256-GCM, keyring with terms).

The names below load lazily (PEP 562): importing the package imports none of its
modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medsecrets.lazy import resolve

if TYPE_CHECKING:
    from medsecrets.barrier.aes_gcm import RESERVED_KEYS, AesGcmBarrier
    from medsecrets.barrier.base import Barrier, SecureStorage
    from medsecrets.barrier.keyring import Keyring, KeyTerm
    from medsecrets.schema.system import KeyringInfo

__all__ = [
    "RESERVED_KEYS",
    "AesGcmBarrier",
    "Barrier",
    "KeyTerm",
    "Keyring",
    "KeyringInfo",
    "SecureStorage",
]

_EXPORTS = {
    "AesGcmBarrier": "medsecrets.barrier.aes_gcm",
    "Barrier": "medsecrets.barrier.base",
    "KeyTerm": "medsecrets.barrier.keyring",
    "Keyring": "medsecrets.barrier.keyring",
    "KeyringInfo": "medsecrets.schema.system",
    "RESERVED_KEYS": "medsecrets.barrier.aes_gcm",
    "SecureStorage": "medsecrets.barrier.base",
}


def __getattr__(name: str) -> object:
    return resolve(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
