"""Hostile and mistaken input to ``audit analyze``: ``LogFormatError`` naming the file (and
line), never a crash, a hang or unbounded memory, and the same error from worker processes as
from one process.

Every file is written here, into ``tmp_path``: deep nesting, truncated and corrupt gzip, lines
longer than ``MAX_LINE_BYTES``, FIFOs and pipes, one format read as another, malformed
CloudTrail documents and times that only look like times.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from medsecrets.audit.record import GENESIS, AuditEvent, Salter, render_line
from medsecrets.cli.app import main
from medsecrets.monitor import analyze as analyze_module
from medsecrets.monitor import sources
from medsecrets.monitor.analyze import analyze
from medsecrets.monitor.events import parse_time
from medsecrets.monitor.sources import (
    MAX_LINE_BYTES,
    MAX_NESTING,
    LogFormatError,
    detect_format,
    is_compressed,
    line_blocks,
    read_cloudtrail,
    read_events,
    rows_in_block,
)
from medsecrets.workers import read_range

T0 = dt.datetime(2025, 3, 4, 10, 15, 30, 250000, tzinfo=dt.UTC)
SALTER = Salter(b"h" * 32)
SMALL = 16 << 10
"""``analyze``'s range size here: a log of a few hundred KB becomes dozens of ranges."""


def record_line(number: int, **fields: object) -> bytes:
    """A response record line as the server writes it."""
    event = AuditEvent(
        kind="response",
        time=T0 + dt.timedelta(seconds=number),
        request_id=f"r{number}",
        principal="svc-billing",
        token="tok",
        auth="token",
        remote="10.30.4.17",
        user_agent="medsecrets-sdk/0.1",
        operation="secrets.read",
        path="medessence/production/database/primary",
        environment="production",
        category="database",
        status=200,
        data={"value": "v"},
        **fields,  # type: ignore[arg-type]
    )
    line, _ = render_line(event, seq=number, prev=GENESIS, node="n1", device="file", salter=SALTER)
    return line


def vault_line(number: int, kind: str = "response", **changes: object) -> bytes:
    entry: dict[str, object] = {
        "time": f"2025-03-04T10:{number // 60 % 60:02d}:{number % 60:02d}.250000123Z",
        "type": kind,
        "auth": {"display_name": "approle", "metadata": {"role_name": "billing"}},
        "request": {
            "id": f"v{number}",
            "operation": "read",
            "mount_point": "secret/",
            "path": "secret/data/medessence/production/database",
            "remote_address": "10.30.4.17",
        },
        **changes,
    }
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


def trail_event(**changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "eventVersion": "1.09",
        "userIdentity": {"type": "AssumedRole", "arn": "arn:aws:sts::1:assumed-role/app/x"},
        "eventTime": "2025-03-04T10:15:30Z",
        "eventSource": "secretsmanager.amazonaws.com",
        "eventName": "GetSecretValue",
        "sourceIPAddress": "10.30.4.17",
        "requestParameters": {"secretId": "medessence/production/database"},
        "eventID": "e-1",
    }
    event.update(changes)
    return event


def good_lines(fmt: str, count: int, start: int = 1) -> list[bytes]:
    make = record_line if fmt == "ours" else vault_line
    return [make(n) for n in range(start, start + count)]


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path


def error_of(read: Callable[[], object]) -> tuple[str | None, int | None, str]:
    with pytest.raises(LogFormatError) as caught:
        read()
    return caught.value.file, caught.value.line, caught.value.problem


@pytest.fixture
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> int:
    """``analyze`` cuts files into ``SMALL``-byte ranges, and reads them in ``SMALL`` blocks."""
    monkeypatch.setattr(analyze_module, "BLOCK_BYTES", SMALL)
    monkeypatch.setattr(sources, "BLOCK_BYTES", SMALL)
    return SMALL


