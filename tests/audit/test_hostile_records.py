"""Hostile audit files read by search, who-read, export and verify: errors, never crashes.

- JSON nested too deep for the parser is a malformed line (never a ``RecursionError``);
- a well-formed time whose offset takes it out of range is an unreadable time (no
  ``OverflowError`` in a filter, a table or a CEF line);
- a JSON object that is no audit record is refused with its file and line.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from medsecrets.audit.checkpoint import read_checkpoints
from medsecrets.audit.device import ChainHead
from medsecrets.audit.export import cef_line, export
from medsecrets.audit.query import AuditQuery, read_records, record_time, search
from medsecrets.audit.record import LineError
from medsecrets.audit.verify import verify, verify_files
from medsecrets.fdio import NotRegularFileError
from tests.audit.chainmaker import make_log, parse

DEEP = b"[" * 100_000


def test_deep_nesting_is_a_malformed_line_everywhere(tmp_path: Path) -> None:
    deep = tmp_path / "deep.jsonl"
    deep.write_bytes(DEEP + b"\n")
    with pytest.raises(LineError, match=r"deep.jsonl:1: not a JSON record"):
        list(read_records([deep]))
    with pytest.raises(LineError, match=r"deep.jsonl:1: not JSON"):
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
