"""Fixtures for the catalog tests: reproducible randomness and canary values."""

from __future__ import annotations

import random

import pytest

from medsecrets.catalog import Catalog, default_catalog

CANARY = "CANARY-c4n4ry-7Q9x"
"""A value planted in bad inputs; it must never appear in an error message."""


class SeededRandomSource:
    """A deterministic ``RandomSource`` (test-only: NOT cryptographically secure).

    Used where a test must be exactly reproducible, e.g. distribution checks
    that must never flake.
    """

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def token_bytes(self, n: int) -> bytes:
        return self._rng.randbytes(n)

    def randbelow(self, n: int) -> int:
        return self._rng.randrange(n)


class ModuloBiasedSource(SeededRandomSource):
    """The classic mistake, ``byte % n``: used to show the distribution test can fail."""

    def randbelow(self, n: int) -> int:
        return self._rng.getrandbits(8) % n


@pytest.fixture
def catalog() -> Catalog:
    """The packaged default catalog."""
    return default_catalog()


@pytest.fixture
def seeded() -> SeededRandomSource:
    """A reproducible random source."""
    return SeededRandomSource(20260101)
