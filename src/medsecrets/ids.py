"""``new_id()``: time-ordered identifiers (UUID version 7, RFC 9562) for secrets and versions.

A secret's id names its data records (``secrets/data/<id>/<version>``), so
the order of ids is the order of those records in the store's key space.
Random ids (version 4) scatter the records of secrets created together over
the whole table, and every new secret then changes a leaf page of its own;
ids that grow with time put them side by side, so a group commit of new
secrets writes one or two leaves instead of one per secret. On SQLite's
``WITHOUT ROWID`` table, eight new secrets a commit: 3.7 against 5.8 pages
written per secret; interleaved HTTP writes at 32 connections: 2,119
against 1,828/s, p99 26 against 38 ms (``docs/benchmarks.md``, session 10).

Layout (RFC 9562, section 5.7): 48 bits of Unix time in milliseconds, the
version (7), 12 random bits, the variant (``10``), 62 random bits: 74 bits
from the operating system's CSPRNG per id. An id reveals when it was made,
to the millisecond, which the secret's metadata shows anyway (``created_at``);
ids are names, never credentials. Ids made in the same millisecond are in
random order among themselves (the layout's locality needs no more).
"""

from __future__ import annotations

import os
import time

__all__ = ["new_id"]

_RAND_A_BITS = 12
_RAND_B_BITS = 62
_VERSION = 7
_VARIANT = 0b10


def new_id(*, now_ns: int | None = None, random: bytes | None = None) -> str:
    """A new UUIDv7 in its canonical text form (36 characters, lower case).

    ``now_ns`` (default: the wall clock) and ``random`` (10 bytes; default:
    ``os.urandom``) are seams for tests.
    """
    millis = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    bits = int.from_bytes(os.urandom(10) if random is None else random, "big")
    rand_a = (bits >> _RAND_B_BITS) & ((1 << _RAND_A_BITS) - 1)
    rand_b = bits & ((1 << _RAND_B_BITS) - 1)
    value = (
        (millis & ((1 << 48) - 1)) << 80 | _VERSION << 76 | rand_a << 64 | _VARIANT << 62 | rand_b
    )
    text = f"{value:032x}"  # uuid.UUID(int=value) and str() of it: 4x the time
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
