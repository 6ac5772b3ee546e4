"""What a user hands the CLI, hostile or mistaken: bounded, strictly decoded, one line each.

Runs the console script offline (the address is unreachable: every error here
comes before a request, or instead of one).
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import stat
import subprocess
from pathlib import Path

import pytest
from tests.cli.conftest import CLI, CliResult, _base_env, run_cli

from medsecrets.cli.commands.audit import parse_time
from medsecrets.cli.errors import CliError, ExitCode
from medsecrets.cli.output import cell

OFFLINE = {"MEDSECRETS_ADDR": "http://127.0.0.1:9", "MEDSECRETS_TOKEN": "ms.offline"}
NOT_UTF8 = b"ms.\xe9\xff\n"


def _run_bytes(*args: str, input: bytes, env: dict[str, str] | None = None) -> CliResult:
    full = _base_env() | OFFLINE | (env or {})
    done = subprocess.run(
        [*CLI, *args], check=False, input=input, capture_output=True, env=full, timeout=60
    )
    return CliResult(
        tuple(args), done.returncode, done.stdout.decode(), done.stderr.decode(errors="replace")
    )


@pytest.mark.parametrize(
    "args",
    [
        ("audit", "hash", "-"),
        ("token", "lookup", "--token-stdin"),
        ("token", "revoke", "--token-stdin"),
        ("operator", "unseal", "-"),
        ("secrets", "put", "medessence/development/auth/x", "-"),
    ],
)
def test_stdin_that_is_not_utf8_is_a_usage_error(args: tuple[str, ...]) -> None:
    line = _run_bytes(*args, input=NOT_UTF8).error(2)
    assert "not UTF-8" in line


def test_a_field_file_is_read_no_further_than_the_value_limit(tmp_path: Path) -> None:
    """``FIELD=@/dev/zero`` costs 64 KiB of memory and ends in one line, not the OOM killer."""
    line = run_cli(
        "secrets", "put", "medessence/development/auth/x", "jwt_secret=@/dev/zero", env=OFFLINE
    ).error(2)
    assert "field 'jwt_secret'" in line and "larger than 64 KiB" in line
    binary = tmp_path / "value.bin"
    binary.write_bytes(b"\xff\xfe")
    line = run_cli(
        "secrets", "put", "medessence/development/auth/x", f"jwt_secret=@{binary}", env=OFFLINE
    ).error(2)
    assert "not UTF-8" in line


def test_provided_file_that_is_not_utf8(tmp_path: Path) -> None:
    provided = tmp_path / "provided.json"
    provided.write_bytes(b"\xff\xfe{}")
    line = run_cli("provision", "--env", "staging", "--provided", str(provided), env=OFFLINE).error(
        2
    )
    assert line == f"error: --provided: {provided} is not UTF-8 text"


@pytest.mark.parametrize("addr", ["http://127.0.0.1:abc", "http://[::1", "http://:8200"])
def test_a_malformed_address_is_a_usage_error(addr: str) -> None:
    line = run_cli("secrets", "list", env={**OFFLINE, "MEDSECRETS_ADDR": addr}).error(2)
    assert line.startswith("error: cannot use the connection settings: server address")


def test_a_token_that_cannot_be_a_header_is_a_usage_error_naming_no_part_of_it() -> None:
    env = {**OFFLINE, "MEDSECRETS_TOKEN": "ms.caf\u00e9-canary"}
    line = run_cli("secrets", "list", env=env).error(2)
    assert "not printable ASCII" in line and "canary" not in line


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("999999d", "the age is out of range"),
        ("99999999999d", "the age is out of range"),
        ("0001-01-01T00:00:00+01:00", "the time is out of range"),
        ("9999-12-31T23:59:59-01:00", "the time is out of range"),
    ],
)
def test_times_out_of_range_are_usage_errors(text: str, problem: str) -> None:
    with pytest.raises(CliError) as caught:
        parse_time("--since", text)
    assert (
        caught.value.exit_code == ExitCode.USAGE and caught.value.message == f"--since: {problem}"
    )
    assert parse_time("--since", "2d", now=dt.datetime(2025, 3, 3, tzinfo=dt.UTC)) == dt.datetime(
        2025, 3, 1, tzinfo=dt.UTC
    )
    line = run_cli("audit", "who-read", "medessence/x/auth", "--since", text, env=OFFLINE)
    assert problem in line.error(2)


def _records(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "audit.jsonl"
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


GOOD = '{"prev":"p","seq":1,"kind":"request","time":"2025-03-03T00:00:00.000000Z","hash":"h"}'


def test_export_out_never_replaces_a_file_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    good = _records(tmp_path, GOOD)
    existing = tmp_path / "precious.txt"
    existing.write_text("precious data", encoding="utf-8")
    existing.chmod(0o644)
    line = run_cli("audit", "export", "--file", str(good), "--out", str(existing)).error(2)
    assert line == f"error: cannot write {existing}: it exists already (give a new file)"
    assert existing.read_text(encoding="utf-8") == "precious data"

    bad = tmp_path / "bad.jsonl"
    bad.write_text(f"{GOOD}\nnot json\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert f"{bad}:2: not a JSON record" in run_cli(
        "audit", "export", "--file", str(bad), "--out", str(out)
    ).error(2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audit.jsonl",
        "bad.jsonl",
        "precious.txt",
    ]

    run_cli("audit", "export", "--file", str(good), "--out", str(out)).ok()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text(encoding="utf-8").count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audit.jsonl", "bad.jsonl", "out.jsonl", "precious.txt",
    ]  # fmt: skip


def _run_capped(*args: str) -> CliResult:
    """The console script with 768 MiB of address space: an unbounded read ends in a
    ``MemoryError`` (exit 1) there, not in the OOM killer."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (768 << 20, 768 << 20))

    done = subprocess.run(
        [*CLI, *args],
        check=False,
        capture_output=True,
        text=True,
        env=_base_env() | OFFLINE,
        timeout=60,
        preexec_fn=cap,
    )
    return CliResult(tuple(args), done.returncode, done.stdout, done.stderr)


