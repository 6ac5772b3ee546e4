"""``analyze``: the online detectors, offline, over audit logs (``medsecrets audit analyze``).

``analyze(paths)`` reads each file (format given, or sniffed per file with
``sources.detect_format``), feeds every event to one ``DetectorSet`` in file
order and returns an ``AnalysisReport``: how many events, every alert, alerts
per detector and the time it took. Our log and Vault's are written in time
order and are streamed as they are; CloudTrail promises no order inside or
across its files, so its events pass through a bounded reorder buffer that
holds ``reorder_seconds`` (15 min) of events (CloudTrail delivers a file about
every 5 minutes); when any file is CloudTrail, the whole stream is reordered.
Pass files in time order.

The same thresholds as online apply (``DetectorConfig``); ``is_honeytoken`` is
typically ``Catalog.is_honeytoken``.
"""

from __future__ import annotations

import heapq
import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from medsecrets.monitor.alert import Alert
from medsecrets.monitor.detectors import DetectorConfig, DetectorSet
from medsecrets.monitor.events import AccessEvent
from medsecrets.monitor.sources import DEFAULT_PREFIX, Format, detect_format, read_events

__all__ = ["AnalysisReport", "analyze", "in_time_order"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class AnalysisReport:
    """What ``analyze`` found (see module docstring)."""

    events: int
    alerts: tuple[Alert, ...]
    counts: Mapping[str, int]
    """Alerts per detector name (every detector of the set, zero included)."""
    elapsed: float
    """Seconds spent reading and detecting."""
    formats: Mapping[str, Format]
    """The format of each file read."""

    @property
    def events_per_second(self) -> float:
        """Throughput of the run (0 when nothing was timed)."""
        return self.events / self.elapsed if self.elapsed > 0 else 0.0


def in_time_order(events: Iterable[AccessEvent], lateness: float) -> Iterator[AccessEvent]:
    """``events`` sorted by time, provided none is more than ``lateness`` seconds late.

    Holds only the events of the last ``lateness`` seconds (a heap); a later
    straggler is passed on as soon as it arrives.
    """
    heap: list[tuple[float, int, AccessEvent]] = []
    newest = float("-inf")
    for number, event in enumerate(events):
        heapq.heappush(heap, (event.ts, number, event))
        newest = max(newest, event.ts)
        horizon = newest - lateness
        while heap[0][0] <= horizon:
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]


def analyze(
    paths: PathLike | Iterable[PathLike],
    fmt: Format | None = None,
    config: DetectorConfig | None = None,
    is_honeytoken: Callable[[str], bool] | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    reorder_seconds: float = 900.0,
) -> AnalysisReport:
    """Run the default detectors over the logs at ``paths`` (see module docstring).

    Raises ``sources.LogFormatError`` for an unreadable or malformed file.
    """
    files = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    detectors = DetectorSet.default(config, is_honeytoken)
    observe = detectors.observe
    alerts: list[Alert] = []
    count = 0
    started = time.perf_counter()
    formats = {os.fspath(path): fmt or detect_format(path) for path in files}
    events: Iterable[AccessEvent] = itertools.chain.from_iterable(
        read_events(path, kind, prefix=prefix) for path, kind in formats.items()
    )
    if "cloudtrail" in formats.values():
        events = in_time_order(events, reorder_seconds)
    for event in events:
        count += 1
        found = observe(event)
        if found:
            alerts.extend(found)
    elapsed = time.perf_counter() - started
    return AnalysisReport(
        events=count,
        alerts=tuple(alerts),
        counts=dict(detectors.counts),
        elapsed=elapsed,
        formats=formats,
    )
