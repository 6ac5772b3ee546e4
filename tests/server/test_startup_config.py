"""Hostile settings stop a real server start with one line naming the setting and exit 2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.server.conftest import run_server


def _one_line(stderr: str) -> str:
    """The last stderr line, after checking no traceback came before it."""
    assert "Traceback" not in stderr
    return stderr.strip().splitlines()[-1]


def test_a_config_file_that_is_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    """Opening a FIFO with no writer blocks for good: the start hung, with no line at all."""
    fifo = tmp_path / "server.toml"
    os.mkfifo(fifo)
    done = run_server(["--dev", "--config", str(fifo)], cwd=tmp_path, timeout=60)
    assert done.code == 2
    assert _one_line(done.stderr) == (
        f"medsecrets server: config error: config file {str(fifo)!r}: not a regular file"
    )


def test_a_config_file_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    done = run_server(["--dev", "--config", str(tmp_path)], cwd=tmp_path)
    assert done.code == 2
    assert _one_line(done.stderr).endswith(": not a regular file")


@pytest.mark.parametrize(
    ("listen", "rule"),
    [
        ("127.0.0.1:\u0668\u0662\u0660\u0660", "port must be an integer from 1 to 65535"),
        ("127.0.0.1:\u00b2", "port must be an integer from 1 to 65535"),
        ("[zz]:8200", "must be [IPv6]:PORT with an IPv6 address in the brackets"),
    ],
)
def test_a_listen_port_of_non_ascii_digits_is_refused(
    tmp_path: Path, listen: str, rule: str
) -> None:
    """Arabic-Indic digits were taken as port 8200; a superscript two leaked int()'s message."""
    done = run_server(["--dev"], env={"MEDSECRETS_LISTEN": listen}, cwd=tmp_path)
    assert done.code == 2
    line = _one_line(done.stderr)
    assert line.startswith(
        "medsecrets server: config error: setting 'listen' (environment MEDSECRETS_LISTEN): " + rule
    )
    assert "int()" not in line
    assert not (tmp_path / ".medsecrets").exists()
