"""Parallel ``analyze``: worker processes parse ranges of a line log, the report is the same.

``analyze`` cuts a plain line log (ours, Vault) into ranges of whole lines of about
``BLOCK_BYTES`` (the name ``_cuts`` reads in ``monitor.analyze``), parses them in worker
processes and feeds the events to the detectors in file order. Here ``BLOCK_BYTES`` is made
small so that a log of a few MB is cut into dozens of ranges, and every report of
``workers=2`` is compared with ``workers=0`` (everything parsed in this process).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gzip
import multiprocessing
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from medsecrets.monitor import analyze as analyze_module
from medsecrets.monitor import sources
from medsecrets.monitor.analyze import AnalysisReport, analyze
from medsecrets.monitor.sources import LogFormatError, read_events, rows_in_block
from medsecrets.testing.anomalies import generate, write

SMALL = 48 << 10
"""``BLOCK_BYTES`` for these tests: a log of a few MB becomes dozens of ranges."""
FORMATS = ("ours", "vault")


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int]]:
    """``format → (log file, events in it)``, written once for the module (not modified)."""
    records, labels = generate(31, normal=1500, per_kind=6)
    found = {}
    for fmt in FORMATS:
        (path,) = write(tmp_path_factory.mktemp(fmt), fmt, records, labels)
        assert path.stat().st_size < 6 << 20  # Vault entries as Vault writes them: ~1.5 KB
        found[fmt] = (path, len(records))
    return found


@pytest.fixture
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> int:
    """``analyze`` cuts files into ``SMALL``-byte ranges (it imported ``BLOCK_BYTES``)."""
    monkeypatch.setattr(analyze_module, "BLOCK_BYTES", SMALL)
    return SMALL


def ranges(path: Path) -> list[tuple[int, int, int]]:
    """The ranges ``analyze`` hands to workers, checked to tile the file in whole lines."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        found = list(analyze_module._cuts(descriptor, path.stat().st_size))
    finally:
        os.close(descriptor)
    data = path.read_bytes()
    position = 0
    for offset, length, dropped in found:
        assert offset == position
        assert length >= SMALL or offset + length == len(data)
        assert dropped == 0  # no line too long here
        position = offset + length
        if position < len(data):
            assert data[position - 1 : position] == b"\n"
    assert position == len(data)
    return found


def summary(report: AnalysisReport) -> tuple[int, list[dict[str, object]], dict[str, int]]:
    """What must not depend on how the logs were parsed: events, every alert field, counts."""
    return report.events, [dataclasses.asdict(a) for a in report.alerts], dict(report.counts)


def copy(source: Path, target: Path, data: bytes | None = None) -> Path:
    target.write_bytes(source.read_bytes() if data is None else data)
    return target


@pytest.mark.parametrize("fmt", FORMATS)
def test_two_workers_give_the_report_of_one_process(
    logs: dict[str, tuple[Path, int]],
    small_ranges: int,
    is_honeytoken: Callable[[str], bool],
    fmt: str,
) -> None:
    path, records = logs[fmt]
    assert len(ranges(path)) > 20
    serial = analyze(path, workers=0, is_honeytoken=is_honeytoken)
    assert serial.events == records
    assert len({a.detector for a in serial.alerts}) >= 5
    parallel = analyze(path, workers=2, is_honeytoken=is_honeytoken)
    assert summary(parallel) == summary(serial)
    assert parallel.formats == serial.formats == {str(path): fmt}
    # the format given rather than sniffed, and more workers than cores
    assert summary(analyze([path], fmt, workers=3, is_honeytoken=is_honeytoken)) == summary(serial)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", FORMATS)
