"""The CLI against hostile or broken surroundings: peers that answer what a server never
would, file names and arguments no one should type, closed standard streams.

Every failure must still be ONE readable line on stderr (``CliResult.error``) with a
documented exit code, and never a success.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tests.cli.conftest import CLI, CliResult, _base_env, run_cli
from tests.support.peers import FixedAnswer, answer

if TYPE_CHECKING:
    from medsecrets.testing.serverproc import ServerProcess


JSON_TYPE = "Content-Type: application/json"


@pytest.fixture
def multiline_error_peer() -> Iterator[FixedAnswer]:
    """A peer whose error message holds line breaks and terminal control sequences."""
    message = "boom\nsecond line\r\x1b[2J\x1b]0;retitled\x07 \u2028 end"
    body = json.dumps({"error": {"code": "internal", "message": message}}).encode()
    peer = FixedAnswer(answer("500 Internal Server Error", body, JSON_TYPE))
    yield peer
    peer.stop()


def _single_clean_line(result: CliResult, code: int) -> str:
    line = result.error(code)
    assert len(result.stderr.splitlines()) == len(result.stderr.split("\n")) - 1
    assert "\x1b" not in result.stderr and "\r" not in result.stderr and "\x07" not in result.stderr
    return line


def test_a_server_message_with_line_breaks_and_escapes_is_one_plain_line(
    multiline_error_peer: FixedAnswer,
) -> None:
    result = run_cli(
        "secrets", "get", "a/b/c", env={"MEDSECRETS_ADDR": multiline_error_peer.addr,
                                        "MEDSECRETS_TOKEN": "ms.x"},
    )  # fmt: skip
    line = _single_clean_line(result, 1)
    assert "boom\\x0asecond line" in line


def test_a_file_name_with_line_breaks_and_escapes_is_one_plain_line(tmp_path: Path) -> None:
    name = str(tmp_path / "no\nsuch\x1b[31m.log")
    line = _single_clean_line(run_cli("audit", "verify", name), 2)
    assert "no\\x0asuch\\x1b[31m.log" in line
    line = _single_clean_line(run_cli("catalog", "check", name), 1)
    assert "no\\x0asuch" in line


def test_a_failed_verification_names_a_strange_file_on_one_line(tmp_path: Path) -> None:
    log = tmp_path / "bad\nname\x1b[2J.log"
    log.write_bytes(b"not a record\n")
    line = _single_clean_line(run_cli("audit", "verify", str(log)), 7)
    assert "bad\\x0aname\\x1b[2J.log" in line


@pytest.fixture
def not_unicode_peer() -> Iterator[FixedAnswer]:
    """A peer whose answer holds lone surrogates (JSON escapes no server writes)."""
    body = (
        b'{"alerts": [{"time": "2026-01-01T00:00:00Z", "severity": "high", '
        b'"detector": "x\\udcff", "summary": "s\\ud800", "count": 1, "deliveries": {}}]}'
    )
    peer = FixedAnswer(answer("200 OK", body, JSON_TYPE))
    yield peer
    peer.stop()


def test_text_that_is_not_unicode_in_an_answer_is_shown_escaped(
    not_unicode_peer: FixedAnswer,
) -> None:
    env = {"MEDSECRETS_ADDR": not_unicode_peer.addr, "MEDSECRETS_TOKEN": "ms.x"}
    table = run_cli("alerts", "list", env=env).ok()
    assert "x\\udcff" in table.stdout and "s\\ud800" in table.stdout
    as_json = run_cli("alerts", "list", "-o", "json", env=env).ok().json()
    assert isinstance(as_json, dict)
    assert as_json["alerts"][0]["detector"] == "x\udcff"


def _closed_stdout(*args: str, env: dict[str, str] | None = None) -> CliResult:
    """The CLI run with its standard output closed (``>&-``)."""
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *CLI, *args],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_base_env() | (env or {}),
        timeout=60,
        check=False,
    )
    return CliResult(tuple(args), done.returncode, "", done.stderr.decode())


@pytest.mark.parametrize(
    "args",
    [("catalog", "show"), ("catalog", "show", "-o", "json"), ("generate", "password"),
     ("--version",)],
)  # fmt: skip
def test_a_closed_stdout_is_a_failure_not_a_silent_success(args: tuple[str, ...]) -> None:
    line = _closed_stdout(*args).error(1)
    assert line == "error: cannot print the result: standard output is closed"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [("catalog", "show"), ("generate", "password", "-o", "json")])
def test_a_failed_write_to_stdout_is_one_line(args: tuple[str, ...]) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*CLI, *args], stdout=full, stderr=subprocess.PIPE, env=_base_env(), timeout=60,
            check=False,
        )  # fmt: skip
    result = CliResult(args, done.returncode, "", done.stderr.decode())
    assert result.error(1) == "error: cannot print the result: No space left on device"


@pytest.mark.slow
def test_init_with_stdout_closed_is_refused_before_the_server_is_initialised(
    shamir_server: ServerProcess,
) -> None:
    """The shares and the root token are shown once: with nowhere to show them, the
    store must stay uninitialised (it used to be initialised and its shares lost)."""
    addr = {"MEDSECRETS_ADDR": shamir_server.addr}
    init = _closed_stdout("operator", "init", "--shares", "3", "--threshold", "2", env=addr)
    assert init.error(1) == "error: cannot print the result: standard output is closed"
    status = run_cli("operator", "status", "-o", "json", env=addr).ok().json()
    assert isinstance(status, dict) and status["initialized"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("secrets", "put", "a/b/c", "-"), "error: stdin: stdin is closed"),
        (("token", "lookup", "--token-stdin"), "error: --token-stdin: stdin is closed"),
        (("secrets", "destroy", "a/b/c", "--version", "1"), "pass --yes to confirm"),
        (("operator", "unseal", "-"), "error: stdin: stdin is closed"),
    ],
)
def test_a_closed_stdin_is_a_usage_error(args: tuple[str, ...], message: str) -> None:
    offline = {"MEDSECRETS_ADDR": "http://127.0.0.1:9", "MEDSECRETS_TOKEN": "ms.offline"}
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", *CLI, *args],
        capture_output=True, env=_base_env() | offline, timeout=60, check=False,
    )  # fmt: skip
    result = CliResult(args, done.returncode, done.stdout.decode(), done.stderr.decode())
    assert message in result.error(2)


def _stderr_on_a_terminal(*args: str) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal (stdout a pipe); its exit code and
    everything written on the terminal."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
        env=_base_env(),
    )  # fmt: skip
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.stdout is not None
    proc.stdout.read()
    return proc.wait(timeout=120), b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_verify_in_worker_processes_moves_its_byte_bar_to_the_end(tmp_path: Path) -> None:
    """A log of PARALLEL_MIN_BYTES or more is verified by worker processes, whose reads
    this process does not make: the bar used to stay at 0.0 MB; it follows the blocks as
    they are taken (``verify_files(progress=)``) and reaches the file's size."""
    from tests.audit.chainmaker import make_log, write_log

    from medsecrets.workers import PARALLEL_MIN_BYTES, cores

    if cores() < 2:
        pytest.skip("one core: verified in this process")
    maker = make_log(2, seed=3)
    size = sum(map(len, maker.lines))
    while size < PARALLEL_MIN_BYTES + (1 << 20):
        before = len(maker.lines)
        maker.request_pair()
        size += sum(map(len, maker.lines[before:]))
    log = write_log(tmp_path / "audit.jsonl", maker.lines)
    code, terminal = _stderr_on_a_terminal("audit", "verify", str(log))
    assert code == 0, terminal
    total = f"{size / 1e6:.1f}"
    assert f"{total}/{total} MB" in terminal, terminal[-2000:]


