"""Shared fixtures: a real SQLite-backed store, unsealed with a development key file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from medsecrets.clock import ManualClock
from medsecrets.schema.seal import KeyFileSealConfig
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore


@pytest.fixture
def clock() -> ManualClock:
    """A clock tests move by hand."""
    return ManualClock()


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock) -> Iterator[SecretStore]:
    """An initialised, unsealed store on a fresh SQLite file."""
    s = SecretStore(SqliteStorage(tmp_path / "store.db"), clock=clock)
    s.initialize(KeyFileSealConfig(str(tmp_path / "unseal.key")))
    yield s
    s.close()


def in_ci() -> bool:
    """Whether we run under CI (skips become failures there)."""
    return os.environ.get("CI", "").lower() == "true"
