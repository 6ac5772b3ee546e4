"""docs/audit.md walked as a user: what the commands were found doing against what it says.

Each test is one claim of the guide (or of the quality bar it rests on: bad input is one
line on stderr and a non-zero exit) that did not hold, run as the console script (a
subprocess) against real files and, where it asks the server, the shared dev server.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
from tests.cli.conftest import Runner

from medsecrets.audit.record import AuditEvent, render_line

KEY = "ab" * 32
NOT_REGULAR = "not a regular file"


def _log(path: Path, count: int = 2) -> Path:
    """A plain audit log of ``count`` copies of one read record."""
    import datetime as dt

    event = AuditEvent(
        kind="response",
        time=dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC),
        request_id="r-1",
        principal="alice",
        remote="10.0.0.5",
        operation="secrets.read",
        path="medessence/production/database/main",
        status=200,
    )
    line, _ = render_line(event, seq=1, prev="0" * 64, node="n", device="file", salter=None)
    path.write_bytes(line * count)
    return path


def _readers(target: Path, key: Path) -> list[tuple[str, ...]]:
    """Every audit command that reads audit files, given ``target``."""
    return [
        ("audit", "search", "--file", str(target)),
        ("audit", "export", "--file", str(target)),
        ("audit", "who-read", "medessence/production/database/main", "--file", str(target)),
        ("audit", "read", str(target), "--key-file", str(key)),
        ("audit", "verify", str(target)),
    ]


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "audit.key"
    path.write_text(KEY)
    path.chmod(0o600)
    return path


def test_a_fifo_given_as_an_audit_file_is_refused_not_waited_on(
    cli: Runner, tmp_path: Path, key: Path
) -> None:
    """'Input from outside is read only from regular files': search/export/who-read --file
    and read used to open a FIFO and wait for a writer for ever."""
    fifo = tmp_path / "audit.jsonl"
    os.mkfifo(fifo)
    for args in _readers(fifo, key):
        refused = cli(*args, timeout=20)
        assert NOT_REGULAR in refused.error(2), args
        assert refused.stdout == ""


def test_a_device_given_as_an_audit_file_is_refused(cli: Runner, key: Path) -> None:
    """/dev/null read as an empty log answered 'no records' (exit 0)."""
    for args in _readers(Path("/dev/null"), key):
        assert NOT_REGULAR in cli(*args).error(2), args


def test_a_gzip_compressed_log_is_named_as_such(cli: Runner, tmp_path: Path, key: Path) -> None:
    """A rotated file compressed by logrotate: verify called it a bad record (exit 7, as if
    tampered), the others 'not a JSON record'; only analyze reads gzip."""
    plain = _log(tmp_path / "plain.jsonl")
    packed = tmp_path / "audit-20260105T080000Z-000000000001.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for args in _readers(packed, key):
        line = cli(*args).error(2)
        assert "gzip-compressed" in line and "decompress" in line, args
    assert "gzip-compressed" in cli("audit", "verify", str(plain), str(packed)).error(2)
    cli("audit", "analyze", str(packed)).ok()  # documented: plain or gzip


def test_a_missing_file_with_pattern_characters_names_no_option_it_lacks(
    cli: Runner, tmp_path: Path, key: Path
) -> None:
    """`audit read` takes files as arguments: its error named a `--file` it has no such
    option as."""
    missing = tmp_path / "audit[1].jsonl"
    for args in _readers(missing, key):
        line = cli(*args).error(2)
        assert str(missing) in line and "--file" not in line, args


def test_analyze_with_a_bad_catalog_file_is_a_usage_error(cli: Runner, tmp_path: Path) -> None:
    """Exit codes: '2 usage or bad input (a file that cannot be read or is not what it
    should be)'; a --catalog that is missing, a directory or not a catalog was exit 1."""
    log = _log(tmp_path / "audit.jsonl")
    (tmp_path / "notyaml.yaml").write_text("garbage\n")
    for catalog, reason in (
        (tmp_path / "missing.yaml", "No such file"),
        (tmp_path, NOT_REGULAR),
        (tmp_path / "notyaml.yaml", "catalog must be a mapping"),
    ):
        line = cli("audit", "analyze", str(log), "--catalog", str(catalog)).error(2)
        assert line.startswith("error: --catalog: ") and reason in line, line


def test_devices_table_shows_when_a_forwarder_last_delivered(ms: Runner) -> None:
    """'medsecrets audit devices shows them (spool_pending, delivery_error, delivery_failures
    in a row, last_delivered_at)': the table had no last_delivered_at column."""
    header = ms("audit", "devices").ok().stdout.splitlines()[1]
    for column in ("spool_pending", "delivery_error", "delivery_failures", "last_delivered_at"):
        assert column in header


def test_who_read_names_the_path_in_canonical_form(ms: Runner) -> None:
    """The server answers the path in canonical form (api.md); the table's title repeated
    the path as typed."""
    shown = ms("audit", "who-read", "/medessence/development/auth/").ok().stdout
    assert shown.splitlines()[0].strip() == "reads of medessence/development/auth"


def test_verify_on_the_server_refuses_the_options_it_would_skip(ms: Runner) -> None:
    """`verify --device NAME` ran the server's check and said ok whatever else was given:
    --checkpoints (the copy kept on another host), --public-key (a saved key) and the other
    offline options were skipped quietly."""
    for extra in (
        ("--checkpoints", "/nonexistent/checkpoints.jsonl"),
        ("--public-key", "-"),
        ("--from-start",),
        ("--unsigned-tail", "5"),
        ("--key-file", "/nonexistent/audit.key"),
    ):
        refused = ms("audit", "verify", "--device", "file", *extra)
        line = refused.error(2)
        assert line.startswith(f"error: {extra[0]}: ") and "FILES" in line, line
        assert refused.stdout == ""
    assert ms("audit", "verify", "--device", "file").ok().stdout.startswith("ok: device file")


def test_verify_of_an_empty_file_says_there_was_nothing_to_check(
    cli: Runner, tmp_path: Path
) -> None:
    """An empty log printed 'seq - to 0: the chain is intact'."""
    empty = tmp_path / "audit.jsonl"
    empty.write_bytes(b"")
    first = cli("audit", "verify", str(empty)).ok().stdout.splitlines()[0]
    assert first == "OK: no record in 1 file(s): nothing to check."