def every_reader(path: Path, fmt: str) -> list[tuple[str | None, int | None, str]]:
    """The error of each way of reading ``path``: sniffed or not, in workers or here."""
    return [
        error_of(read)
        for read in (
            lambda: list(read_events(path, fmt)),  # type: ignore[arg-type]
            lambda: analyze([path], fmt, workers=0),  # type: ignore[arg-type]
            lambda: analyze([path], fmt, workers=2),  # type: ignore[arg-type]
        )
    ]


# --- 1. deep nesting -----------------------------------------------------------------------------

DEEP = {
    "an array": b"[" * 100_000 + b"\n",
    "an object holding arrays": b'{"a":' + b"[" * 100_000 + b"\n",
    "closed arrays, then text": b"[" * 5000 + b"]" * 5000 + b" #\n",
}


@pytest.mark.parametrize("fmt", ["ours", "vault"])
@pytest.mark.parametrize("shape", list(DEEP))
def test_deep_nesting_is_a_malformed_line_not_a_recursion_error(
    tmp_path: Path, small_ranges: int, fmt: str, shape: str
) -> None:
    lines = good_lines(fmt, 200)
    lines.insert(150, DEEP[shape])
    path = write(tmp_path / "deep.log", lines)
    found = every_reader(path, fmt)
    assert found == [(str(path), 151, found[0][2])] * 3
    assert found[0][2].startswith("not a JSON audit")


def padded(line: bytes, depth: int) -> bytes:
    """``line`` (a JSON object) with a member of ``depth - 1`` nested arrays (``depth``
    levels) and text after it, so that the standard library reads it (orjson refuses it)."""
    pad = b',"pad":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    return line.rstrip(b"\n")[:-1] + pad + b" #\n"


@pytest.mark.parametrize("fmt", ["ours", "vault"])
def test_the_nesting_limit_is_the_same_in_every_process(
    tmp_path: Path, small_ranges: int, fmt: str
) -> None:
    """A line the standard library reads is refused past ``MAX_NESTING`` levels (its own
    limit depends on the stack depth of the process that reads it)."""
    lines = good_lines(fmt, 200)
    deepest = padded(lines[100], MAX_NESTING)
    assert sources._nesting(deepest) == MAX_NESTING
    assert len(rows_in_block(fmt, deepest, file="x")) == 1  # type: ignore[arg-type]
    lines[100] = deepest
    too_deep = padded(lines[120], MAX_NESTING + 1)
    assert sources._nesting(too_deep) == MAX_NESTING + 1
    lines[120] = too_deep
    path = write(tmp_path / "deep.log", lines)
    found = every_reader(path, fmt)
    assert found == [(str(path), 121, found[0][2])] * 3


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = json.dumps({"a": "[" * 2000, "b": ["{" * 2000, '\\"[[[']}).encode()
    assert sources._nesting(text) == 2
    assert sources._object(text + b" #") == json.loads(text)  # read by the standard library


def test_a_deeply_nested_cloudtrail_document_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "trail.json"
    path.write_bytes(
        json.dumps(trail_event()).encode() + b"\n\n" + b'{"Records":' + b"[" * 100_000 + b"\n"
    )
    assert error_of(lambda: list(read_cloudtrail(path)))[:2] == (str(path), 3)
    alone = tmp_path / "alone.json"
    alone.write_bytes(b"[" * 100_000)
    assert error_of(lambda: analyze(alone, "cloudtrail"))[:2] == (str(alone), 1)


# --- 2. truncated and corrupt gzip ---------------------------------------------------------------


