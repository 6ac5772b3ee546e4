"""Timing helpers: medians of repeated throughput runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Figure", "interleaved_throughput", "throughput"]


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
    (figure,) = interleaved_throughput([(name, op)], count=count, repeats=repeats, warmup=warmup)
    return figure


def interleaved_throughput(
    ops: list[tuple[str, Callable[[int], object]]],
    *,
    count: int,
    repeats: int = 3,
    warmup: int = 1,
) -> list[Figure]:
    """``throughput`` of each ``(name, op)``, their runs taken in turn (a, b, a, b, ...).

    For an operation measured against its ceiling: a spell of a slower machine then
    slows both alike instead of whichever happened to run in it, so their ratio holds.
    """
    for _, op in ops:
        for i in range(min(count, 200) * warmup):
            op(i)
    runs: list[list[float]] = [[] for _ in ops]
    for _ in range(repeats):
        for (_, op), taken in zip(ops, runs, strict=True):
            start = time.perf_counter()
            for i in range(count):
                op(i)
            taken.append(count / (time.perf_counter() - start))
    return [
        Figure(name, statistics.median(taken), "ops/s", tuple(taken))
        for (name, _), taken in zip(ops, runs, strict=True)
    ]
