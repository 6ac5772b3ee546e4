"""Hostile audit files read by search, who-read, export and verify: errors, never crashes.

- JSON nested too deep for the parser is a malformed line (never a ``RecursionError``);
- a well-formed time whose offset takes it out of range is an unreadable time (no
  ``OverflowError`` in a filter, a table or a CEF line);
- a JSON object that is no audit record is refused with its file and line;
- a line the writer (orjson) cannot have made, which the standard library's ``json``
  would read (a lone surrogate escape, ``NaN``, ``Infinity``), is a malformed line to
  every reader: refused with its file and line offline, left out and counted by the
  server's readers (its answers could not be encoded: a 500).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from medsecrets.audit.checkpoint import CheckpointSigner, read_checkpoints
from medsecrets.audit.database import DatabaseAuditDevice
from medsecrets.audit.device import ChainHead
from medsecrets.audit.export import cef_line, export
from medsecrets.audit.query import AuditQuery, read_records, record_time, search
from medsecrets.audit.readback import Unreadable, database_records, file_records
from medsecrets.audit.record import LineError
from medsecrets.audit.verify import verify, verify_files
from medsecrets.fdio import NotRegularFileError
from medsecrets.storage.sqlite import SqliteStorage
from tests.audit.chainmaker import ChainMaker, make_log, parse

DEEP = b"[" * 100_000


def test_deep_nesting_is_a_malformed_line_everywhere(tmp_path: Path) -> None:
    deep = tmp_path / "deep.jsonl"
    deep.write_bytes(DEEP + b"\n")
    with pytest.raises(LineError, match=r"deep.jsonl:1: not a JSON record"):
        list(read_records([deep]))
    with pytest.raises(LineError, match=r"deep.jsonl:1: not a JSON record"):
        read_checkpoints(deep)
    # a checkpoint line with a valid hash whose body nests too deep
    log = make_log(12, seed=3)
    lines = list(log.lines)
    record = parse(lines[10])
    head = b'{"prev":"%s","seq":%d,"kind":"checkpoint","x":' % (
        str(record["prev"]).encode(),
        int(record["seq"]),  # type: ignore[call-overload]
    )
    text = head + DEEP
    digest = hashlib.sha256(text + b"}").hexdigest().encode()
    lines[10] = text + b',"hash":"' + digest + b'"}\n'
    report = verify(lines[:11], start=ChainHead())
    assert (report.ok, report.first_bad_index, report.problem) == (False, 10, "malformed line")


OUT_OF_RANGE = '{"seq":1,"kind":"response","hash":"h","time":"9999-12-31T23:59:59-23:59"}'


@pytest.mark.parametrize("text", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00"])
def test_a_time_out_of_range_is_unreadable(text: str) -> None:
    record = {"kind": "response", "time": text, "seq": 1, "hash": "h"}
    assert record_time(record) is None
    assert "rt=" not in cef_line(record)
    since = AuditQuery(since=record_time({"time": "2020-01-01T00:00:00Z"}))
    assert list(search([record], since)) == []


def test_search_and_export_of_a_file_with_such_a_time(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text(OUT_OF_RANGE + "\n", encoding="utf-8")
    records = list(read_records([path]))
    out = io.StringIO()
    assert export(records, "cef", out) == 1
    assert "rt=" not in out.getvalue()


def test_verify_refuses_a_fifo_instead_of_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFileError, match="not a regular file"):
        verify_files([fifo], workers=0)
    with pytest.raises(NotRegularFileError):
        verify_files([tmp_path], workers=0)  # a directory


# What the standard library's json reads and orjson (the writer) can never write.
UNWRITABLE = {
    "lone surrogate": (b'"principal":"alice"', b'"principal":"ev\\ud800il"'),
    "NaN": (b'"version":3', b'"version":NaN'),
    "Infinity": (b'"version":3', b'"version":-Infinity'),
}


def unwritable_log(what: str) -> list[bytes]:
    """Three record lines; the second one holds what ``UNWRITABLE[what]`` puts there."""
    maker = ChainMaker(seed=4)
    for _ in range(3):
        maker.request_pair(principal="alice", version=3, status=200)
    old, new = UNWRITABLE[what]
    lines = maker.lines[1::2]  # the responses
    assert old in lines[1]
    lines[1] = lines[1].replace(old, new)
    return lines


@pytest.mark.parametrize("what", sorted(UNWRITABLE))
def test_a_line_the_writer_cannot_make_is_refused_offline(tmp_path: Path, what: str) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"".join(unwritable_log(what)))
    with pytest.raises(LineError, match=r"audit.jsonl:2: not a JSON record$"):
        list(read_records([path]))


@pytest.mark.parametrize("what", sorted(UNWRITABLE))
def test_a_line_the_writer_cannot_make_is_unreadable_to_the_server(
    tmp_path: Path, what: str
) -> None:
    lines = unwritable_log(what)
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"".join(lines))
    unreadable = Unreadable()
    found = list(file_records([path], decode=None, unreadable=unreadable))
    assert [r["seq"] for r in found] == [parse(lines[0])["seq"], parse(lines[2])["seq"]]
    assert unreadable.lines == 1
    storage = SqliteStorage(tmp_path / "audit.db")
    try:
        DatabaseAuditDevice("db", storage, node="n").write([line[:-1] for line in lines])
        unreadable = Unreadable()
        assert len(list(database_records(storage, "db", "n", unreadable=unreadable))) == 2
        assert unreadable.lines == 1
    finally:
        storage.close()


@pytest.mark.parametrize(
    ("old", "new"),
    [(b'"node":"node-1"', b'"node":"node-\\udfff"'), (b'"covers":4', b'"covers":NaN')],
)
def test_an_exported_checkpoint_the_writer_cannot_make_is_refused(
    tmp_path: Path, old: bytes, new: bytes
) -> None:
    maker = ChainMaker(seed=2, signer=CheckpointSigner.generate())
    maker.add_traffic(4)
    line = maker.checkpoint()
    assert old in line
    path = tmp_path / "checkpoints.jsonl"
    path.write_bytes(line + line.replace(old, new))
    with pytest.raises(LineError, match=r"checkpoints.jsonl:2: not a JSON record$"):
        read_checkpoints(path)
