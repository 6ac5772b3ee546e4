"""The keyring: an immutable, numbered set of 256-bit data encryption keys.

Contract:

- Terms are numbered from 1 and strictly increasing; the newest term is the
  *active* term and encrypts, every term decrypts (``MultiFernet``-style).
- ``with_new_term`` returns a new ``Keyring``; a ``Keyring`` never changes.
- Keys are held as ``Sensitive[bytes]``: ``repr`` shows term numbers and dates,
  never key bytes.
- ``serialize`` gives JSON (keys base64) wrapped in ``Sensitive``;
  ``deserialize`` validates it strictly and raises ``StorageError`` (naming the
  rule, never a value) on anything malformed.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import itertools
import json
from dataclasses import dataclass, field

from medsecrets.errors import StorageError
from medsecrets.sensitive import Sensitive

__all__ = ["KEY_SIZE", "KeyTerm", "Keyring"]

KEY_SIZE = 32
_FORMAT = 1
_MAX_TERM = 2**32 - 1


@dataclass(frozen=True, slots=True)
class KeyTerm:
    """One keyring term: its number, its 32-byte key and when it was installed."""

    term: int
    key: Sensitive[bytes] = field(repr=False, compare=False)
    installed_at: dt.datetime

    def __post_init__(self) -> None:
        if not 1 <= self.term <= _MAX_TERM:
            raise ValueError("keyring term must be between 1 and 2**32-1")
        if len(self.key) != KEY_SIZE or not isinstance(self.key.reveal(), bytes):
            raise ValueError("keyring keys must be 32 bytes")
        if self.installed_at.tzinfo is None:
            raise ValueError("installed_at must be timezone-aware")


@dataclass(frozen=True, slots=True)
class Keyring:
    """An immutable sequence of key terms, oldest first; the last one is active."""

    terms: tuple[KeyTerm, ...]

    def __post_init__(self) -> None:
        if not self.terms:
            raise ValueError("a keyring needs at least one term")
        numbers = [t.term for t in self.terms]
        if any(b <= a for a, b in itertools.pairwise(numbers)):
            raise ValueError("keyring terms must be strictly increasing")

    @classmethod
    def new(cls, key: Sensitive[bytes], installed_at: dt.datetime) -> Keyring:
        """A keyring with the single term 1."""
        return cls((KeyTerm(1, key, installed_at),))

    @property
    def active(self) -> KeyTerm:
        """The newest term: the one that encrypts."""
        return self.terms[-1]

    def term(self, number: int) -> KeyTerm | None:
        """The term numbered ``number`` or ``None``."""
        for t in self.terms:
            if t.term == number:
                return t
        return None

    def with_new_term(self, key: Sensitive[bytes], installed_at: dt.datetime) -> Keyring:
        """A new keyring with one more term (number = active + 1) holding ``key``."""
        return Keyring((*self.terms, KeyTerm(self.active.term + 1, key, installed_at)))

    def serialize(self) -> Sensitive[bytes]:
        """JSON with base64 keys, wrapped so it never lands in a repr."""
        doc = {
            "format": _FORMAT,
            "terms": [
                {
                    "term": t.term,
                    "key": base64.b64encode(t.key.reveal()).decode("ascii"),
                    "installed_at": t.installed_at.isoformat(),
                }
                for t in self.terms
            ],
        }
        return Sensitive(json.dumps(doc, separators=(",", ":"), sort_keys=True).encode())

    @classmethod
    def deserialize(cls, data: bytes | Sensitive[bytes]) -> Keyring:
        """Parse ``serialize`` output; ``StorageError`` if malformed (no values in it)."""
        raw = data.reveal() if isinstance(data, Sensitive) else data
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
                raise StorageError("keyring: unknown format")
            if set(doc) != {"format", "terms"} or not isinstance(doc["terms"], list):
                raise StorageError("keyring: unexpected fields")
            terms = []
            for item in doc["terms"]:
                if not isinstance(item, dict) or set(item) != {"term", "key", "installed_at"}:
                    raise StorageError("keyring: malformed term")
                number, key, when = item["term"], item["key"], item["installed_at"]
                if type(number) is not int or not isinstance(key, str):
                    raise StorageError("keyring: malformed term")
                if not isinstance(when, str):
                    raise StorageError("keyring: malformed term")
                key_bytes = base64.b64decode(key.encode("ascii"), validate=True)
                terms.append(KeyTerm(number, Sensitive(key_bytes), dt.datetime.fromisoformat(when)))
            return cls(tuple(terms))
        except StorageError:
            raise
        except (ValueError, TypeError, UnicodeError, binascii.Error):
            raise StorageError("keyring: malformed record") from None

    def __repr__(self) -> str:
        return f"Keyring(terms={[t.term for t in self.terms]}, active={self.active.term})"
