"""worker_count: one per core (plus ``extra``) for big inputs, none for small ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsecrets import workers as workers_module
from medsecrets.workers import PARALLEL_MIN_BYTES, worker_count


@pytest.fixture
def big(tmp_path: Path) -> Path:
    path = tmp_path / "big.log"
    with path.open("wb") as f:
        f.truncate(PARALLEL_MIN_BYTES)
    return path


def test_one_per_core_plus_extra_for_big_inputs(big: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers_module, "cores", lambda: 2)
    assert worker_count(None, [big]) == 2
    assert worker_count(None, [big], extra=1) == 3
    assert worker_count(5, [big], extra=1) == 5  # a number is taken as given


def test_none_for_small_inputs_or_one_core(
    big: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = tmp_path / "small.log"
    small.write_bytes(b"x\n")
    monkeypatch.setattr(workers_module, "cores", lambda: 2)
    assert worker_count(None, [small], extra=1) == 0
    monkeypatch.setattr(workers_module, "cores", lambda: 1)
    assert worker_count(None, [big], extra=1) == 1  # below 2: no pool
