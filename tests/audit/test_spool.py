"""DurableSpool: order, acknowledgement, bounds, permissions and crash recovery on real files."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from medsecrets.audit.spool import DurableSpool, SpoolBusyError, SpoolError, SpoolFullError
from medsecrets.errors import AuditFailure


def lines(start: int, stop: int) -> list[bytes]:
    return [b'{"n":%d}\n' % i for i in range(start, stop)]


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def test_lines_come_back_in_order_until_acknowledged(tmp_path: Path) -> None:
    spool = DurableSpool(tmp_path / "spool", max_bytes=1 << 20)
    spool.append(lines(0, 3))
    spool.append(lines(3, 5))
    assert spool.pending() == 5
    assert spool.peek(10) == lines(0, 5)
    assert spool.peek(2) == lines(0, 2)
    spool.ack(2)
    assert spool.pending() == 3
    assert spool.peek(10) == lines(2, 5)
    spool.ack(3)
    assert spool.pending() == 0
    assert spool.peek(10) == []
    spool.close()


def test_ack_without_peek_and_beyond_pending(tmp_path: Path) -> None:
    spool = DurableSpool(tmp_path, max_bytes=1 << 20)
    spool.append(lines(0, 4))
    spool.ack(3)
    assert spool.peek(10) == lines(3, 4)
    with pytest.raises(ValueError, match="2 lines"):
        spool.ack(2)
    spool.close()


def test_reopen_continues_at_the_acknowledged_line(tmp_path: Path) -> None:
    spool = DurableSpool(tmp_path, max_bytes=1 << 20, segment_bytes=64)
    spool.append(lines(0, 20))
    spool.peek(7)
    spool.ack(7)
    spool.close()
    again = DurableSpool(tmp_path, max_bytes=1 << 20, segment_bytes=64)
    assert again.pending() == 13
    assert again.peek(100) == lines(7, 20)
    again.append(lines(20, 22))
    assert again.peek(100) == lines(7, 22)
    again.close()


def test_consumed_segments_are_deleted_and_space_reclaimed(tmp_path: Path) -> None:
    spool = DurableSpool(tmp_path, max_bytes=1 << 20, segment_bytes=40)
    for i in range(0, 30, 3):
        spool.append(lines(i, i + 3))
    assert len(segments(tmp_path)) > 3
    spool.ack(15)
    remaining = segments(tmp_path)
    assert spool.size_bytes == sum(p.stat().st_size for p in remaining)
    assert spool.peek(100) == lines(15, 30)
    spool.ack(15)
    assert segments(tmp_path) == []
    assert spool.size_bytes == 0
    spool.append(lines(30, 31))
    spool.close()
    again = DurableSpool(tmp_path, max_bytes=1 << 20, segment_bytes=40)
    assert again.peek(10) == lines(30, 31)
    again.close()


def test_full_spool_refuses_whole_batch_and_recovers_after_ack(tmp_path: Path) -> None:
    one = len(lines(0, 1)[0])
    spool = DurableSpool(tmp_path, max_bytes=one * 10, segment_bytes=one * 2)
    for i in range(8):
        spool.append(lines(i, i + 1))
    with pytest.raises(SpoolFullError) as caught:
        spool.append(lines(8, 11))
    assert isinstance(caught.value, AuditFailure)
    assert spool.pending() == 8
    assert spool.peek(100) == lines(0, 8)
    spool.append(lines(8, 10))
    with pytest.raises(SpoolFullError):
        spool.append(lines(10, 11))
    spool.ack(4)
    spool.append(lines(10, 12))
    assert spool.peek(100) == lines(4, 12)
    spool.close()


def test_malformed_lines_are_refused(tmp_path: Path) -> None:
    spool = DurableSpool(tmp_path, max_bytes=1 << 20)
    for bad in (b"no newline", b"two\nlines\n", b""):
        with pytest.raises(ValueError, match="newline"):
            spool.append([b"ok\n", bad])
    assert spool.pending() == 0
    spool.close()


def test_files_are_private(tmp_path: Path) -> None:
    """The directories it creates too: ``<data_dir>/audit-spool`` was made 0755."""
    directory = tmp_path / "audit-spool" / "siem" / "spool"
    spool = DurableSpool(directory, max_bytes=1 << 20)
    spool.append(lines(0, 2))
    spool.ack(1)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(directory.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(directory.parent.parent.stat().st_mode) == 0o700
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    spool.close()


def test_one_process_at_a_time(tmp_path: Path) -> None:
    spool = DurableSpool(tmp_path, max_bytes=1 << 20)
    with pytest.raises(SpoolError, match="in use"):
        DurableSpool(tmp_path, max_bytes=1 << 20)
    spool.close()
    spool.close()
    DurableSpool(tmp_path, max_bytes=1 << 20).close()
    with pytest.raises(SpoolError, match="closed"):
        spool.append(lines(0, 1))


def test_torn_tail_is_discarded(tmp_path: Path) -> None:
    spool = DurableSpool(tmp_path, max_bytes=1 << 20)
    spool.append(lines(0, 3))
    spool.close()
    with open(segments(tmp_path)[-1], "ab") as handle:
        handle.write(b'{"n":3, "torn')
    again = DurableSpool(tmp_path, max_bytes=1 << 20)
    assert again.pending() == 3
    again.append(lines(3, 4))
    assert again.peek(10) == lines(0, 4)
    again.close()


def test_producer_and_consumer_threads(tmp_path: Path) -> None:
    spool = DurableSpool(tmp_path, max_bytes=1 << 22, segment_bytes=256)
    total = 600
    received: list[bytes] = []

    def produce() -> None:
        for i in range(0, total, 6):
            spool.append(lines(i, i + 6))

    producer = threading.Thread(target=produce)
    producer.start()
    while len(received) < total:
        batch = spool.peek(50)
        received.extend(batch)
        spool.ack(len(batch))
    producer.join()
    assert received == lines(0, total)
    assert spool.pending() == 0
    spool.close()


CRASHING_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from medsecrets.audit.spool import DurableSpool

    spool = DurableSpool(Path(sys.argv[1]), max_bytes=1 << 24, segment_bytes=4096)
    i = 0
    while True:
        spool.append([b'{"n":%d,"pad":"%s"}\\n' % (j, b"x" * (j % 300)) for j in range(i, i + 3)])
        i += 3
        if i % 30 == 0:
            spool.ack(1)
        print(i, flush=True)
    """
)