def test_ctrl_c_while_the_cli_starts_prints_no_traceback() -> None:
    """Importing the CLI takes about a second, before ``main`` can catch anything: a
    Ctrl-C then printed a stack trace of the import; it ends quietly by SIGINT."""
    import signal
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "import medsecrets.cli.app\nraise KeyboardInterrupt"],
        capture_output=True, env=_base_env(), timeout=60, check=False,
    )  # fmt: skip
    assert done.stderr == b""
    assert done.returncode == -signal.SIGINT


@pytest.mark.parametrize(
    ("args", "code"),
    [(("catalog", "check", "{fifo}"), 1), (("catalog", "show", "--file", "{fifo}"), 1),
     (("audit", "analyze", "--catalog", "{fifo}", "{log}"), 2)],
)  # fmt: skip
def test_a_catalog_that_is_not_a_regular_file_is_refused_at_once(
    tmp_path: Path, args: tuple[str, ...], code: int
) -> None:
    """The loader reads a whole catalog file: a FIFO without a writer blocked it for ever
    (and ``/dev/zero`` filled memory). For ``audit analyze`` the catalog is an option's
    value: a usage error (2); for the catalog commands it is what they check (1)."""
    fifo = tmp_path / "catalog.yaml"
    os.mkfifo(fifo)
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"")
    argv = [a.format(fifo=fifo, log=log) for a in args]
    line = run_cli(*argv, timeout=30).error(code)
    assert "not a regular file" in line


def test_a_catalog_over_1_mib_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:
        handle.truncate((1 << 20) + 1)
    assert "larger than 1 MiB" in run_cli("catalog", "check", str(big)).error(1)
