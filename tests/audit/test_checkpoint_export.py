"""The exported-checkpoints file: only a regular file, never a wait on a FIFO.

A checkpoint is exported from the audit writer's own thread (``Lane._write``):
an export that blocked (a FIFO whose reader is gone or stopped reading) held
every request waiting on the device, over and over (the audit process was
declared stuck, restarted, and blocked again at the next checkpoint). Reading
the file back (``verify``, on the server too) must not wait on one either.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from medsecrets.audit.checkpoint import CheckpointSigner, export_checkpoint, read_checkpoints
from medsecrets.fdio import NotRegularFileError
from medsecrets.testing.serverproc import ServerProcess
from tests.audit.chainmaker import ChainMaker

WAIT = 5.0
"""Seconds a call that must not block is given (it takes milliseconds)."""


def checkpoint_line() -> bytes:
    maker = ChainMaker(seed=1, signer=CheckpointSigner.generate())
    maker.add_traffic(4)
    return maker.checkpoint()


def outcome_in_time(call: Callable[[], object], unblock: Callable[[], None]) -> BaseException:
    """What ``call`` raised, run in a thread; fails the test if it is still running after
    ``WAIT`` seconds (``unblock`` then releases it, so no thread is left behind)."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the test
            raised.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(WAIT)
    if thread.is_alive():
        unblock()
        thread.join(WAIT)
        pytest.fail(f"blocked for more than {WAIT} s")
    assert raised, "no error"
    return raised[0]


def open_other_end(fifo: Path, flags: int) -> None:
    os.close(os.open(fifo, flags | os.O_NONBLOCK))


def test_export_to_a_fifo_without_reader_fails_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "checkpoints.fifo"
    os.mkfifo(fifo)
    line = checkpoint_line()
    error = outcome_in_time(
        lambda: export_checkpoint(line, fifo), lambda: open_other_end(fifo, os.O_RDONLY)
    )
    assert isinstance(error, OSError)


def test_export_to_a_fifo_with_a_reader_or_a_device_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "checkpoints.fifo"
    os.mkfifo(fifo)
    line = checkpoint_line()
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:  # a reader that stops reading would block the write once the pipe is full
        with pytest.raises(NotRegularFileError, match="not a regular file"):
            export_checkpoint(line, fifo)
        assert os.read(reader, 4096) == b""  # nothing was written to it
    finally:
        os.close(reader)
    with pytest.raises(NotRegularFileError):
        export_checkpoint(line, Path(os.devnull))
    with pytest.raises(IsADirectoryError):
        export_checkpoint(line, tmp_path)


def test_export_through_a_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere.jsonl"
    real.write_bytes(b"")
    link = tmp_path / "checkpoints.jsonl"
    link.symlink_to(real)
    with pytest.raises(OSError) as refused:
        export_checkpoint(checkpoint_line(), link)
    assert refused.value.errno == errno.ELOOP
    assert real.read_bytes() == b""


def test_reading_checkpoints_from_a_fifo_fails_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "checkpoints.fifo"
    os.mkfifo(fifo)
    error = outcome_in_time(
        lambda: read_checkpoints(fifo), lambda: open_other_end(fifo, os.O_WRONLY)
    )
    assert isinstance(error, NotRegularFileError)
    with pytest.raises(NotRegularFileError):
        read_checkpoints(Path("/dev/zero"))  # never read until memory runs out


def test_a_server_exporting_to_a_fifo_keeps_serving(tmp_path: Path) -> None:
    """A checkpoint every 2 records exported to a FIFO nobody reads: every request is
    answered at once (it hung on the first checkpoint and answered 503), and the log
    says why the export failed."""
    fifo = tmp_path / "checkpoints.fifo"
    os.mkfifo(fifo)
    env = {
        "MEDSECRETS_AUDIT_CHECKPOINT_EVERY": "2",
        "MEDSECRETS_AUDIT_CHECKPOINT_EXPORT": str(fifo),
        "MEDSECRETS_AUDIT_TIMEOUT": "1",
    }
    reader: int | None = None
    try:
        logs = tmp_path / "logs"
        with ServerProcess(tmp_path / "data", dev=True, env=env, log_dir=logs) as server:
            try:
                with httpx.Client(base_url=server.addr, timeout=10) as client:
                    for _ in range(8):
                        started = time.monotonic()
                        answer = client.get("/v1/sys/health")
                        assert answer.status_code == 200, answer.text
                        assert time.monotonic() - started < 1.0
                deadline = time.monotonic() + WAIT
                while "checkpoint export failed" not in server.log_text():
                    assert time.monotonic() < deadline, server.log_text()[-2000:]
                    time.sleep(0.05)
            finally:  # releases an export blocked on the FIFO, so the server can stop
                reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    finally:
        if reader is not None:
            os.close(reader)