def test_audit_keys_and_exported_checkpoints_are_read_with_a_bound(tmp_path: Path) -> None:
    """``--key-file``, ``--public-key`` (4 KiB) and ``--checkpoints`` (a line at a time,
    1 MiB each): ``/dev/zero`` or a huge file given by mistake is one usage error."""
    log = _records(tmp_path, GOOD)
    huge = tmp_path / "huge.bin"  # sparse: 2 GiB of zeros, no line break
    with huge.open("wb") as handle:
        handle.truncate(2 << 30)
    for option, command in (("--key-file", "read"), ("--public-key", "verify")):
        for source in ("/dev/zero", str(huge)):
            line = _run_capped("audit", command, str(log), option, source).error(2)
            assert line == f"error: {option}: {source} is larger than 4 KiB"
    line = _run_capped("audit", "verify", str(log), "--checkpoints", str(huge)).error(2)
    assert line == f"error: {huge}:1: a line over 1048576 bytes"
    line = _run_capped("audit", "verify", str(log), "--checkpoints", "/dev/zero").error(2)
    assert line.startswith("error: cannot read /dev/zero: not a regular file")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_export_to_a_full_device_is_one_line(tmp_path: Path) -> None:
    good = _records(tmp_path, *[GOOD] * 2000)
    line = run_cli("audit", "export", "--file", str(good), "--out", "/dev/full").error(1)
    assert line == "error: cannot write /dev/full: No space left on device"


@pytest.mark.parametrize("path", ["bad path/é", "medessence/../x", "medessence/x"])
def test_offline_who_read_checks_the_path_as_the_server_does(tmp_path: Path, path: str) -> None:
    records = _records(tmp_path, GOOD)
    run_cli("audit", "who-read", path, "--file", str(records)).error(2)


@pytest.mark.parametrize("prefix", ["A;", "A;>X;", "1", "a b ", "é"])
def test_an_env_prefix_that_is_no_shell_name_is_refused_before_the_read(prefix: str) -> None:
    """``eval "$(secrets get -o env --env-prefix 'A;')"`` would have run ``A``."""
    line = run_cli(
        "secrets", "get", "medessence/development/auth", "-o", "env", "--env-prefix", prefix,
        env=OFFLINE,
    ).error(2)  # fmt: skip
    assert line.startswith("error: --env-prefix: ") and "shell variable name" in line


def test_table_cells_show_control_characters_instead_of_sending_them() -> None:
    shown = str(cell("a\x1b[2J\x1b]0;PWN\x07b\x9b\nline two\ttab"))
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown
    assert shown == "a\\x1b[2J\\x1b]0;PWN\\x07b\\x9b\nline two\ttab"
    assert "\x1b" not in str(cell({"owner\x1b[31m": "v\x1b[5m"}))
    assert "[bold]" in str(cell("[bold]x[/bold]"))  # markup stays text