def damaged_gzips(data: bytes) -> dict[str, bytes]:
    packed = gzip.compress(data, compresslevel=6)
    crc = bytearray(packed)
    crc[-8] ^= 0xFF  # the CRC-32 of the trailer
    deflate = bytearray(packed)
    for at in range(len(deflate) // 2, len(deflate) // 2 + 64):
        deflate[at] ^= 0x55  # the compressed data itself
    return {
        "truncated": packed[: len(packed) // 2],
        "truncated in its trailer": packed[:-3],
        "bad CRC": bytes(crc),
        "corrupt deflate data": bytes(deflate),
    }


@pytest.mark.parametrize(
    "damage", ["truncated", "truncated in its trailer", "bad CRC", "corrupt deflate data"]
)
@pytest.mark.parametrize("fmt", ["ours", "vault", "cloudtrail"])
def test_a_damaged_gzip_names_the_file(tmp_path: Path, damage: str, fmt: str) -> None:
    if fmt == "cloudtrail":
        data = json.dumps(
            {"Records": [trail_event(eventID=f"e{n}", pad="x" * n) for n in range(400)]}
        ).encode()
    else:
        data = b"".join(good_lines(fmt, 400))
    path = tmp_path / f"{fmt}.log.gz"
    path.write_bytes(damaged_gzips(data)[damage])
    for read in (
        lambda: list(read_events(path, fmt)),  # type: ignore[arg-type]
        lambda: analyze([path], workers=2),  # sniffed (or refused while sniffing)
    ):
        found = error_of(read)
        assert found[0] == str(path)
        assert found[2] in ("truncated or corrupt gzip", "not a JSON audit record"), found


def test_a_gzip_truncated_in_its_first_bytes_is_refused_while_sniffing(tmp_path: Path) -> None:
    path = tmp_path / "short.gz"
    path.write_bytes(gzip.compress(b"".join(good_lines("ours", 50)))[:40])
    assert error_of(lambda: detect_format(path)) == (str(path), None, "truncated or corrupt gzip")


def test_damaged_gzip_through_the_cli_is_one_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.jsonl.gz"
    path.write_bytes(damaged_gzips(b"".join(good_lines("ours", 400)))["truncated"])
    capsys.readouterr()
    assert main(["audit", "analyze", str(path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [f"error: {path}: truncated or corrupt gzip"]


# --- 3. lines too long, documents too large -----------------------------------------------------


def skips_of(path: Path, fmt: str) -> list[tuple[int, int, list[tuple[str, int]]]]:
    """``(events, skipped lines, where)`` of each way of reading ``path``: the reader, and
    ``analyze`` here and in workers."""
    found = []
    skipped = sources.Skipped()
    events = list(read_events(path, fmt, skipped=skipped))  # type: ignore[arg-type]
    found.append((len(events), skipped.lines, skipped.where))
    for workers in (0, 2):
        report = analyze([path], fmt, workers=workers)  # type: ignore[arg-type]
        found.append((report.events, report.skipped_lines, list(report.skipped_at)))
    return found


def test_a_gzip_bomb_of_one_line_is_skipped_reading_a_block_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One line of 64 MiB (64 KiB compressed), then a record: the line is dropped as it is
    read (never held: no read longer than a block), noted, and the record after it read."""
    path = tmp_path / "bomb.log.gz"
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"x" * (1 << 20)
    path.write_bytes(
        b"".join(compressor.compress(chunk) for _ in range(64))
        + compressor.compress(b"\n" + record_line(1))
        + compressor.flush()
    )
    assert path.stat().st_size < 1 << 20
    sizes: list[int] = []
    real = sources.read_log

    def counting(stream: object, size: int, name: str) -> bytes:
        data = real(stream, size, name)  # type: ignore[arg-type]
        sizes.append(len(data))
        return data

    monkeypatch.setattr(sources, "read_log", counting)
    monkeypatch.setattr(sources, "BLOCK_BYTES", 256 << 10)
    skipped = sources.Skipped()
    events = list(read_events(path, "ours", skipped=skipped))
    assert [event.request_id for event in events] == ["r1"]
    assert (skipped.lines, skipped.where) == (1, [(str(path), 1)])
    assert max(sizes) <= 256 << 10


def test_line_blocks_are_bounded_and_skip_the_long_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "BLOCK_BYTES", 64 << 10)
    lines = good_lines("ours", 30)
    lines.insert(20, b"y" * (3 * MAX_LINE_BYTES) + b"\n")
    path = write(tmp_path / "long.log", lines)
    skipped = sources.Skipped()
    seen = []
    for number, block in line_blocks(path, skipped):
        assert len(block) <= sources.BLOCK_BYTES + MAX_LINE_BYTES
        assert b"y" * 1000 not in block  # the long line is dropped, not handed on
        seen.append((number, block.count(b"\n")))
    assert sum(count for _, count in seen) == 30
    assert (skipped.lines, skipped.where) == (1, [(str(path), 21)])
    assert seen[-1][0] + seen[-1][1] - 1 == 31  # the lines after it keep their numbers


@pytest.mark.parametrize("fmt", ["ours", "vault"])
@pytest.mark.parametrize("newline", [True, False], ids=["ended", "at the end of the file"])
def test_a_long_line_is_skipped_and_named_the_same_by_workers_and_here(
    tmp_path: Path, small_ranges: int, fmt: str, newline: bool
) -> None:
    lines = good_lines(fmt, 300)
    long = b'{"kind":"response","pad":"' + b"z" * (MAX_LINE_BYTES + 10) + b'"}'
    if newline:
        lines.insert(250, long + b"\n")
        lines.append(b"not json\n")  # the lines after it are read, and numbered, as before
        expected = 251
    else:
        lines.append(long)
        expected = 301
    path = write(tmp_path / "long.log", lines)
    if newline:
        assert [found[:2] for found in every_reader(path, fmt)] == [(str(path), 302)] * 3
        lines.pop()
        write(path, lines)
    assert skips_of(path, fmt) == [(300, 1, [(str(path), expected)])] * 3
    # a line of exactly MAX_LINE_BYTES is read (here as a malformed line, named as such)
    lines[expected - 1] = b"#" * MAX_LINE_BYTES + (b"\n" if newline else b"")
    write(path, lines)
    found = every_reader(path, fmt)
    assert found == [(str(path), expected, found[0][2])] * 3


@pytest.mark.parametrize("fmt", ["ours", "vault"])
def test_an_earlier_malformed_line_in_the_same_range_wins_over_a_long_line(
    tmp_path: Path, small_ranges: int, fmt: str
) -> None:
    lines = good_lines(fmt, 300)
    lines.insert(200, b"w" * (2 * MAX_LINE_BYTES) + b"\n")
    lines.insert(199, b"not json\n")  # the line just before it, in the same range
    path = write(tmp_path / "both.log", lines)
    found = every_reader(path, fmt)
    assert [where[:2] for where in found] == [(str(path), 200)] * 3
    assert "longer" not in found[0][2]


@pytest.mark.parametrize("fmt", ["ours", "vault"])
def test_several_long_lines_are_each_skipped_and_counted(
    tmp_path: Path, small_ranges: int, fmt: str
) -> None:
    lines = good_lines(fmt, 400)
    for at in (350, 300, 120, 119, 5):
        lines.insert(at, b"L" * (MAX_LINE_BYTES + 1 + at) + b"\n")
    path = write(tmp_path / "many.log", lines)
    where = [(str(path), n) for n, line in enumerate(lines, 1) if line[:1] == b"L"]
    assert len(where) == 5
    assert skips_of(path, fmt) == [(400, 5, where)] * 3


def test_ranges_cut_inside_a_long_line_stay_bounded(tmp_path: Path, small_ranges: int) -> None:
    path = tmp_path / "one-line.log"
    path.write_bytes(b"v" * (4 * MAX_LINE_BYTES) + b"\n" + record_line(1))
    descriptor = os.open(path, os.O_RDONLY)
    try:
        cuts = list(analyze_module._cuts(descriptor, path.stat().st_size))
    finally:
        os.close(descriptor)
    assert max(length for _, length, _ in cuts) <= SMALL + MAX_LINE_BYTES + 1
    assert sum(length + dropped for _, length, dropped in cuts) == path.stat().st_size
    assert skips_of(path, "ours") == [(1, 1, [(str(path), 1)])] * 3


def test_a_long_vault_login_does_not_blind_the_analysis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unauthenticated login with a large (HMAC'd) body makes a Vault line over 1 MiB: it
    is skipped and reported (a warning, ``skipped_lines``), and the reads after it alert."""
    hashed = "hmac-sha256:" + "ab" * 32
    body = {f"k{i:06d}": hashed for i in range(16_000)}
    login = vault_line(
        0,
        auth={},
        request={"id": "big", "operation": "update", "path": "auth/userpass/login/x",
                 "mount_point": "auth/userpass/", "data": body, "remote_address": "203.0.113.9"},
        error="invalid username or password",
    )  # fmt: skip
    assert len(login) > MAX_LINE_BYTES
    reads = [
        vault_line(
            60 + n,
            request={
                "id": f"m{n}",
                "operation": "read",
                "mount_point": "secret/",
                "path": f"secret/data/medessence/production/database/s{n}",
                "remote_address": "203.0.113.9",
            },
        )
        for n in range(60)
    ]
    path = write(tmp_path / "vault.log", [vault_line(1), login, *reads])
    capsys.readouterr()
    assert main(["audit", "analyze", "--format", "vault", str(path), "-o", "json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert (data["events"], data["skipped_lines"]) == (61, 1)
    assert data["counts"]["rate"] >= 1 and data["counts"]["bulk"] >= 1
    assert f"{path}:2" in err and "skipped" in err


def test_a_cloudtrail_file_larger_than_the_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "trail.json.gz"
    records = [trail_event(eventID=f"e{n}") for n in range(50)]
    path.write_bytes(gzip.compress(json.dumps({"Records": records}).encode()))
    assert len(list(read_cloudtrail(path))) == 50
    monkeypatch.setattr(sources, "MAX_DOCUMENT_BYTES", 4096)
    file, line, problem = error_of(lambda: list(read_cloudtrail(path)))
    assert (file, line) == (str(path), None)
    assert problem.startswith("larger than 4096 bytes")


# --- 4. FIFOs, pipes and other files that are not regular files --------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "fifo.log"
    os.mkfifo(path)
    yield path


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fmt", [None, "ours", "vault", "cloudtrail"])
def test_a_fifo_without_a_writer_is_refused_not_waited_for(fifo: Path, fmt: str | None) -> None:
    problem = error_of(lambda: analyze([fifo], fmt, workers=2))  # type: ignore[arg-type]
    assert problem[:2] == (str(fifo), None)
    assert problem[2].startswith("not a regular file")
    assert error_of(lambda: list(read_events(fifo, fmt)))[2] == problem[2]  # type: ignore[arg-type]
    assert error_of(lambda: is_compressed(fifo))[2] == problem[2]


@pytest.mark.timeout(60)
def test_a_fifo_with_a_writer_is_refused_before_anything_is_read(
    fifo: Path, tmp_path: Path
) -> None:
    data = b"".join(good_lines("ours", 20))
    written: list[int] = []

    def writer() -> None:
        try:
            with fifo.open("wb") as out:  # blocks until a reader opens the FIFO (or never)
                written.append(out.write(data))
        except OSError:
            written.append(-1)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(0.2)  # the writer waits for a reader
    assert error_of(lambda: analyze([fifo], "ours", workers=0))[2].startswith("not a regular file")
    time.sleep(0.2)
    assert written == []  # the FIFO was never opened: the writer still waits
    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # let the writer go, if it waits
    thread.join(10)


@pytest.mark.timeout(60)
def test_a_pipe_is_refused_rather_than_read_in_part(tmp_path: Path) -> None:
    """``analyze <(cat log)``: the file is a pipe, which cannot be read twice."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"".join(good_lines("ours", 20)))
        path = Path(f"/dev/fd/{read_end}")
        for fmt in (None, "ours", "cloudtrail"):
            found = error_of(lambda: analyze([path], fmt, workers=0))  # noqa: B023
            assert found[:2] == (str(path), None)
            assert found[2].startswith("not a regular file")
        assert len(os.read(read_end, 1 << 20)) > 0  # nothing was consumed
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    assert error_of(lambda: analyze([tmp_path], "ours"))[2].startswith("not a regular file")


@pytest.mark.timeout(60)
def test_a_fifo_through_the_cli_is_one_usage_error(
    fifo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["audit", "analyze", "--format", "ours", str(fifo)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1
    assert err[0].startswith(f"error: {fifo}: not a regular file")


@pytest.mark.timeout(60)
def test_a_worker_finding_a_fifo_at_the_name_does_not_wait(fifo: Path, tmp_path: Path) -> None:
    regular = tmp_path / "regular.log"
    regular.write_bytes(b"x\n")
    status = regular.stat()
    assert read_range(str(fifo), 0, 2, (status.st_dev, status.st_ino)) is None


# --- 5. one format read as another ---------------------------------------------------------------


def test_each_format_read_as_another_is_refused_on_its_first_line(tmp_path: Path) -> None:
    ours = write(tmp_path / "ours.log", good_lines("ours", 5))
    vault = write(tmp_path / "vault.log", [vault_line(1, "request"), *good_lines("vault", 5)])
    trail = tmp_path / "trail.json"
    trail.write_text(json.dumps({"Records": [trail_event()]}))
    trail_lines = tmp_path / "trail.jsonl"
    trail_lines.write_text(json.dumps(trail_event()) + "\n")
    cases = [
        (vault, "ours", "not one of our audit records"),
        (trail, "ours", "not one of our audit records"),
        (trail_lines, "ours", "not one of our audit records"),
        (ours, "vault", "not a Vault audit entry"),
        (trail, "vault", "not a Vault audit entry"),
        (ours, "cloudtrail", "not a CloudTrail log"),
        (vault, "cloudtrail", "not a CloudTrail log"),
    ]
    for path, fmt, problem in cases:
        for workers in (0, 2):
            found = error_of(lambda: analyze([path], fmt, workers=workers))  # type: ignore[arg-type]  # noqa: B023
            assert found[:2] == (str(path), 1), (path, fmt)
            assert found[2].startswith(problem), (path, fmt, found)


def test_a_record_without_kind_but_with_seq_and_hash_is_still_ours(tmp_path: Path) -> None:
    line = json.loads(record_line(1))
    del line["kind"]
    path = write(tmp_path / "ours.log", [json.dumps(line).encode() + b"\n"])
    assert [e.request_id for e in read_events(path, "ours")] == ["r1"]
    del line["hash"]
    write(path, [json.dumps(line).encode() + b"\n"])
    assert error_of(lambda: list(read_events(path, "ours")))[1:] == (
        1,
        "not one of our audit records (no kind, seq and hash)",
    )


def test_a_vault_entry_of_another_type_is_skipped_and_one_without_is_refused(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path / "vault.log", [vault_line(1), vault_line(2, "future-type"), vault_line(3)]
    )
    assert [e.request_id for e in read_events(path, "vault")] == ["v1", "v3"]
    write(path, [vault_line(1), vault_line(2, type=None)])
    assert error_of(lambda: list(read_events(path, "vault")))[1] == 2


# --- 6. malformed CloudTrail ---------------------------------------------------------------------

NOT_CLOUDTRAIL = {
    "Records an object": {"Records": {"0": {}}},
    "Records text": {"Records": "none"},
    "Records null": {"Records": None},
    "a list of events": [{"Records": []}],
    "a number": 3,
    "an object of something else": {"awsAccountId": "1", "digestStartTime": "x"},
    "an envelope of nothing": {"detail": {"state": "running"}},
}


@pytest.mark.parametrize("shape", list(NOT_CLOUDTRAIL))
def test_a_document_that_is_no_cloudtrail_shape_is_refused(tmp_path: Path, shape: str) -> None:
    path = tmp_path / "trail.json"
    path.write_text(json.dumps(NOT_CLOUDTRAIL[shape]))
    found = error_of(lambda: analyze([path], "cloudtrail"))
    assert found[:2] == (str(path), 1)
    assert found[2].startswith("not a CloudTrail log")


def test_a_record_that_is_not_an_object_is_refused_by_its_number(tmp_path: Path) -> None:
    path = tmp_path / "trail.json"
    path.write_text(json.dumps({"Records": [trail_event(), "x"]}, indent=2))
    assert error_of(lambda: list(read_cloudtrail(path)))[1:] == (
        1,
        "not a CloudTrail event (record 2 of Records)",
    )
    path.write_text(json.dumps({"Records": [trail_event(), trail_event(eventTime="soon")]}))
    assert error_of(lambda: list(read_cloudtrail(path)))[2] == "bad time (record 2 of Records)"


def test_a_bad_time_in_a_file_of_one_event_per_line_names_its_line(tmp_path: Path) -> None:
    events = [trail_event(eventID=f"e{n}") for n in range(6)]
    events[3]["eventTime"] = "2025-03-04T10:-1:30Z"
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    assert error_of(lambda: analyze([path], "cloudtrail")) == (str(path), 4, "bad time")
    path.write_text(json.dumps(events[3]))  # one event alone: read as one document
    assert error_of(lambda: analyze([path], "cloudtrail")) == (str(path), 1, "bad time")


def test_other_eventbridge_events_are_skipped_and_cloudtrail_ones_read(tmp_path: Path) -> None:
    path = tmp_path / "bus.jsonl"
    envelopes = [
        {"detail-type": "EC2 Instance State-change Notification", "detail": {"state": "on"}},
        {"detail-type": "AWS API Call via CloudTrail", "detail": trail_event(eventID="e-7")},
    ]
    path.write_text("".join(json.dumps(e) + "\n" for e in envelopes))
    assert [e.request_id for e in read_cloudtrail(path)] == ["e-7"]


# --- 7. times that only look like times ----------------------------------------------------------

NOT_TIMES = [
    "2025-03-03T09:-1:30Z",
    "2025-03-03T09:15:1e1Z",
    "2025-03-03T09:15:+1Z",
    "2025-03-03T09:15: 1Z",
    "2025-03-03T09:15:1_0Z",
    "2025-03-03T09:15:30.1_0Z",
    "2025-03-03T09:15:30.5e1Z",
    "2025-03-03T09:75:10Z",
    "2025-03-03T09:15:61Z",
    "2025-03-03T09:15:\u0663\u0660Z",  # Arabic-Indic digits: float() reads them
    "2025-03-03T09:1\u0665:30Z",
    "2025-03-03T09:15:.5Z",
    "2025-03-03T09:15:nanZ",
]


@pytest.mark.parametrize("text", NOT_TIMES)
def test_parse_time_refuses_what_is_not_an_iso_time(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)
    parse_time("2025-03-03T09:15:30Z")  # the minute cached, and the check still made
    with pytest.raises(ValueError):
        parse_time(text)


@pytest.mark.parametrize(
    "text",
    [
        "2025-03-04T10:15:30.250000Z",
        "2025-03-04T10:15:30Z",
        "2025-03-04T10:15:30.250000123Z",
        "2025-03-04T10:15:30.5Z",
        "2024-02-29T23:59:59.999999Z",
        "2025-03-04T10:15:60Z",
    ],
)
def test_parse_time_reads_the_common_shape_exactly(text: str) -> None:
    minute = dt.datetime.fromisoformat(text[:16] + ":00+00:00").timestamp()
    assert parse_time(text) == minute + float(text[17:-1])


@pytest.mark.parametrize("fmt", ["ours", "vault"])
@pytest.mark.parametrize("bad", ["2025-03-03T09:-1:30", "2025-03-03T09:15:1e1"])
def test_a_line_with_a_time_that_only_looks_like_one_is_refused(
    tmp_path: Path, small_ranges: int, fmt: str, bad: str
) -> None:
    lines = good_lines(fmt, 100)
    first = lines[60].decode()
    start = first.index('"time":"') + len('"time":"')
    lines[60] = (first[:start] + bad + first[first.index("Z", start) :]).encode()
    path = write(tmp_path / "times.log", lines)
    assert every_reader(path, fmt) == [(str(path), 61, "bad time")] * 3
