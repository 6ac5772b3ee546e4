"""Timing helpers: medians of repeated throughput runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Figure", "throughput"]


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure with its unit, and the runs it is the median of."""

    name: str
    value: float
    unit: str
    runs: tuple[float, ...] = ()

    def __str__(self) -> str:
        return f"{self.value:,.0f} {self.unit}"


def throughput(
    name: str, op: Callable[[int], object], *, count: int, repeats: int = 3, warmup: int = 1
) -> Figure:
    """Median operations per second of ``op(i)`` over ``count`` calls, ``repeats`` times."""
    for i in range(min(count, 200) * warmup):
        op(i)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(count):
            op(i)
        runs.append(count / (time.perf_counter() - start))
    return Figure(name, statistics.median(runs), "ops/s", tuple(runs))
