"""The audit readers open regular files only: a FIFO, a device or a directory put where a
record file should be is refused (``query.read_records``) or counted and passed over
(``readback.file_records``, ``readback.chain_start``), never read.

A FIFO here always has a writer (a thread), so a reader that did open it would read the
record the writer sends (and the test would fail) instead of blocking for ever.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from medsecrets.audit.query import read_records
from medsecrets.audit.readback import Unreadable, chain_start, file_records
from medsecrets.fdio import NotRegularFileError
from tests.audit.chainmaker import ChainMaker, write_log


def _lines() -> list[bytes]:
    maker = ChainMaker(seed=5)
    maker.request_pair(principal="alice", path="medessence/production/database", status=200)
    return maker.lines


@contextlib.contextmanager
def _fed_fifo(path: Path, data: bytes) -> Iterator[Path]:
    """A FIFO at ``path`` whose writer (a thread) sends ``data`` to whoever opens it to
    read; on exit the writer is released (its FIFO opened and drained here) and joined."""
    os.mkfifo(path)

    def feed() -> None:
        with path.open("wb") as writer:  # blocks until a reader opens the FIFO
            writer.write(data)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        if thread.is_alive():  # nobody opened it: open it (without blocking) to release it
            descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            try:
                thread.join()
            finally:
                os.close(descriptor)
        thread.join()


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    with _fed_fifo(tmp_path / "audit.jsonl", b"".join(_lines())) as path:
        yield path


def test_read_records_refuses_a_fifo(fifo: Path) -> None:
    with pytest.raises(NotRegularFileError, match="not a regular file") as caught:
        list(read_records([fifo]))
    assert caught.value.filename == str(fifo)


@pytest.mark.parametrize("name", ["/dev/null", "directory"])
def test_read_records_refuses_a_device_or_a_directory(tmp_path: Path, name: str) -> None:
    path = tmp_path if name == "directory" else Path(name)  # /dev/null read as an empty log
    with pytest.raises(NotRegularFileError, match="not a regular file"):
        list(read_records([path]))


def test_file_records_counts_a_fifo_and_reads_the_rest_of_the_chain(
    tmp_path: Path, fifo: Path
) -> None:
    later = write_log(tmp_path / "later.jsonl", _lines())
    unreadable = Unreadable()
    found = list(file_records([fifo, later], decode=None, unreadable=unreadable))
    assert len(found) == 2  # the regular file's records only
    assert unreadable.lines == 1  # the FIFO, said to the caller


@pytest.mark.parametrize("name", ["/dev/null", "directory"])
def test_file_records_counts_a_device_or_a_directory(tmp_path: Path, name: str) -> None:
    path = tmp_path if name == "directory" else Path(name)
    unreadable = Unreadable()
    assert list(file_records([path], decode=None, unreadable=unreadable)) == []
    assert unreadable.lines == 1


def test_chain_start_starts_a_chain_with_a_fifo_at_once(tmp_path: Path, fifo: Path) -> None:
    later = write_log(tmp_path / "later.jsonl", _lines())
    assert chain_start([later]) != ""  # a readable first record gives its time
    assert chain_start([fifo, later]) == ""  # its reader meets the FIFO in its place


def test_chain_start_starts_a_chain_with_a_directory_at_once(tmp_path: Path) -> None:
    assert chain_start([tmp_path]) == ""
