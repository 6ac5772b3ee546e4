"""The barrier: the only layer that encrypts storage (AES-256-GCM, keyring with terms)."""

from medsecrets.barrier.aes_gcm import RESERVED_KEYS, AesGcmBarrier
from medsecrets.barrier.base import Barrier, KeyringInfo, SecureStorage
from medsecrets.barrier.keyring import Keyring, KeyTerm

__all__ = [
    "RESERVED_KEYS",
    "AesGcmBarrier",
    "Barrier",
    "KeyTerm",
    "Keyring",
    "KeyringInfo",
    "SecureStorage",
]
