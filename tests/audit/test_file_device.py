"""FileAuditDevice on real files: privacy, durability, torn lines, rotation, resume, encryption."""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from medsecrets.audit.crypt import RecordCipher
from medsecrets.audit.device import AuditDevice, ChainHead
from medsecrets.audit.file import AuditFileBusy, FileAuditDevice
from medsecrets.audit.record import GENESIS, AuditEvent, split_line
from medsecrets.clock import ManualClock
from medsecrets.errors import AuditFailure, ConfigError
from tests.audit.chainmaker import BASE_TIME, make_log

_ROTATED = re.compile(r"audit-\d{8}T\d{6}Z-(\d+)(?:-\d+)?\.jsonl")


def head_of(lines: list[bytes]) -> ChainHead:
    _prev, seq, digest = split_line(lines[-1])
    return ChainHead(seq=seq, hash=digest)


def assert_one_chain(lines: list[bytes], count: int) -> None:
    """``lines`` are records 1..count, each linked to the one before."""
    prev = GENESIS
    for expected, line in enumerate(lines, start=1):
        line_prev, seq, digest = split_line(line)
        assert (seq, line_prev) == (expected, prev)
        prev = digest
    assert len(lines) == count


def all_lines(device: FileAuditDevice) -> list[bytes]:
    files = [*device.rotated_files(), device.path]
    return [line for f in files for line in f.read_bytes().splitlines(keepends=True)]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "audit.jsonl"


@pytest.fixture
def device(path: Path) -> Iterator[FileAuditDevice]:
    dev = FileAuditDevice("file", path)
    yield dev
    dev.close()


def test_is_an_audit_device(device: FileAuditDevice) -> None:
    typed: AuditDevice = device
    assert typed.name == "file"


def test_creates_private_file_and_directory(device: FileAuditDevice, path: Path) -> None:
    assert device.open() == ChainHead()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_refuses_group_readable_file(path: Path) -> None:
    path.parent.mkdir()
    path.write_bytes(b"")
    path.chmod(0o640)
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        FileAuditDevice("file", path).open()


