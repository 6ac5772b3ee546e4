"""settle_heap: start-up objects frozen, the collector's thresholds raised."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from medsecrets.server.heap import THRESHOLDS, settle_heap


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_settle_heap_freezes_what_is_alive_and_raises_the_thresholds(restored: None) -> None:
    alive = [[] for _ in range(100)]  # tracked objects alive at start-up
    settle_heap()
    assert gc.get_freeze_count() >= len(alive)
    assert gc.get_threshold() == THRESHOLDS
    assert THRESHOLDS[0] > 700  # fewer young-generation passes than CPython's default
