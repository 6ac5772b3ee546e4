"""Fixtures for the barrier tests: a real SQLite file and a barrier over it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from medsecrets.barrier.aes_gcm import AesGcmBarrier
from medsecrets.clock import ManualClock, utc
from medsecrets.sensitive import Sensitive
from medsecrets.storage.sqlite import SqliteStorage

ROOT_KEY = Sensitive(bytes(range(200, 232)))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def storage(db_path: Path) -> Iterator[SqliteStorage]:
    store = SqliteStorage(db_path)
    yield store
    store.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(dt.datetime(2026, 3, 1, 12, 0, tzinfo=utc))


@pytest.fixture
def barrier(storage: SqliteStorage, clock: ManualClock) -> AesGcmBarrier:
    b = AesGcmBarrier(storage, clock=clock)
    b.initialize(ROOT_KEY)
    return b
