"""StdoutAuditDevice on real files, pipes and a real process's standard output."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from medsecrets.audit.device import ChainHead
from medsecrets.audit.stdout import StdoutAuditDevice
from medsecrets.errors import AuditFailure

LINES = [b'{"seq":1}\n', b'{"seq":2}\n', b'{"seq":3}\n']


def test_lines_are_written_unchanged_and_flushed(tmp_path: Path) -> None:
    path = tmp_path / "out"
    with open(path, "wb") as stream:
        device = StdoutAuditDevice("out", stream=stream)
        assert device.open() == ChainHead()
        device.write(LINES[:2])
        assert path.read_bytes() == b"".join(LINES[:2])  # flushed, not only buffered
        device.write(LINES[2:])
        device.close()
        device.close()
        assert not stream.closed
    assert path.read_bytes() == b"".join(LINES)


def test_default_is_the_process_stdout() -> None:
    program = textwrap.dedent(
        """
        from medsecrets.audit.stdout import StdoutAuditDevice
        device = StdoutAuditDevice("out")
        device.open()
        device.write([b'{"seq":1}\\n', b'{"seq":2}\\n'])
        device.close()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.stdout == b"".join(LINES[:2])


def test_a_full_nonblocking_pipe_fails_instead_of_dropping() -> None:
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETFL, fcntl.fcntl(write_end, fcntl.F_GETFL) | os.O_NONBLOCK)
    with open(read_end, "rb") as reader, open(write_end, "wb", buffering=0) as writer:
        device = StdoutAuditDevice("out", stream=writer)
        device.open()
        device.write(LINES)
        assert reader.read(len(b"".join(LINES))) == b"".join(LINES)
        with pytest.raises(AuditFailure, match="write failed"):
            device.write([b"x" * (1 << 20) + b"\n"])


def test_a_closed_reader_raises_audit_failure() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, "wb", buffering=0) as writer:
        device = StdoutAuditDevice("out", stream=writer)
        device.open()
        with pytest.raises(AuditFailure, match="write failed"):
            device.write(LINES)
        device.close()


def test_closed_stream_and_unopened_device_raise(tmp_path: Path) -> None:
    stream = open(tmp_path / "out", "wb")  # noqa: SIM115
    device = StdoutAuditDevice("out", stream=stream)
    with pytest.raises(AuditFailure, match="not open"):
        device.write(LINES)
    device.open()
    stream.close()
    with pytest.raises(AuditFailure, match="closed"):
        device.write(LINES)
    device.close()


def test_a_closed_stdout_opens_and_fails_each_write() -> None:
    program = textwrap.dedent(
        """
        import sys
        from medsecrets.audit.stdout import StdoutAuditDevice
        from medsecrets.errors import AuditFailure
        device = StdoutAuditDevice("out")
        device.open()
        try:
            device.write([b'{"seq":1}\\n'])
        except AuditFailure as exc:
            sys.stderr.write(f"refused: {exc}")
        device.close()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        check=False,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        preexec_fn=lambda: os.close(1),  # the child starts with fd 1 closed (`>&-`)
    )
    assert done.returncode == 0, done.stderr.decode()[-500:]
    assert (
        done.stderr.decode()
        == "refused: audit device 'out': write failed: standard output is closed"
    )
