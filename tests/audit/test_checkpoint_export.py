"""The exported-checkpoints file: only a regular file, never a wait on a FIFO, never torn.

A checkpoint is exported from the audit writer's own thread (``Lane._write``):
an export that blocked (a FIFO whose reader is gone or stopped reading) held
every request waiting on the device, over and over (the audit process was
declared stuck, restarted, and blocked again at the next checkpoint). Reading
the file back (``verify``, on the server too) must not wait on one either.

An export cut short (a full disk: part of the line written, then ``ENOSPC``,
injected through the ``_write``/``_fsync`` seams as for the file device; or a
crash mid-write) left a torn line that the next checkpoint was glued onto:
the file could not be read by ``verify`` any more.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from medsecrets.audit import checkpoint
from medsecrets.audit.checkpoint import CheckpointSigner, export_checkpoint, read_checkpoints
from medsecrets.audit.device import ChainHead
from medsecrets.audit.verify import verify_files
from medsecrets.fdio import NotRegularFileError
from medsecrets.testing.serverproc import ServerProcess
from tests.audit.chainmaker import ChainMaker, write_log

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
    answered 200 (the audit process hung on the first checkpoint, and every request
    after it waited out the 1 s audit timeout and answered 503), and the log says why
    the export failed. No time is measured: a hung audit shows as the 503."""
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
                        answer = client.get("/v1/sys/health")
                        assert answer.status_code == 200, answer.text
                deadline = time.monotonic() + WAIT
                while "checkpoint export failed" not in server.log_text():
                    assert time.monotonic() < deadline, server.log_text()[-2000:]
                    time.sleep(0.05)
            finally:  # releases an export blocked on the FIFO, so the server can stop
                reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    finally:
        if reader is not None:
            os.close(reader)


def checkpoints_of(count: int) -> tuple[ChainMaker, list[bytes]]:
    """A chain with a checkpoint every 4 records, ``count`` of them; their lines."""
    maker = ChainMaker(seed=5, signer=CheckpointSigner.generate())
    lines = []
    for _ in range(count):
        maker.add_traffic(4)
        lines.append(maker.checkpoint())
    return maker, lines


def full_disk(fd: int, data: bytes) -> None:
    """A full disk: half the line reaches the file, then ``ENOSPC``."""
    os.write(fd, data[: len(data) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def failing_fsync(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_a_failed_export_leaves_no_torn_line(tmp_path: Path, where: str) -> None:
    maker, lines = checkpoints_of(3)
    target = tmp_path / "checkpoints.jsonl"
    export_checkpoint(lines[0], target)
    with pytest.raises(OSError) as caught:
        if where == "write":
            export_checkpoint(lines[1], target, _write=full_disk)
        else:
            export_checkpoint(lines[1], target, _fsync=failing_fsync)
    assert caught.value.errno == errno.ENOSPC
    assert target.read_bytes() == lines[0]  # the partial line was taken back out
    export_checkpoint(lines[2], target)  # space again: the next checkpoint is exported
    assert target.read_bytes() == lines[0] + lines[2]
    log = write_log(tmp_path / "audit.jsonl", maker.lines[:-1])  # its tail cut off
    report = verify_files([log], checkpoints=read_checkpoints(target), start=ChainHead())
    assert not report.ok and report.problem is not None and "truncated" in report.problem
    whole = write_log(tmp_path / "whole.jsonl", maker.lines)
    assert verify_files([whole], checkpoints=read_checkpoints(target), start=ChainHead()).ok


def test_the_next_export_cuts_off_a_line_torn_by_a_crash(tmp_path: Path) -> None:
    _, lines = checkpoints_of(3)
    target = tmp_path / "checkpoints.jsonl"
    target.write_bytes(lines[0] + lines[1][:40])  # killed mid-write
    target.chmod(0o600)
    export_checkpoint(lines[2], target)
    assert target.read_bytes() == lines[0] + lines[2]
    target.write_bytes(lines[0][:-1])  # the only line, all but its \n
    export_checkpoint(lines[2], target)
    assert target.read_bytes() == lines[2]
    assert [r["seq"] for r in read_checkpoints(target)] == [15]


def test_an_export_in_progress_elsewhere_is_not_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker processes export to one file: an export waits for another's lock (briefly)
    and never takes that one's unfinished line for a torn one."""
    monkeypatch.setattr(checkpoint, "EXPORT_LOCK_WAIT", 0.2)
    _, lines = checkpoints_of(2)
    target = tmp_path / "checkpoints.jsonl"
    other = os.open(target, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        os.write(other, lines[0][:40])  # another process, halfway through its line
        with pytest.raises(BlockingIOError):
            export_checkpoint(lines[1], target)
        assert target.read_bytes() == lines[0][:40]
        os.write(other, lines[0][40:])
    finally:
        os.close(other)  # its lock with it
    export_checkpoint(lines[1], target)
    assert target.read_bytes() == lines[0] + lines[1]
