"""``analyze``: the online detectors, offline, over audit logs (``medsecrets audit analyze``).

``analyze(paths)`` reads each file (format given, or sniffed per file with
``sources.detect_format``), feeds every event to one ``DetectorSet`` in file
order and returns an ``AnalysisReport``: how many events, every alert, alerts
per detector and the time it took. Our log and Vault's are written in time
order and are streamed as they are; CloudTrail promises no order inside or
across its files, so its files are read in the order of the delivery stamp in
their names (``delivery_order``: whatever the order given, e.g. a glob that
sorts by region first) and its events pass through a bounded reorder buffer
that holds ``reorder_seconds`` (15 min) of events (CloudTrail delivers a file
about every 5 minutes); when any file is CloudTrail, the whole stream is
reordered. An event that comes later than that (older than one already passed
on) is counted (``late_events``): it is passed on out of order. A second copy of
a CloudTrail event is skipped and counted (``duplicate_events``). Other files are
read in the order given: pass them in time order.

The same thresholds as online apply (``DetectorConfig``); ``is_honeytoken`` is
typically ``Catalog.is_honeytoken``.

**Speed.** Events reach the detectors in batches (``DetectorSet.observe_many``,
the alerts of event-by-event observation). A plain (not gzip) line log (ours,
Vault) of ``PARALLEL_MIN_BYTES`` or more is parsed by worker processes (one
per core by default; ``workers`` sets the number, ``0`` parses here): it is
cut into ranges of whole lines (``sources.BLOCK_BYTES`` each), each worker
reads and parses its ranges itself, and this process feeds the events to the
detectors in file order while the workers parse ahead (a bounded window of
ranges in flight). The report is the same either way: the same events in the
same order, and a malformed line raises the same ``LogFormatError`` (file and
line). A range a worker could not parse for any other reason (a dead pool, a
file replaced meanwhile) is parsed here. The cyclic garbage collector is
paused while events are parsed and observed (nothing they build is part of a
cycle; its passes cost a fifth of the time).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import heapq
import itertools
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from medsecrets.collector import paused
from medsecrets.monitor.alert import Alert
from medsecrets.monitor.detectors import DetectorConfig, DetectorSet
from medsecrets.monitor.events import AccessEvent
from medsecrets.monitor.sources import (
    BLOCK_BYTES,
    DEFAULT_PREFIX,
    LINE_FORMATS,
    MAX_LINE_BYTES,
    Format,
    LogFormatError,
    Row,
    Skipped,
    detect_format,
    events_of,
    is_compressed,
    line_blocks,
    read_batches,
    rows_in_block,
)
from medsecrets.workers import (
    PARALLEL_MIN_BYTES,
    file_size,
    line_end,
    process_pool,
    read_range,
    worker_count,
)

__all__ = ["PARALLEL_MIN_BYTES", "AnalysisReport", "analyze", "delivery_order", "in_time_order"]

PathLike = str | os.PathLike[str]


_BATCH: Final = 8192
"""Events per ``observe_many`` call for sources that are not read in blocks (CloudTrail)."""


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
    skipped_lines: int = 0
    """Lines longer than ``sources.MAX_LINE_BYTES``, skipped unparsed (``skipped_at``)."""
    skipped_at: tuple[tuple[str, int], ...] = ()
    """``(file, line)`` of the first ``sources.SKIPPED_NAMED`` skipped lines."""
    digests: tuple[str, ...] = ()
    """CloudTrail digest files among the files: skipped (they hold no event)."""
    late_events: int = 0
    """CloudTrail events that came later than ``reorder_seconds`` after newer ones: passed
    on out of time order (their windows and baselines may be wrong)."""
    duplicate_events: int = 0
    """Second copies of CloudTrail events (a cross-account call delivered to both
    accounts, a trail beside the organisation's, a file given twice): skipped, not counted
    in ``events`` (``sources.Skipped``)."""

    @property
    def events_per_second(self) -> float:
        """Throughput of the run (0 when nothing was timed)."""
        return self.events / self.elapsed if self.elapsed > 0 else 0.0


def in_time_order(
    events: Iterable[AccessEvent],
    lateness: float,
    late: Callable[[AccessEvent], None] | None = None,
) -> Iterator[AccessEvent]:
    """``events`` sorted by time, provided none is more than ``lateness`` seconds late.

    Holds only the events of the last ``lateness`` seconds (a heap); a later
    straggler is passed on as soon as it arrives, and given to ``late`` (it is
    older than an event already passed on).
    """
    heap: list[tuple[float, int, AccessEvent]] = []
    newest = float("-inf")
    passed = float("-inf")  # the time of the last event passed on
    for number, event in enumerate(events):
        if event.ts < passed and late is not None:
            late(event)
        heapq.heappush(heap, (event.ts, number, event))
        newest = max(newest, event.ts)
        horizon = newest - lateness
        while heap[0][0] <= horizon:
            found = heapq.heappop(heap)[2]
            passed = max(passed, found.ts)
            yield found
    while heap:
        yield heapq.heappop(heap)[2]


_DELIVERY: Final = re.compile(r"_CloudTrail_[A-Za-z0-9-]+_(\d{8}T\d{4}Z)_[^/\\]*\Z")
"""CloudTrail's file name, ``<account>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<unique>.json.gz``:
the stamp is when the file was delivered."""


def delivery_order(formats: Mapping[str, Format]) -> dict[str, Format]:
    """``formats`` with its CloudTrail files named as CloudTrail names them in the order of
    their delivery stamps (the same stamp: as given); every other file keeps its place.

    A glob over a trail's bucket (``AWSLogs/<account>/CloudTrail/*/…``) sorts by
    region first, so every region's month came before the next region's first
    day; as delivered, every file is within minutes of the files around it.
    """
    stamps = {
        name: found.group(1)
        for name, kind in formats.items()
        if kind == "cloudtrail" and (found := _DELIVERY.search(os.path.basename(name)))
    }
    if len(stamps) < 2:
        return dict(formats)
    ordered = iter(sorted(stamps, key=stamps.__getitem__))  # sorted() is stable
    names = [next(ordered) if name in stamps else name for name in formats]
    return {name: formats[name] for name in names}


def analyze(
    paths: PathLike | Iterable[PathLike],
    fmt: Format | None = None,
    config: DetectorConfig | None = None,
    is_honeytoken: Callable[[str], bool] | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    reorder_seconds: float = 900.0,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> AnalysisReport:
    """Run the default detectors over the logs at ``paths`` (see module docstring).

    ``workers``: parsing processes for large plain line logs (``None``: one
    per core when the line logs add up to ``PARALLEL_MIN_BYTES``; ``0`` or
    ``1``: none). ``progress(n)`` is called as the files are worked through,
    with the bytes (of the files as stored) just done: block by block for a
    plain line log, at its end for a compressed log or a CloudTrail file; the
    calls add up to the files' sizes. Raises ``sources.LogFormatError`` for an
    unreadable or malformed file, one that is not a regular file (a FIFO or a
    pipe: refused, never waited for) and a truncated or corrupt gzip (the
    bounds of ``monitor.sources`` apply: the same error with or without workers).
    """
    files = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    detectors = DetectorSet.default(config, is_honeytoken)
    observe_many = detectors.observe_many
    alerts: list[Alert] = []
    count = 0
    started = time.perf_counter()
    formats = delivery_order({os.fspath(path): fmt or detect_format(path) for path in files})
    skipped = Skipped()
    late: list[AccessEvent] = []
    with _pool(formats, workers) as pool, paused():
        batches = _batches(
            formats, prefix, pool, progress or _ignore, skipped=skipped, decoy=is_honeytoken
        )
        if "cloudtrail" in formats.values():
            ordered = in_time_order(
                itertools.chain.from_iterable(batches), reorder_seconds, late.append
            )
            batches = _chunked(ordered, _BATCH)
        for batch in batches:
            count += len(batch)
            found = observe_many(batch)
            if found:
                alerts.extend(alert for _, alert in found)
    elapsed = time.perf_counter() - started
    return AnalysisReport(
        events=count,
        alerts=tuple(alerts),
        counts=dict(detectors.counts),
        elapsed=elapsed,
        formats=formats,
        skipped_lines=skipped.lines,
        skipped_at=tuple(skipped.where),
        digests=tuple(skipped.digests),
        late_events=len(late),
        duplicate_events=skipped.copies,
    )


def _chunked(events: Iterable[AccessEvent], size: int) -> Iterator[list[AccessEvent]]:
    """``events`` in lists of ``size`` (the last one shorter)."""
    iterator = iter(events)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _ignore(done: int) -> None:
    """No progress report."""


def _batches(
    formats: Mapping[str, Format],
    prefix: str,
    pool: concurrent.futures.Executor | None,
    progress: Callable[[int], None],
    *,
    skipped: Skipped,
    decoy: Callable[[str], bool] | None,
) -> Iterator[list[AccessEvent]]:
    """The events of every file, in order, as lists (a block's worth each); what was passed
    over is noted in ``skipped``; ``decoy``: the honeytoken test (for CloudTrail ARNs)."""
    for name, kind in formats.items():
        plain = kind in LINE_FORMATS and _plain(name)
        if plain and pool is not None:
            yield from _parallel(pool, name, kind, prefix, progress, skipped=skipped)
        elif plain:
            done = 0
            for number, block in line_blocks(name, skipped):
                yield events_of(
                    rows_in_block(
                        kind, block, file=name, line=number, prefix=prefix, skipped=skipped
                    )
                )
                progress(len(block))
                done += len(block)
            if done < (size := file_size(name)):
                progress(size - done)  # the bytes of lines too long, dropped
        else:
            yield from read_batches(name, kind, prefix=prefix, skipped=skipped, decoy=decoy)
            progress(file_size(name))


# -- parallel parsing ---------------------------------------------------------------------------
#
# A file is cut into ranges of whole lines: this process finds each cut (the first ``\n`` at
# or after a multiple of ``BLOCK_BYTES``, reading a few bytes there) and a worker reads its
# range itself (cheaper than sending it) and returns its events and line count, or the
# problem of the first malformed line and where it is in the range. Results are taken in
# file order, so the line number is the lines of the ranges before plus the line in the range.
# No ``\n`` within ``MAX_LINE_BYTES`` after the multiple means a line too long: the range is
# cut there, inside it (so no range is longer than ``BLOCK_BYTES + MAX_LINE_BYTES + 1``),
# its worker skips and notes that line (``rows_in_block``: its last line, cut, is longer than
# ``MAX_LINE_BYTES``), and the rest of the line, up to its ``\n``, is read by no one (this
# process looks for that ``\n`` a little at a time): the next range starts after it, and the
# line count goes on from there.


@dataclass(frozen=True, slots=True)
class _Range:
    """A worker's answer for one range of lines (see the comment above)."""

    rows: list[Row]
    lines: int
    """``\\n`` in the range."""
    problem: str | None = None
    """The first malformed line's problem (then ``rows`` is empty)."""
    line: int = 0
    """That line's number within the range (1 for its first line)."""
    skipped: Skipped | None = None
    """The lines too long the range skipped (numbered within it), if any."""


def _parse_range(
    where: tuple[str, int, int, tuple[int, int]], fmt: Format, prefix: str
) -> _Range | None:
    """Parse one range of whole lines (in a worker); ``None`` if the file is not the same one.

    ``where`` is ``(file name, offset, length, (device, inode))``. The worker
    process does nothing else, so the collector is paused while it builds the
    events (none of them is part of a cycle).
    """
    name = where[0]
    block = read_range(*where)
    if block is None:
        return None
    return _parse_block(block, name, fmt, prefix)


def _parse_block(block: bytes, name: str, fmt: Format, prefix: str) -> _Range:
    """``_Range`` of ``block`` (its first line numbered 1)."""
    skipped = Skipped()
    with paused():
        try:
            rows = rows_in_block(fmt, block, file=name, line=1, prefix=prefix, skipped=skipped)
        except LogFormatError as exc:
            return _Range([], block.count(b"\n"), exc.problem, exc.line or 1)
    return _Range(rows, block.count(b"\n"), skipped=skipped if skipped.lines else None)


def _cuts(descriptor: int, size: int) -> Iterator[tuple[int, int, int]]:
    """``(offset, length, dropped)`` of the ranges of whole lines of the open file (the last
    may lack ``\n``), or of a range cut inside a line too long; ``dropped``: the bytes after
    the range that no range holds (the rest of that line, its ``\n`` included), see the
    comment above."""
    start = 0
    while start < size:
        probe = start + BLOCK_BYTES
        end = limit = min(size, probe + MAX_LINE_BYTES + 1)
        after = end
        while probe < limit:
            found = os.pread(descriptor, min(1 << 16, limit - probe), probe)
            if not found:
                break
            newline = found.find(b"\n")
            if newline >= 0:
                end = after = probe + newline + 1
                break
            probe += len(found)
        else:
            if end < size:  # cut inside a line too long: its rest is dropped
                after = line_end(descriptor, end, size)
        yield start, end - start, after - end
        start = after


def _parallel(
    pool: concurrent.futures.Executor,
    name: str,
    fmt: Format,
    prefix: str,
    progress: Callable[[int], None],
    *,
    skipped: Skipped,
) -> Iterator[list[AccessEvent]]:
    """The events of a plain line log, parsed in ``pool`` (see the comment above).

    This process keeps the file open: the cuts, and any range a worker did
    not parse (a dead pool, or the name now naming another file: rotation),
    are read from the file that was opened, never from the name again.
    """
    descriptor = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO: no wait
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode):  # replaced since it was sniffed
        os.close(descriptor)
        raise LogFormatError("not a regular file", file=name)
    identity = (status.st_dev, status.st_ino)
    window = 2 * max(1, getattr(pool, "_max_workers", 2)) + 2
    pending: collections.deque[_Pending] = collections.deque()
    lines = 0
    try:
        for offset, length, dropped in _cuts(descriptor, status.st_size):
            task = pool.submit(_parse_range, (name, offset, length, identity), fmt, prefix)
            pending.append((offset, length, dropped, task))
            if len(pending) >= window:
                item = pending.popleft()
                found, lines = _take(
                    item, descriptor, name, fmt, prefix, skipped=skipped, lines=lines
                )
                yield found
                progress(item[1] + item[2])
        while pending:
            item = pending.popleft()
            found, lines = _take(item, descriptor, name, fmt, prefix, skipped=skipped, lines=lines)
            yield found
            progress(item[1] + item[2])
    finally:
        for *_, task in pending:
            task.cancel()
        os.close(descriptor)


_Pending = tuple[int, int, int, "concurrent.futures.Future[_Range | None]"]
"""A range in flight: ``(offset, length, dropped, its worker's answer)``."""


def _take(
    item: _Pending,
    descriptor: int,
    name: str,
    fmt: Format,
    prefix: str,
    *,
    skipped: Skipped,
    lines: int,
) -> tuple[list[AccessEvent], int]:
    """The events of a range and the lines up to its end (and the line dropped after it);
    raises its ``LogFormatError``, notes its skipped lines in ``skipped``.

    A range the worker did not parse is read from ``descriptor`` (the file
    ``_parallel`` opened) and parsed here.
    """
    offset, length, dropped, task = item
    try:
        found = task.result()
    except Exception:  # a dead pool or an unreadable file: parse the range here
        found = None
    if found is None:
        found = _parse_block(os.pread(descriptor, length, offset), name, fmt, prefix)
    if found.problem is not None:
        raise LogFormatError(found.problem, file=name, line=lines + found.line)
    if found.skipped is not None:
        skipped.merge(found.skipped, lines)
    return events_of(found.rows), lines + found.lines + (1 if dropped else 0)


@contextlib.contextmanager
def _pool(
    formats: Mapping[str, Format], workers: int | None
) -> Iterator[concurrent.futures.Executor | None]:
    """The parsing pool for ``analyze`` (``None``: parse here)."""
    eligible = [name for name, kind in formats.items() if kind in LINE_FORMATS and _plain(name)]
    # One worker more than cores: this process runs the detectors and waits on ranges in
    # turn, and a spare worker keeps the cores busy meanwhile (+2.5% on the analyze data
    # set, 6 interleaved rounds on 2 cores: 201,700 against 196,800 events/s).
    workers = worker_count(workers, eligible, extra=1)
    if workers < 2 or not eligible:
        yield None
        return
    with process_pool(workers) as pool:
        yield pool


def _plain(name: str) -> bool:
    try:
        return not is_compressed(name)
    except OSError:
        return False  # reported when it is read