def test_refuses_symlink(path: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.jsonl"
    target.write_bytes(b"")
    target.chmod(0o600)
    path.parent.mkdir()
    path.symlink_to(target)
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        FileAuditDevice("file", path).open()


def test_write_appends_and_fsyncs(path: Path) -> None:
    synced: list[int] = []

    def fsync(fd: int) -> None:
        os.fsync(fd)
        synced.append(os.fstat(fd).st_size)

    device = FileAuditDevice("file", path, _fsync=fsync)
    device.open()
    lines = make_log(3).lines
    device.write(lines[:2])
    device.write(lines[2:])
    device.write([])
    assert path.read_bytes() == b"".join(lines)
    assert synced == [len(lines[0] + lines[1]), len(b"".join(lines))]
    device.close()
    device.close()


class Faults:
    """``os.write``/``os.fsync`` stand-ins that fail with ENOSPC while ``full`` is set."""

    def __init__(self) -> None:
        self.full = False
        self.fsync_fails = False

    def write(self, fd: int, data: memoryview) -> int:
        if self.full:
            os.write(fd, data[: len(data) // 2])  # a partial record reaches the file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        if self.fsync_fails:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.fsync(fd)


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_enospc_raises_and_leaves_no_torn_record(path: Path, where: str) -> None:
    faults = Faults()
    device = FileAuditDevice("file", path, _write=faults.write, _fsync=faults.fsync)
    device.open()
    lines = make_log(6).lines
    device.write(lines[:2])
    faults.full = where == "write"
    faults.fsync_fails = where == "fsync"
    with pytest.raises(OSError) as caught:
        device.write(lines[2:4])
    assert caught.value.errno == errno.ENOSPC
    assert len(path.read_bytes()) > len(b"".join(lines[:2]))  # the fault did leave bytes
    faults.full = faults.fsync_fails = False
    device.write(lines[2:4])  # the broker retries the refused records
    device.write(lines[4:])
    assert path.read_bytes() == b"".join(lines)
    device.close()
    assert FileAuditDevice("file", path).open() == head_of(lines)


def test_unwritable_file_raises_and_recovers(device: FileAuditDevice, path: Path) -> None:
    device.open()
    lines = make_log(3).lines
    device.write(lines[:1])
    path.rename(path.with_name("moved-away"))
    path.mkdir()  # a directory where the file was: nothing can be written there
    with pytest.raises(OSError):
        device.write(lines[1:2])
    with pytest.raises(OSError):
        device.write(lines[1:2])
    path.rmdir()
    device.write(lines[1:])  # a fresh file at the path, never the unlinked one
    assert path.read_bytes() == b"".join(lines[1:])
    assert path.with_name("moved-away").read_bytes() == lines[0]


def test_directory_in_place_of_file_fails_open(path: Path) -> None:
    path.mkdir(parents=True)
    with pytest.raises(OSError):
        FileAuditDevice("file", path).open()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_file_fails_open(path: Path) -> None:
    path.parent.mkdir()
    path.write_bytes(b"")
    path.chmod(0o400)
    with pytest.raises(PermissionError):
        FileAuditDevice("file", path).open()


def test_rotation_by_size_keeps_one_chain(path: Path) -> None:
    lines = make_log(40).lines
    limit = 3 * max(len(line) for line in lines)
    device = FileAuditDevice("file", path, max_bytes=limit)
    device.open()
    for line in lines:
        device.write([line])
    rotated = device.rotated_files()
    assert len(rotated) >= 40 // 3
    for f in rotated:
        match = _ROTATED.fullmatch(f.name)
        assert match is not None
        assert int(match.group(1)) == split_line(f.read_bytes().splitlines()[0])[1]
        assert 2 * limit // 3 < len(f.read_bytes()) <= limit
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert_one_chain(all_lines(device), 40)
    device.close()


def test_rotation_by_time_keeps_one_chain_and_prunes(path: Path) -> None:
    clock = ManualClock()
    device = FileAuditDevice("file", path, max_bytes=0, rotate_interval=60, keep=2, clock=clock)
    device.open()
    lines = make_log(8).lines
    device.write(lines[:2])
    device.write(lines[2:3])
    assert device.rotated_files() == []
    clock.advance(60)
    device.write(lines[3:4])
    (first,) = device.rotated_files()
    assert first.name == "audit-20260101T000100Z-000000000001.jsonl"
    assert first.read_bytes() == b"".join(lines[:3])
    for line in lines[4:]:
        clock.advance(61)
        device.write([line])
    rotated = device.rotated_files()
    assert [split_line(f.read_bytes())[1] for f in rotated] == [6, 7]  # keep=2: oldest pruned
    assert path.read_bytes() == lines[7]
    device.close()


def test_rotation_names_are_unique(path: Path) -> None:
    lines = make_log(2).lines
    device = FileAuditDevice("file", path, max_bytes=len(lines[0]), clock=ManualClock())
    device.open()
    device.write(lines[:1])
    device.write(lines[1:])
    device.close()
    path.unlink()  # the chain restarts (a new store): its first file also starts at seq 1
    device.open()
    device.write(lines[:1])
    device.write(lines[1:])  # same second, same first seq
    names = sorted(f.name for f in device.rotated_files())
    assert names == [
        "audit-20260101T000000Z-000000000001-1.jsonl",
        "audit-20260101T000000Z-000000000001.jsonl",
    ]
    device.close()


def test_rotated_names_sort_in_chain_order(path: Path) -> None:
    """Rotations within one second (the stamp's resolution): the zero-padded seq keeps a
    shell glob (``audit-*.jsonl``) in chain order, 9 before 10."""
    lines = make_log(12).lines
    device = FileAuditDevice("file", path, max_bytes=1, clock=ManualClock())
    device.open()
    for line in lines:
        device.write([line])  # every write rotates the file before it
    device.close()
    by_name = sorted(path.parent.glob("audit-*.jsonl"))
    assert [split_line(f.read_bytes())[1] for f in by_name] == list(range(1, 12))
    assert by_name == device.rotated_files()


def test_open_resumes_the_head(device: FileAuditDevice, path: Path) -> None:
    device.open()
    lines = make_log(4).lines
    device.write(lines[:3])
    device.close()
    again = FileAuditDevice("file", path)
    head = again.open()
    assert head == head_of(lines[:3])
    rest = make_log(2, start=head).lines
    again.write(rest)
    assert_one_chain(path.read_bytes().splitlines(keepends=True), 5)
    again.close()


def test_open_truncates_a_torn_last_line(path: Path) -> None:
    device = FileAuditDevice("file", path)
    device.open()
    lines = make_log(3).lines
    device.write(lines[:2])
    device.close()
    with path.open("ab") as f:
        f.write(lines[2][:40])  # a crash in the middle of a write
    assert FileAuditDevice("file", path).open() == head_of(lines[:2])
    assert path.read_bytes() == b"".join(lines[:2])


def test_open_of_a_long_last_line(path: Path) -> None:
    path.parent.mkdir()
    maker = make_log(1)
    summary = {"alert": {"summary": "x" * 250_000}}  # a body's data is bounded; an alert's not
    big = maker.append(AuditEvent(kind="alert", time=BASE_TIME, extra=summary))
    assert len(big) > 200_000
    path.write_bytes(b"".join(maker.lines))
    path.chmod(0o600)
    assert FileAuditDevice("file", path).open() == head_of([big])


def test_open_of_an_empty_file_after_rotation_reads_the_newest_rotated(path: Path) -> None:
    clock = ManualClock()
    device = FileAuditDevice("file", path, rotate_interval=5, clock=clock)
    device.open()
    lines = make_log(4).lines
    device.write(lines[:2])
    clock.advance(5)
    device.write(lines[2:])
    device.close()
    path.rename(path.with_name("audit-20260101T000010Z-3.jsonl"))  # as rotation would
    assert FileAuditDevice("file", path).open() == head_of(lines)
    assert path.read_bytes() == b""


def test_last_line_not_a_record_is_refused(path: Path) -> None:
    path.parent.mkdir()
    path.write_bytes(make_log(1).lines[0] + b'{"hello":"world"}\n')
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        FileAuditDevice("file", path).open()


def test_bad_settings_are_refused(path: Path) -> None:
    bad: list[Callable[[], object]] = [
        lambda: FileAuditDevice("f", path, max_bytes=-1),
        lambda: FileAuditDevice("f", path, rotate_interval=-1),
        lambda: FileAuditDevice("f", path, keep=-1),
    ]
    for make in bad:
        with pytest.raises(ConfigError):
            make()


def test_encrypted_file_resumes_and_opens_with_the_key(path: Path) -> None:
    cipher = RecordCipher(os.urandom(32))
    lines = make_log(5).lines
    device = FileAuditDevice("file", path, cipher=cipher, max_bytes=len(lines[0]) * 6)
    device.open()
    device.write(lines[:3])
    device.close()
    again = FileAuditDevice("file", path, cipher=cipher, max_bytes=len(lines[0]) * 6)
    assert again.open() == head_of(lines[:3])
    again.write(lines[3:])
    stored = all_lines(again)
    assert b'"request_id"' not in b"".join(stored)
    assert [split_line(s) for s in stored] == [split_line(line) for line in lines]
    assert [cipher.open(s) for s in stored] == lines
    again.close()


def test_closed_device_refuses_writes(device: FileAuditDevice, path: Path) -> None:
    with pytest.raises(AuditFailure, match="not open"):
        device.write(make_log(1).lines)
    device.open()
    device.close()
    with pytest.raises(AuditFailure, match="not open"):
        device.write(make_log(1).lines)
    assert path.read_bytes() == b""


def test_one_writer_at_a_time(path: Path) -> None:
    """Two writers appending to one chain fork it for good (a second server on the data
    directory, an earlier audit process still draining): the second is refused."""
    first = FileAuditDevice("file", path)
    first.open()
    lock = path.with_name(path.name + ".lock")
    assert lock.exists() and stat.S_IMODE(lock.stat().st_mode) == 0o600
    second = FileAuditDevice("file", path)
    with pytest.raises(AuditFileBusy, match="written by another process"):
        second.open()
    lines = make_log(2).lines
    first.write(lines[:1])
    first.close()
    assert not lock.exists()
    second.open()  # the first let go
    second.write(lines[1:])
    second.close()
    assert path.read_bytes() == b"".join(lines)
