"""``medsecrets audit ...`` and ``medsecrets alerts list`` end to end.

The CLI runs in-process (``medsecrets.cli.app.main``, the console script's
function: same parsing, same one-line errors and exit codes) against a real
dev server process with signed checkpoints every few records; offline
commands read that server's audit file (``<data_dir>/audit/audit.jsonl``) and
copies of it. In-process keeps the ~40 runs of this file fast; the console
script itself is covered by the other CLI tests.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from medsecrets.audit.crypt import RecordCipher
from medsecrets.audit.export import CSV_COLUMNS
from medsecrets.cli.app import main
from medsecrets.testing.anomalies import HONEYTOKENS, PREFIX, generate, write
from medsecrets.testing.serverproc import ServerProcess

VERIFY_FAILED = 7


@dataclass(frozen=True)
class Ran:
    """One in-process CLI run."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def ok(self) -> Ran:
        assert self.code == 0, f"{self.args}: exit {self.code}\n{self.stderr}"
        return self

    def error(self, code: int) -> str:
        """Assert exit ``code`` with exactly one ``error:`` line on stderr; return it."""
        assert self.code == code, f"{self.args}: exit {self.code} != {code}\n{self.stderr}"
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), self.stderr
        return lines[0]


Run = Callable[..., Ran]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A dev server that signs a checkpoint every 4 records."""
    data = tmp_path_factory.mktemp("audit-cli")
    env = {"MEDSECRETS_AUDIT_CHECKPOINT_EVERY": "4"}
    with ServerProcess(data / "data", dev=True, env=env, log_dir=data / "logs") as process:
        yield process


@pytest.fixture
def run(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Run:
    """``run(*args, input="", env={})``: the CLI against ``server`` with its root token."""
    for name in [n for n in os.environ if n.startswith("MEDSECRETS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MEDSECRETS_ADDR", server.addr)
    monkeypatch.setenv("MEDSECRETS_TOKEN", server.token or "")
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("NO_COLOR", "1")

    def invoke(*args: str, input: str = "", env: dict[str, str] | None = None) -> Ran:
        with monkeypatch.context() as scoped:
            for name, value in (env or {}).items():
                scoped.setenv(name, value)
            scoped.setattr(sys, "stdin", io.StringIO(input))
            capsys.readouterr()
            code = main(list(args))
            out, err = capsys.readouterr()
        return Ran(args, code, out, err)

    return invoke


@pytest.fixture
def audit_file(server: ServerProcess) -> Path:
    return server.data_dir / "audit" / "audit.jsonl"


def snapshot(source: Path, target: Path) -> list[bytes]:
    """Copy the complete lines of the live audit file; the lines copied."""
    lines = source.read_bytes().splitlines(keepends=True)
    lines = [line for line in lines if line.endswith(b"\n")]
    target.write_bytes(b"".join(lines))
    return lines


def fresh_path() -> str:
    return f"medessence/audit/external-services/t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def written(run: Run) -> tuple[str, str]:
    """A secret written and read once through the CLI: (path, value)."""
    path, value = fresh_path(), f"CANARY-{uuid.uuid4().hex}"
    run("secrets", "put", path, "-", input=json.dumps({"smtp_password": value})).ok()
    run("secrets", "get", path, "--field", "smtp_password").ok()
    return path, value


# -- search, who-read, hash ------------------------------------------------------------------
def test_search_finds_the_read_on_the_server_and_in_the_file(
    run: Run, written: tuple[str, str], audit_file: Path
) -> None:
    path, value = written
    args = ("audit", "search", "--operation", "secrets.read", "--path-prefix", path)
    remote = run(*args, "-o", "json").ok().json()
    offline = run(*args, "--file", str(audit_file), "-o", "json").ok().json()
    for found in (remote, offline):
        assert isinstance(found, dict)
        kinds = [(r["kind"], r["outcome"]) for r in found["records"]]
        assert kinds == [("request", None), ("response", "success")]
        assert {r["path"] for r in found["records"]} == {path}
        assert found["truncated"] is False
    assert remote["records"] == offline["records"]
    table = run(*args, "--outcome", "success").ok().stdout
    assert path in table and "secrets.read" in table and "1 record(s)" in table
    lines = run(*args, "--format", "jsonl").ok().stdout.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [r["seq"] for r in remote["records"]]
    assert value not in audit_file.read_text(encoding="utf-8")


def test_search_limit_warns_when_more_records_match(run: Run, written: tuple[str, str]) -> None:
    result = run("audit", "search", "--path-prefix", written[0], "--limit", "1", "-o", "json").ok()
    assert len(result.json()["records"]) == 1 and result.json()["truncated"] is True
    assert "raise --limit" in result.stderr
    # more than the server sends: capped at its 10,000, not refused
    for command in ("search", "export"):
        run("audit", command, "--path-prefix", written[0], "--limit", "20000").ok()


def test_who_read_lists_the_read(run: Run, written: tuple[str, str], audit_file: Path) -> None:
    path, _ = written
    for extra in ((), ("--file", str(audit_file))):
        found = run("audit", "who-read", path, *extra, "-o", "json").ok().json()
        assert isinstance(found, dict)
        [read] = found["reads"]
        assert read["principal"] == "dev-root" and read["remote"] == "127.0.0.1"
        assert read["path"] == path and read["request_id"]
    later = run("audit", "who-read", path, "--since", "2999-01-01", "-o", "json").ok().json()
    assert later["reads"] == []
    table = run("audit", "who-read", path, "--since", "1h", "--file", str(audit_file)).ok()
    assert "dev-root" in table.stdout and "1 read(s)" in table.stdout


def test_a_quoted_pattern_reads_a_device_s_files_in_chain_order(
    run: Run, written: tuple[str, str], audit_file: Path, tmp_path: Path
) -> None:
    lines = snapshot(audit_file, tmp_path / "all.jsonl")
    half = len(lines) // 2
    (tmp_path / "audit-20260101T000000Z-000000000001.jsonl").write_bytes(b"".join(lines[:half]))
    (tmp_path / "audit.jsonl").write_bytes(b"".join(lines[half:]))
    pattern = str(tmp_path / "audit*.jsonl")
    found = run("audit", "search", "--file", pattern, "--limit", "10000", "-o", "json").ok()
    seqs = [record["seq"] for record in found.json()["records"]]
    assert seqs == [json.loads(line)["seq"] for line in lines]
    assert seqs == sorted(seqs)
    nothing = str(tmp_path / "nothing-*.jsonl")
    refused = run("audit", "search", "--file", nothing).error(2)
    assert f"cannot read {nothing}: no such file, and no file matches it as a pattern" in refused
    wide = tmp_path / "wide.jsonl"
    wide.write_bytes(lines[0] + b"x" * (2 << 20) + b"\n")
    assert f"{wide}:2: a line over 1048576 bytes" in run(
        "audit", "search", "--file", str(wide)
    ).error(2)


def test_hash_of_the_written_value_is_in_the_written_record(
    run: Run, written: tuple[str, str]
) -> None:
    path, value = written
    quiet = run("audit", "hash", "-", input=value + "\n").ok()
    digest = quiet.stdout.strip()
    assert re.fullmatch(r"hmac-sha256:[0-9a-f]{64}", digest) and quiet.stderr == ""
    loud = run("audit", "hash", value, "-o", "json").ok()
    assert loud.json() == {"device": "file", "hash": digest}
    assert "visible to other users" in loud.stderr and value not in loud.stderr
    found = run(
        "audit", "search", "--operation", "secrets.write", "--kind", "request",
        "--path-prefix", path, "-o", "json",
    ).ok().json()  # fmt: skip
    [record] = found["records"]
    assert record["data"]["fields"]["smtp_password"] == digest
    assert run("audit", "hash", "other-value").ok().stdout.strip() != digest


# -- verify ----------------------------------------------------------------------------------
def wait_for_checkpoint(path: Path) -> None:
    deadline = time.monotonic() + 15
    while not (path.exists() and path.read_bytes().count(b"\n")):
        assert time.monotonic() < deadline, "no checkpoint was exported"
        time.sleep(0.1)


def test_verify_the_dev_log_is_clean_with_signed_checkpoints(
    run: Run, written: tuple[str, str], audit_file: Path, tmp_path: Path
) -> None:
    checkpoints = audit_file.with_name("checkpoints.jsonl")
    wait_for_checkpoint(checkpoints)
    pem = tmp_path / "audit.pub"
    pem.write_text(run("audit", "public-key").ok().stdout, encoding="utf-8")
    report = run(
        "audit", "verify", str(audit_file), "--public-key", str(pem),
        "--checkpoints", str(checkpoints), "--from-start", "-o", "json",
    ).ok().json()  # fmt: skip
    assert isinstance(report, dict) and report["ok"] is True
    assert report["first_seq"] == 1 and report["records"] == report["last_seq"] > 4
    assert report["checkpoints_verified"] >= 1 and report["exported_checkpoints"] >= 1
    text = run("audit", "verify", str(audit_file), "--public-key", "-").ok().stdout
    assert text.startswith("OK: ") and "the chain is intact" in text
    assert "Checkpoint signatures:" in text and "verified (key " in text


def test_verify_names_the_first_bad_record(
    run: Run, written: tuple[str, str], audit_file: Path, tmp_path: Path
) -> None:
    lines = snapshot(audit_file, tmp_path / "clean.jsonl")
    run("audit", "verify", str(tmp_path / "clean.jsonl"), "--from-start").ok()
    bad, index = bytearray(b"".join(lines)), 3
    at = sum(len(line) for line in lines[:index]) + len(lines[index]) // 2
    bad[at] = ord("X") if bad[at] != ord("X") else ord("Y")
    flipped = tmp_path / "flipped.jsonl"
    flipped.write_bytes(bytes(bad))
    line = run("audit", "verify", str(flipped)).error(VERIFY_FAILED)
    assert f"{flipped} line index {index} (line {index + 1}), seq {index + 1}" in line
    assert line.endswith("hash mismatch")
    result = run("audit", "verify", str(flipped), "-o", "json")
    assert result.code == VERIFY_FAILED
    assert result.json()["first_bad_index"] == index


def test_verify_detects_a_truncated_tail_against_exported_checkpoints(
    run: Run, written: tuple[str, str], audit_file: Path, tmp_path: Path
) -> None:
    checkpoints = audit_file.with_name("checkpoints.jsonl")
    wait_for_checkpoint(checkpoints)
    lines = snapshot(audit_file, tmp_path / "log.jsonl")
    short = tmp_path / "short.jsonl"
    short.write_bytes(b"".join(lines[:2]))
    run("audit", "verify", str(short)).ok()  # alone, a short log looks fine
    line = run("audit", "verify", str(short), "--checkpoints", str(checkpoints)).error(
        VERIFY_FAILED
    )
    assert "line index 2" in line and "truncated" in line


def test_verify_refuses_a_checkpoint_filter_that_leaves_none(
    run: Run, written: tuple[str, str], audit_file: Path, tmp_path: Path
) -> None:
    """--checkpoints with a --node or --device that matches none of them (a typo, a
    worker's <node>-<pid>) would skip the tail check: a usage error naming what is held."""
    checkpoints = audit_file.with_name("checkpoints.jsonl")
    wait_for_checkpoint(checkpoints)
    node = json.loads(checkpoints.read_bytes().splitlines()[0])["node"]
    lines = snapshot(audit_file, tmp_path / "log.jsonl")
    short = tmp_path / "short.jsonl"
    short.write_bytes(b"".join(lines[:2]))  # its tail cut off
    given = ("audit", "verify", str(short), "--checkpoints", str(checkpoints))
    for args, wanted in (
        (("--node", "nope"), "node 'nope'"),
        (("--device", "db"), "device 'db'"),
        (("--node", node, "--device", "db"), f"node {node!r} and device 'db'"),
    ):
        line = run(*given, *args).error(2)
        assert f"--checkpoints {checkpoints}: none of its" in line, line
        assert f"is of {wanted}, so the tail could not be checked" in line, line
        assert f"(it holds node {node!r} device 'file')" in line, line
        assert run(*given, *args, "-o", "json").code == 2
    line = run(*given, "--node", node, "--device", "file").error(VERIFY_FAILED)
    assert "truncated" in line
    assert "give --checkpoints too" in run("audit", "verify", str(short), "--node", node).error(2)
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    out = run("audit", "verify", str(short), "--checkpoints", str(empty)).ok().stdout
    assert f"Exported checkpoints: {empty} holds none: the tail was not checked." in out


# -- export ----------------------------------------------------------------------------------
def test_export_csv_from_a_file_parses(
    run: Run, written: tuple[str, str], audit_file: Path, tmp_path: Path
) -> None:
    lines = snapshot(audit_file, tmp_path / "log.jsonl")
    out = run("audit", "export", "--format", "csv", "--file", str(tmp_path / "log.jsonl")).ok()
    rows = list(csv.reader(io.StringIO(out.stdout)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [int(row[0]) for row in rows[1:]] == list(range(1, len(lines) + 1))
    writes = run(
        "audit", "export", "--format", "csv", "--file", str(tmp_path / "log.jsonl"),
        "--operation", "secrets.write", "--path-prefix", written[0],
    ).ok().stdout  # fmt: skip
    table = list(csv.DictReader(io.StringIO(writes)))
    assert [row["kind"] for row in table] == ["request", "response"]
    assert table[1]["outcome"] == "success" and table[1]["path"] == written[0]


def cef_extension(text: str) -> dict[str, str]:
    """The ``key=value`` pairs of a CEF extension (a key starts after an unescaped space)."""
    return dict(part.partition("=")[::2] for part in re.split(r" (?=[A-Za-z0-9]+=)", text))


def test_export_cef_from_the_server_to_a_private_file(
    run: Run, written: tuple[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "reads.cef"
    done = run(
        "audit", "export", "--format", "cef", "--operation", "secrets.read",
        "--path-prefix", written[0], "--out", str(out),
    ).ok()  # fmt: skip
    assert done.stderr.strip() == f"Exported 2 record(s) to {out} (cef)."
    assert done.stdout == ""  # --out /dev/stdout carries the records alone
    for name in ("-", "/dev/stdout"):  # stdout, wherever the shell sent it
        to_stdout = run(
            "audit", "export", "--format", "cef", "--operation", "secrets.read",
            "--path-prefix", written[0], "--out", name,
        ).ok()  # fmt: skip
        assert to_stdout.stdout.count("CEF:0|") == 2
        assert to_stdout.stderr.strip() == f"Exported 2 record(s) to {name} (cef)."
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    for line in lines:
        parts = line.split("|", 7)
        assert parts[:3] == ["CEF:0", "MedEssenceAI", "medsecrets"] and len(parts) == 8
        assert parts[4] == "secrets.read" and parts[6] == "3"
        extension = cef_extension(parts[7])
        assert extension["request"] == written[0] and extension["suser"] == "dev-root"
        assert extension["act"] == "secrets.read" and extension["src"] == "127.0.0.1"


# -- devices, alerts -------------------------------------------------------------------------
def test_devices_shows_the_file_device(run: Run) -> None:
    found = run("audit", "devices", "-o", "json").ok().json()
    [device] = found["devices"]
    assert device["name"] == "file" and device["up"] is True and device["records"] > 0
    assert "file" in run("audit", "devices").ok().stdout


def test_alerts_list_shows_a_failed_access_burst(run: Run) -> None:
    path = fresh_path()
    for _ in range(6):
        run("secrets", "get", path, env={"MEDSECRETS_TOKEN": "ms.bogus"}).error(4)
    deadline = time.monotonic() + 15
    while True:
        alerts = run("alerts", "list", "-o", "json").ok().json()["alerts"]
        if any(a["detector"] == "failed_burst" for a in alerts):
            break
        assert time.monotonic() < deadline, alerts
        time.sleep(0.2)
    burst = next(a for a in alerts if a["detector"] == "failed_burst")
    assert burst["source"] == "127.0.0.1" and burst["delivery"]["log"]["status"] in (
        "sent", "pending",
    )  # fmt: skip
    table = run("alerts", "list", "--limit", "5").ok().stdout
    assert "failed_burst" in table and "denied accesses" in table and "log: " in table
    recorded = run("audit", "search", "--kind", "alert", "-o", "json").ok().json()
    assert any(r["alert"]["detector"] == "failed_burst" for r in recorded["records"])


# -- analyze ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelled synthetic audit log (ours) with five episodes of every anomaly kind."""
    records, labels = generate(7, 3000, 5)
    [log] = write(tmp_path_factory.mktemp("anomalies"), "ours", records, labels)
    return log


def test_analyze_shows_alerts_on_a_generated_data_set(run: Run, generated: Path) -> None:
    decoys = [arg for h in HONEYTOKENS for arg in ("--honeytoken", f"{PREFIX}/{h}")]
    report = run("audit", "analyze", str(generated), *decoys, "-o", "json").ok().json()
    assert isinstance(report, dict) and report["formats"] == {str(generated): "ours"}
    assert report["events"] > 3000 and len(report["alerts"]) >= 9
    for detector in ("rate", "bulk", "failed_burst", "emergency", "honeytoken"):
        assert report["counts"][detector] > 0, detector
    table = run("audit", "analyze", str(generated), "--limit", "3").ok().stdout
    assert "alerts per detector" in table and "events/s" in table and "more (--limit 0" in table
    quiet = run(
        "audit", "analyze", str(generated), "--format", "ours", "--rate-threshold", "1000",
        "-o", "json",
    ).ok().json()  # fmt: skip
    assert quiet["counts"]["rate"] == 0 and quiet["counts"]["honeytoken"] == 0


def test_analyze_takes_the_thresholds_of_a_server_config_file(
    run: Run, generated: Path, tmp_path: Path
) -> None:
    """``--config``: the server's ``monitor.*`` thresholds offline; flags still win; a bad
    file is one line and exit code 2."""
    default = run("audit", "analyze", str(generated), "-o", "json").ok().json()["counts"]
    config = tmp_path / "server.toml"
    config.write_text(  # a production server's file: its TLS files and database are not here
        '[tls]\ncert_file = "/etc/medsecrets/tls/server.pem"\n'
        'key_file = "/etc/medsecrets/tls/server.key"\n'
        '[storage]\ntype = "postgres"\ndsn = "postgresql://medsecrets@db/medsecrets"\n'
        "[monitor]\nrate_threshold = 100000\nfailed_denials = 1000\n"
    )
    quiet = run("audit", "analyze", str(generated), "--config", str(config), "-o", "json")
    counts = quiet.ok().json()["counts"]
    assert default["rate"] > 0 and default["failed_burst"] > 0
    assert counts["rate"] == 0 and counts["failed_burst"] == 0
    assert counts["bulk"] == default["bulk"]
    flagged = run(
        "audit", "analyze", str(generated), "--config", str(config), "--rate-threshold", "50",
        "-o", "json",
    ).ok().json()["counts"]  # fmt: skip
    assert flagged["rate"] == default["rate"] and flagged["failed_burst"] == 0
    config.write_text("[monitor]\nbulk_distinct = 0\n")
    error = run("audit", "analyze", str(generated), "--config", str(config)).error(2)
    assert "monitor.bulk_distinct" in error and len(error.strip().splitlines()) == 1


def test_analyze_reports_the_cloudtrail_copies_it_skipped(run: Run, tmp_path: Path) -> None:
    """The same trail file given twice (an account's own trail beside the organisation's):
    every event counted once, the copies counted and warned about."""
    from tests.monitor.test_sources import trail_record

    records = [
        trail_record(eventID=f"e-{i}", eventTime=f"2025-03-04T10:15:{i:02d}Z") for i in range(5)
    ]
    name = "111122223333_CloudTrail_us-east-1_20250304T1020Z_abc.json"
    for trail in ("org", "own"):
        (tmp_path / trail).mkdir()
        (tmp_path / trail / name).write_text(json.dumps({"Records": records}))
    done = run(
        "audit", "analyze", str(tmp_path / "org" / name), str(tmp_path / "own" / name),
        "-o", "json",
    ).ok()  # fmt: skip
    report = done.json()
    assert isinstance(report, dict)
    assert (report["events"], report["duplicate_events"]) == (5, 5)
    assert "skipped 5 second cop(ies) of CloudTrail events" in done.stderr


# -- encrypted files -------------------------------------------------------------------------
def test_read_and_verify_an_encrypted_log(
    run: Run, written: tuple[str, str], audit_file: Path, tmp_path: Path
) -> None:
    key = os.urandom(32)
    cipher = RecordCipher(key)
    lines = snapshot(audit_file, tmp_path / "plain.jsonl")
    sealed = tmp_path / "sealed.jsonl"
    sealed.write_bytes(b"".join(cipher.seal(line) for line in lines))
    key_file = tmp_path / "audit.key"
    key_file.write_text(key.hex() + "\n", encoding="ascii")
    assert written[0].encode() not in sealed.read_bytes()

    out = run("audit", "read", str(sealed), "--key-file", str(key_file)).ok().stdout
    assert [json.loads(line) for line in out.splitlines()] == [json.loads(x) for x in lines]
    report = run("audit", "verify", str(sealed), "--key-file", str(key_file), "-o", "json")
    assert report.ok().json()["sealed_unchecked"] == 0
    blind = run("audit", "verify", str(sealed)).ok().stdout
    assert f"Encrypted records: {len(lines)} checked for their place" in blind
    found = run(
        "audit", "who-read", written[0], "--file", str(sealed), "--key-file", str(key_file),
        "-o", "json",
    ).ok().json()  # fmt: skip
    assert len(found["reads"]) == 1

    assert "encrypted: give --key-file" in run("audit", "search", "--file", str(sealed)).error(2)
    other = tmp_path / "other.key"
    other.write_text(os.urandom(32).hex(), encoding="ascii")
    assert "cannot be decoded" in run("audit", "read", str(sealed), "--key-file", str(other)).error(
        2
    )
    bad = run("audit", "verify", str(sealed), "--key-file", str(other)).error(VERIFY_FAILED)
    assert "line index 0" in bad and "malformed line" in bad


# -- errors ----------------------------------------------------------------------------------
def test_errors_are_one_line_with_the_documented_exit_code(run: Run, tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    assert f"cannot read {missing}" in run("audit", "verify", str(missing)).error(2)
    assert f"cannot read {missing}" in run("audit", "search", "--file", str(missing)).error(2)
    assert "--since: expected an ISO 8601" in run("audit", "search", "--since", "soon").error(2)
    assert "--until" in run("audit", "export", "--until", "2025-13-45").error(2)
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"seq": 1, "kind": "request", "hash": "x"}\nnot json\n', encoding="utf-8")
    assert f"{junk}:2: not a JSON record" in run("audit", "search", "--file", str(junk)).error(2)
    junk.write_text('{"a": 1}\n', encoding="utf-8")  # JSON, but no audit record
    for command in (("search",), ("who-read", "medessence/x/auth"), ("export",)):
        assert f"{junk}:1: not an audit record" in run(
            "audit", *command, "--file", str(junk)
        ).error(2)
    text = tmp_path / "notes.txt"
    text.write_text("hello\n", encoding="utf-8")
    assert "cannot tell the log format" in run("audit", "analyze", str(text)).error(2)
    key = tmp_path / "short.key"
    key.write_text("abcd", encoding="ascii")
    message = run("audit", "read", str(junk), "--key-file", str(key)).error(2)
    assert "64 hex digits" in message and "abcd" not in message
    assert "no value" in run("audit", "hash", "-", input="").error(2)
    assert "--key-file is for audit files" in run("audit", "search", "--key-file", str(key)).error(
        2
    )
    denied = run("audit", "devices", env={"MEDSECRETS_TOKEN": "ms.bogus"}).error(4)
    assert "ms.bogus" not in denied


def test_an_unknown_operation_is_an_error_not_an_empty_answer(
    run: Run, server: ServerProcess, written: tuple[str, str], audit_file: Path
) -> None:
    # secret.read for secrets.read used to answer "0 record(s)": nobody read anything.
    for extra in ((), ("--file", str(audit_file))):
        for command in ("search", "export"):
            line = run("audit", command, "--operation", "secret.read", *extra).error(2)
            assert "unknown operation 'secret.read': one of " in line and "secrets.read" in line
    answer = httpx.get(
        f"{server.addr}/v1/sys/audit/search",
        params={"operation": "secret.read"},
        headers={"X-Medsecrets-Token": server.token or ""},
    )
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_request"
    assert "unknown operation 'secret.read'" in answer.json()["error"]["message"]


def test_a_query_no_record_can_match_is_an_error_not_an_empty_answer(
    run: Run, audit_file: Path
) -> None:
    # A window with no time in it and a malformed path prefix used to answer "0 record(s)".
    for extra in ((), ("--file", str(audit_file))):
        for command in ("search", "export"):
            for window in (("2026-01-02", "2026-01-01"), ("1h", "2h"), ("2026-03-01",) * 2):
                since, until = window
                line = run("audit", command, "--since", since, "--until", until, *extra).error(2)
                assert re.search(r"until \(.+Z\) must be later than since \(.+Z\)", line), line
            line = run("audit", command, "--path-prefix", "medessence//x", *extra).error(2)
            assert "path_prefix has an empty segment" in line
            line = run("audit", command, "--path-prefix", "medessence/../x", *extra).error(2)
            assert "path_prefix segment '..' is not allowed" in line
    line = run("audit", "who-read", "medessence//x/y").error(2)  # the server's 400, one line
    assert "path has an empty segment" in line


# What the standard library's json reads and the writer (orjson) never writes: a lone
# surrogate escape, NaN. Every reader must treat such a line as a malformed one.
UNWRITABLE = (
    (b'"principal":"dev-root"', b'"principal":"ev\\ud800il"'),
    (b'"status":200', b'"status":NaN'),
)


def test_a_record_the_writer_cannot_make_is_a_usage_error_offline(
    run: Run, written: tuple[str, str], audit_file: Path, tmp_path: Path
) -> None:
    lines = snapshot(audit_file, tmp_path / "log.jsonl")
    index = next(i for i, line in enumerate(lines) if all(old in line for old, _ in UNWRITABLE))
    key_file = tmp_path / "audit.key"
    key_file.write_text(os.urandom(32).hex(), encoding="ascii")
    for old, new in UNWRITABLE:
        bad = tmp_path / "bad.jsonl"
        bad.write_bytes(b"".join([*lines[:index], lines[index].replace(old, new)]))
        where = f"{bad}:{index + 1}: not a JSON record"
        for args in (
            ("export", "--file", str(bad)),
            ("export", "--file", str(bad), "--format", "csv"),
            ("export", "--file", str(bad), "--format", "cef"),
            ("search", "--file", str(bad)),
            ("search", "--file", str(bad), "-o", "json"),
            ("who-read", written[0], "--file", str(bad)),
            ("read", str(bad), "--key-file", str(key_file)),
            ("read", str(bad), "--key-file", str(key_file), "-o", "json"),
        ):
            assert where in run("audit", *args).error(2), args
        out = tmp_path / "out.jsonl"
        run("audit", "export", "--file", str(bad), "--out", str(out)).error(2)
        assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name[0] == "."] == []


def test_the_server_leaves_out_and_counts_a_record_the_writer_cannot_make(
    tmp_path: Path, run: Run
) -> None:
    with ServerProcess(tmp_path / "data", dev=True, log_dir=tmp_path / "logs") as other:
        env = {"MEDSECRETS_ADDR": other.addr, "MEDSECRETS_TOKEN": other.token or ""}
        path = fresh_path()
        run("secrets", "put", path, "-", input='{"smtp_password": "long-enough-1"}', env=env).ok()
        run("secrets", "get", path, env=env).ok()
        live = other.data_dir / "audit" / "audit.jsonl"
        deadline = time.monotonic() + 10
        while not (read := [x for x in live.read_bytes().splitlines(keepends=True)
                            if b'"secrets.read"' in x and b'"status":200' in x]):  # fmt: skip
            assert time.monotonic() < deadline, "the read was not recorded"
            time.sleep(0.05)
        with live.open("ab") as handle:  # copies of the read, as a tamperer could append them
            handle.write(b"".join(read[0].replace(old, new) for old, new in UNWRITABLE))
        headers = {"X-Medsecrets-Token": other.token or ""}
        for route, params in (("search", {"path_prefix": path}), ("who-read", {"path": path})):
            answer = httpx.get(f"{other.addr}/v1/sys/audit/{route}", params=params, headers=headers)
            assert answer.status_code == 200, answer.text
            assert answer.json()["unreadable"] == len(UNWRITABLE)
        found = run("audit", "search", "--path-prefix", path, "-o", "json", env=env).ok()
        operations = [r["operation"] for r in found.json()["records"]]
        assert operations == ["secrets.write", "secrets.write", "secrets.read", "secrets.read"]
        warning = f"{len(UNWRITABLE)} line(s) of the server's audit log could not be read"
        assert warning in found.stderr
        reads = run("audit", "who-read", path, "-o", "json", env=env).ok().json()["reads"]
        assert [r["principal"] for r in reads] == ["dev-root"]


def test_verify_a_device_on_the_server(
    run: Run, written: tuple[str, str], audit_file: Path
) -> None:
    wait_for_checkpoint(audit_file.with_name("checkpoints.jsonl"))
    report = run("audit", "verify", "--device", "file", "-o", "json").ok().json()
    assert report["ok"] is True and report["device"] == "file"
    assert report["records"] == report["last_seq"] > 4
    assert report["checkpoints_verified"] >= 1
    assert run("audit", "verify", "--device", "file").ok().stdout.startswith("ok: device file")
    assert "nope" in run("audit", "verify", "--device", "nope").error(3)
    assert "--device" in run("audit", "verify").error(2)


def test_the_server_finds_a_tampered_device(tmp_path: Path, run: Run) -> None:
    with ServerProcess(tmp_path / "data", dev=True, log_dir=tmp_path / "logs") as other:
        live = other.data_dir / "audit" / "audit.jsonl"
        for _ in range(3):
            httpx.get(f"{other.addr}/v1/sys/health")
        lines = live.read_bytes().splitlines(keepends=True)
        assert len(lines) > 3
        lines[2] = lines[2].replace(b'"sys.health"', b'"sys.healTH"', 1)
        if b"sys.healTH" not in lines[2]:
            lines[2] = lines[2][:-3] + (b"0" if lines[2][-3:-2] != b"0" else b"1") + lines[2][-2:]
        live.write_bytes(b"".join(lines))
        env = {"MEDSECRETS_ADDR": other.addr, "MEDSECRETS_TOKEN": other.token or ""}
        line = run("audit", "verify", "--device", "file", env=env).error(VERIFY_FAILED)
        assert "device file record index 2" in line


def test_alerts_list_says_which_alerts_another_worker_delivered() -> None:
    from medsecrets.cli.commands.alerts import _elsewhere, delivery_text

    noted = {"delivery": {}, "delivered_by": "another worker"}
    assert (delivery_text(noted["delivery"]) or _elsewhere(noted)) == "by another worker"
    own = {"delivery": {"log": {"status": "sent", "attempts": 1, "error": None}}}
    assert (delivery_text(own["delivery"]) or _elsewhere(own)) == "log: sent"