def test_sigkill_during_appends_loses_no_acknowledged_line(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    for _ in range(3):
        process = subprocess.Popen(
            [sys.executable, "-c", CRASHING_WRITER, str(directory)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert process.stdout is not None
        confirmed = 0
        for raw in process.stdout:
            confirmed = int(raw)
            if confirmed >= 600:
                break
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
        spool = DurableSpool(directory, max_bytes=1 << 24, segment_bytes=4096)
        found = spool.peek(1 << 20)
        numbers = [int(line.split(b",")[0][5:]) for line in found]
        assert all(line.endswith(b'"}\n') for line in found)
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        assert numbers[-1] + 1 >= confirmed
        assert numbers[0] <= (numbers[-1] + 1) // 30
        spool.ack(len(found))
        spool.close()


def test_peek_is_capped_in_bytes_but_returns_a_long_line(tmp_path: Path) -> None:
    spool = DurableSpool(tmp_path, max_bytes=1 << 20, segment_bytes=64)
    long = b'{"n":"' + b"x" * 200 + b'"}\n'
    spool.append([*lines(0, 6), long, *lines(6, 8)])
    one = len(lines(0, 1)[0])
    assert spool.peek(100, max_bytes=one * 4 + 1) == lines(0, 4)
    assert spool.peek(100, max_bytes=one * 6 + 10) == lines(0, 6)
    spool.ack(6)
    assert spool.peek(100, max_bytes=10) == [long]  # alone, never nothing
    spool.ack(1)
    assert spool.peek(100, max_bytes=1 << 20) == lines(6, 8)
    spool.close()


def test_a_segment_replaced_by_a_symlink_is_refused_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.key"
    victim.write_bytes(b"line one\nSECRET-KEY-MATERIAL")  # no final newline: "torn"
    directory = tmp_path / "spool"
    spool = DurableSpool(directory, max_bytes=1 << 20)
    spool.append(lines(0, 2))
    spool.close()
    segment = segments(directory)[0]
    segment.unlink()
    segment.symlink_to(victim)
    with pytest.raises(SpoolError, match=rf"{segment.name} is not a regular file"):
        DurableSpool(directory, max_bytes=1 << 20)
    assert victim.read_bytes() == b"line one\nSECRET-KEY-MATERIAL"
    segment.unlink()
    segment.mkdir()
    with pytest.raises(SpoolError, match="not a regular file"):
        DurableSpool(directory, max_bytes=1 << 20)


@pytest.mark.parametrize("name", ["cursor", "00000000000000000001.seg"])
def test_a_fifo_in_the_spool_is_refused_without_blocking(tmp_path: Path, name: str) -> None:
    directory = tmp_path / "spool"
    spool = DurableSpool(directory, max_bytes=1 << 20)
    spool.append(lines(0, 2))
    spool.ack(1)
    spool.close()
    (directory / name).unlink()
    os.mkfifo(directory / name)
    outcome: list[BaseException | DurableSpool] = []

    def open_it() -> None:
        try:
            outcome.append(DurableSpool(directory, max_bytes=1 << 20))
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    opener = threading.Thread(target=open_it, daemon=True)
    opener.start()
    opener.join(10.0)  # a safety net: an open that blocks never returns
    assert not opener.is_alive(), "opening the spool blocked on a FIFO"
    assert isinstance(outcome[0], SpoolError)
    assert f"{name} is not a regular file" in str(outcome[0])


def test_a_foreign_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    (shared / "other.txt").write_text("x")
    with pytest.raises(SpoolError, match="not an audit spool"):
        DurableSpool(shared, max_bytes=1 << 20)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert sorted(p.name for p in shared.iterdir()) == ["other.txt"]
    with pytest.raises(SpoolError, match="not an audit spool"):
        DurableSpool(tmp_path / "absent", max_bytes=1 << 20, create=False)
    assert not (tmp_path / "absent").exists()


def test_an_empty_spool_is_removed_a_busy_one_is_not(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = DurableSpool(directory, max_bytes=1 << 20, segment_bytes=40)
    spool.append(lines(0, 10))
    spool.close()
    holder = DurableSpool(directory, max_bytes=1 << 20, create=False)
    with pytest.raises(SpoolBusyError):
        DurableSpool(directory, max_bytes=1 << 20, create=False)
    with pytest.raises(SpoolError, match="pending"):
        holder.remove()
    holder.ack(10)
    holder.remove()
    assert not directory.exists()