def test_several_files_are_read_in_the_order_given(
    tmp_path: Path,
    logs: dict[str, tuple[Path, int]],
    small_ranges: int,
    is_honeytoken: Callable[[str], bool],
    fmt: str,
) -> None:
    path, records = logs[fmt]
    data = path.read_bytes()
    half = data.index(b"\n", len(data) // 2) + 1
    first = copy(path, tmp_path / "1.log", data[:half])
    second = copy(path, tmp_path / "2.log", data[half:])
    whole = analyze(path, workers=0, is_honeytoken=is_honeytoken)
    parts = analyze([first, second], workers=2, is_honeytoken=is_honeytoken)
    assert summary(parts) == summary(whole)
    assert parts.events == records
    assert list(parts.formats) == [str(first), str(second)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_gzip_log_is_read_here_and_agrees(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    logs: dict[str, tuple[Path, int]],
    small_ranges: int,
    is_honeytoken: Callable[[str], bool],
    fmt: str,
) -> None:
    path, _ = logs[fmt]
    packed = tmp_path / f"{fmt}.log.gz"
    packed.write_bytes(gzip.compress(path.read_bytes(), compresslevel=1))
    plain = copy(path, tmp_path / "plain.log")
    serial = analyze(path, workers=0, is_honeytoken=is_honeytoken)

    monkeypatch.setattr(sources, "BLOCK_BYTES", SMALL)  # the gzip log is read in many blocks
    assert summary(analyze(packed, workers=2, is_honeytoken=is_honeytoken)) == summary(serial)
    # a gzip file among plain ones: the plain ones in workers, the gzip one here, in order
    both = analyze([packed, plain], workers=2, is_honeytoken=is_honeytoken)
    twice = analyze([path, plain], workers=0, is_honeytoken=is_honeytoken)
    assert summary(both) == summary(twice)
    assert both.events == 2 * serial.events


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_last_line_without_newline_is_read(
    tmp_path: Path,
    logs: dict[str, tuple[Path, int]],
    small_ranges: int,
    is_honeytoken: Callable[[str], bool],
    fmt: str,
) -> None:
    path, records = logs[fmt]
    data = path.read_bytes()
    assert data.endswith(b"}\n")
    cut = copy(path, tmp_path / "cut.log", data[:-1])
    offset, length, _ = ranges(cut)[-1]
    assert offset + length == len(data) - 1  # the last range ends without "\n"
    reference = analyze(path, workers=0, is_honeytoken=is_honeytoken)
    serial = analyze(cut, workers=0, is_honeytoken=is_honeytoken)
    parallel = analyze(cut, workers=2, is_honeytoken=is_honeytoken)
    assert summary(serial) == summary(parallel) == summary(reference)
    assert serial.events == records


def break_line_in_range(path: Path, target: Path, which: int) -> int:
    """Copy ``path`` to ``target`` with the middle line of range ``which`` (0-based) replaced
    by garbage of the same length (so the ranges stay the same); that line's number."""
    data = path.read_bytes()
    before = ranges(path)
    offset, length, _ = before[which]
    starts = [offset] + [
        offset + i + 1 for i, byte in enumerate(data[offset : offset + length - 1]) if byte == 10
    ]
    assert len(starts) >= 3
    start = starts[len(starts) // 2]
    end = data.index(b"\n", start)
    broken = data[:start] + b"#" * (end - start) + data[end:]
    copy(path, target, broken)
    assert ranges(target) == before
    return data.count(b"\n", 0, start) + 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_malformed_line_in_the_third_range_is_named_the_same_by_workers_and_here(
    tmp_path: Path, logs: dict[str, tuple[Path, int]], small_ranges: int, fmt: str
) -> None:
    path, _ = logs[fmt]
    broken = tmp_path / "broken.log"
    number = break_line_in_range(path, broken, 2)
    assert number > 100

    found = []
    for read in (
        lambda: analyze(broken, workers=2),
        lambda: analyze([broken], fmt, workers=2),  # type: ignore[arg-type]
        lambda: analyze(broken, workers=0),
        lambda: list(read_events(broken)),
    ):
        with pytest.raises(LogFormatError) as caught:
            read()
        found.append((caught.value.file, caught.value.line, caught.value.problem))
    assert found == [(str(broken), number, found[0][2])] * len(found)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_malformed_line_in_a_second_file_is_numbered_within_that_file(
    tmp_path: Path, logs: dict[str, tuple[Path, int]], small_ranges: int, fmt: str
) -> None:
    path, _ = logs[fmt]
    first = copy(path, tmp_path / "1.log")
    second = tmp_path / "2.log"
    number = break_line_in_range(path, second, 2)
    for workers in (2, 0):
        with pytest.raises(LogFormatError) as caught:
            analyze([first, second], workers=workers)
        assert (caught.value.file, caught.value.line) == (str(second), number)


def test_a_worker_process_parses_its_range_itself(
    logs: dict[str, tuple[Path, int]], small_ranges: int
) -> None:
    """The worker side alone, in a real process pool: each range's rows are those of the
    block read here, and a range of a file that is not the one cut gives ``None``."""
    path, _ = logs["ours"]
    name = str(path)
    status = os.stat(name)
    identity = (status.st_dev, status.st_ino)
    data = path.read_bytes()
    cuts = ranges(path)[:4]
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing inherited
    with concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        tasks = [
            pool.submit(
                analyze_module._parse_range, (name, offset, length, identity), "ours", "medessence"
            )
            for offset, length, _ in cuts
        ]
        other = pool.submit(
            analyze_module._parse_range,
            (name, 0, cuts[0][1], (identity[0], identity[1] + 1)),
            "ours",
            "medessence",
        )
        results = [task.result(timeout=60) for task in tasks]
        assert other.result(timeout=60) is None
    for (offset, length, _), result in zip(cuts, results, strict=True):
        assert result is not None
        block = data[offset : offset + length]
        assert result.problem is None
        assert result.lines == block.count(b"\n")
        assert result.rows == rows_in_block("ours", block, file=name)
        assert result.rows


@pytest.mark.parametrize("workers", [0, 2])
def test_progress_adds_up_to_the_files_sizes(
    logs: dict[str, tuple[Path, int]],
    small_ranges: int,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    workers: int,
    is_honeytoken: Callable[[str], bool],
) -> None:
    monkeypatch.setattr(sources, "BLOCK_BYTES", SMALL)  # the serial reader's blocks, too
    plain, _ = logs["ours"]
    packed = tmp_path / "ours.log.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes(), compresslevel=1))
    records, labels = generate(5, normal=200, per_kind=1)
    trails = write(tmp_path / "trail", "cloudtrail", records, labels)
    done: list[int] = []
    report = analyze(
        [plain, packed], "ours", None, is_honeytoken, workers=workers, progress=done.append
    )
    assert sum(done) == plain.stat().st_size + packed.stat().st_size
    assert len(done) > 10  # block by block for the plain log
    assert done[-1] == packed.stat().st_size  # a compressed log counts at its end
    assert report.events > 0
    done.clear()
    analyze(trails, "cloudtrail", None, is_honeytoken, progress=done.append)
    assert done == [trail.stat().st_size for trail in trails]  # a CloudTrail file at its end


def test_a_log_rotated_during_the_analysis_is_read_from_the_file_that_was_opened(
    logs: dict[str, tuple[Path, int]],
    small_ranges: int,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    is_honeytoken: Callable[[str], bool],
) -> None:
    source, _ = logs["ours"]
    path = copy(source, tmp_path / "audit.log")
    expected = summary(analyze(path, "ours", None, is_honeytoken, workers=0))
    other = copy(logs["vault"][0], tmp_path / "other.log")  # a different log takes the name
    real_cuts = analyze_module._cuts

    def rotating_cuts(descriptor: int, size: int) -> Iterator[tuple[int, int, int]]:
        for number, cut in enumerate(real_cuts(descriptor, size)):
            if number == 1:
                os.replace(other, path)  # workers now find another file at the name
            yield cut

    monkeypatch.setattr(analyze_module, "_cuts", rotating_cuts)
    assert summary(analyze(path, "ours", None, is_honeytoken, workers=2)) == expected
