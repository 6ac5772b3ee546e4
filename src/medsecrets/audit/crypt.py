"""``RecordCipher``: audit records encrypted at rest, their chain still checkable.

A sealed record is itself a record-shaped line (it satisfies
``record.split_line``)::

    {"prev":"<prev>","seq":<n>,"kind":"sealed","enc":"<base64>","hash":"<hash>"}\\n

``prev``, ``seq`` and ``hash`` are copied from the plaintext record, so a
verifier *without* the key still checks the chain's order and links
(``prev``/``seq``/``hash`` of consecutive lines), and a verifier *with* the key
(``decode=cipher.open``) also recomputes each record's hash over its
plaintext. ``enc`` is ``base64(nonce (12) || AES-256-GCM ciphertext || tag)``
with associated data ``b"medsecrets-audit/v1|" + prev + b"|" + seq + b"|" +
hash``: a sealed record moved to another place in the chain, relabelled,
truncated or flipped fails to open with the opaque ``DecryptionError``.

Nonces are random (``os.urandom(12)``): one key should seal well under 2^32
records (the random-nonce bound for AES-GCM); rotate the audit log encryption
key long before that. The key never appears in ``repr`` and the cipher
refuses to be pickled.
"""

from __future__ import annotations

import binascii
import os
from typing import Final, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medsecrets.audit.record import LineError, split_line
from medsecrets.errors import ConfigError, DecryptionError, InvalidRequest

__all__ = ["SEALED_KIND", "RecordCipher", "deferred_cipher", "is_sealed"]

SEALED_KIND: Final = "sealed"
"""The ``kind`` of a sealed record line."""

_AAD_PREFIX = b"medsecrets-audit/v1|"
_NONCE_LEN = 12
_KIND_MARK = b',"kind":"sealed","enc":"'
_HASH_MARK = b'","hash":"'
_TAIL_LEN = len(_HASH_MARK) + 64 + 2  # ","hash":"<64 hex>"}


def _aad(prev: str, seq: int, digest: str) -> bytes:
    return _AAD_PREFIX + prev.encode() + b"|" + str(seq).encode() + b"|" + digest.encode()


def _enc_span(line: bytes) -> tuple[int, int] | None:
    """Start and end of the ``enc`` value in a sealed line (no ``\\n``), or ``None``."""
    start = line.find(_KIND_MARK, 81)
    if start < 0 or line.find(b",", 81) != start:  # the kind must follow seq at once
        return None
    end = len(line) - _TAIL_LEN
    if line[end : end + len(_HASH_MARK)] != _HASH_MARK:
        return None
    return start + len(_KIND_MARK), end


def is_sealed(line: bytes) -> bool:
    """Whether ``line`` has the sealed record layout (its ``kind`` is ``sealed``)."""
    body = line[:-1] if line.endswith(b"\n") else line
    try:
        split_line(body)
    except LineError:
        return False
    return _enc_span(body) is not None


def _fail() -> NoReturn:
    raise DecryptionError() from None


class RecordCipher:
    """Seals and opens audit record lines with one AES-256 key (see module docstring)."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigError("the audit log encryption key must be 32 bytes (AES-256)")
        self._aead = AESGCM(key)

    @classmethod
    def from_hex(cls, text: str) -> RecordCipher:
        """A cipher from the key as 64 hex digits (the catalog field's form)."""
        try:
            key = bytes.fromhex(text.strip())
        except ValueError:
            raise ConfigError("the audit log encryption key must be hex") from None
        return cls(key)

    def __repr__(self) -> str:
        return "RecordCipher(key=**********)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("RecordCipher cannot be pickled")

    def seal(self, line: bytes) -> bytes:
        """The sealed line (``\\n``-terminated) for the record ``line``.

        Raises ``InvalidRequest`` when ``line`` is not a record line.
        """
        try:
            prev, seq, digest = split_line(line)
        except LineError:
            raise InvalidRequest("only audit record lines can be sealed") from None
        nonce = os.urandom(_NONCE_LEN)
        plain = line if line.endswith(b"\n") else line + b"\n"
        blob = nonce + self._aead.encrypt(nonce, plain, _aad(prev, seq, digest))
        return b"".join(
            (
                b'{"prev":"',
                prev.encode(),
                b'","seq":',
                str(seq).encode(),
                _KIND_MARK,
                binascii.b2a_base64(blob, newline=False),
                _HASH_MARK,
                digest.encode(),
                b'"}\n',
            )
        )

    def open(self, stored: bytes) -> bytes:
        """The plaintext record line (with ``\\n``) of the sealed line ``stored``.

        Raises ``DecryptionError`` (no detail) when ``stored`` is not a sealed
        line, was altered or moved, or was sealed under another key; the
        plaintext's ``prev``/``seq``/``hash`` must equal the sealed line's.
        """
        body = stored[:-1] if stored.endswith(b"\n") else stored
        try:
            prev, seq, digest = split_line(body)
        except LineError:
            _fail()
        span = _enc_span(body)
        if span is None:
            _fail()
        try:
            blob = binascii.a2b_base64(body[span[0] : span[1]], strict_mode=True)
        except binascii.Error:
            _fail()
        if len(blob) <= _NONCE_LEN:
            _fail()
        try:
            plain = self._aead.decrypt(
                blob[:_NONCE_LEN], blob[_NONCE_LEN:], _aad(prev, seq, digest)
            )
        except InvalidTag:
            _fail()
        try:
            inner = split_line(plain)
        except LineError:
            _fail()
        if inner != (prev, seq, digest):
            _fail()
        return plain


def deferred_cipher(state: bytes | str | None) -> RecordCipher | None:
    """The cipher of a deferred at-rest key as the server passes it on: the key (a
    cipher), ``None`` (not had yet: the store is sealed), or the text saying why it
    cannot be had (raised as a ``ConfigError``, so the device's write fails)."""
    if isinstance(state, str):
        raise ConfigError(state)
    return RecordCipher(state) if state is not None else None
