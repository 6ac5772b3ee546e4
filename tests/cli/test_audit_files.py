"""Offline audit queries over many files (``--file``, ``audit read``), as the CLI runs them
(a subprocess each): a multi-worker server's chains merged by time, with few files open at
once, and outputs whose memory does not grow with the log."""

from __future__ import annotations

import datetime as dt
import json
import resource
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from tests.audit.chainmaker import ChainMaker
from tests.cli.conftest import CLI, Runner, _base_env

from medsecrets.audit.record import AuditEvent, render_line
from medsecrets.testing.serverproc import ServerProcess

T0 = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
SECRET = "medessence/production/database/main"
KEY = "ab" * 32


def _read_event(when: dt.datetime, principal: str) -> AuditEvent:
    return AuditEvent(
        kind="response",
        time=when,
        request_id=f"r-{principal}-{when.timestamp()}",
        principal=principal,
        remote="10.0.0.5",
        operation="secrets.read",
        path=SECRET,
        status=200,
    )


def _worker_chain(directory: Path, pid: int, seconds: list[float], rotate_after: int) -> None:
    """A worker's chain as a multi-worker server leaves it: rotated files
    ``audit-<pid>-<stamp>-<seq>.jsonl`` (``rotate_after`` records each), then the live
    ``audit-<pid>.jsonl``; node ``host-<pid>``."""
    maker = ChainMaker(node=f"host-{pid}", device="file")
    for second in seconds:
        maker.append(_read_event(T0 + dt.timedelta(seconds=second), f"user-{pid}"))
    lines = maker.lines
    first = 0
    while len(lines) - first > rotate_after:
        stamp = (T0 + dt.timedelta(seconds=seconds[first + rotate_after - 1] + 1)).strftime(
            "%Y%m%dT%H%M%SZ"
        )
        name = f"audit-{pid}-{stamp}-{first + 1:012d}.jsonl"
        (directory / name).write_bytes(b"".join(lines[first : first + rotate_after]))
        first += rotate_after
    (directory / f"audit-{pid}.jsonl").write_bytes(b"".join(lines[first:]))


@pytest.fixture
def two_workers(tmp_path: Path) -> Path:
    """Two workers' chains (rotated every 3 records), interleaved in time: worker 7 at even
    seconds, worker 31 at odd ones; 10 reads each."""
    directory = tmp_path / "audit"
    directory.mkdir()
    _worker_chain(directory, 7, [2.0 * n for n in range(10)], 3)
    _worker_chain(directory, 31, [2.0 * n + 1 for n in range(10)], 3)
    return directory


def test_search_file_merges_worker_chains_by_time(cli: Runner, two_workers: Path) -> None:
    pattern = str(two_workers / "audit*.jsonl")
    assert len(list(two_workers.iterdir())) == 8  # 3 rotated + 1 live per worker
    found = cli("audit", "search", "--file", pattern, "--limit", "6", "-o", "json").ok().json()
    assert isinstance(found, dict)
    records = found["records"]
    # the oldest six overall, in time order: both workers', not the first six of one
    assert [(r["node"], r["seq"]) for r in records] == [
        ("host-7", 1), ("host-31", 1), ("host-7", 2), ("host-31", 2), ("host-7", 3),
        ("host-31", 3),
    ]  # fmt: skip
    assert found["truncated"] is True
    every = cli("audit", "search", "--file", pattern, "--limit", "100", "-o", "json").ok().json()
    assert isinstance(every, dict)
    times = [r["time"] for r in every["records"]]
    assert len(times) == 20 and times == sorted(times)
    # files given one by one, in any order, are grouped and merged the same way
    files = sorted(str(p) for p in two_workers.iterdir())[::-1]
    args = [arg for name in files for arg in ("--file", name)]
    again = cli("audit", "search", *args, "--limit", "100", "-o", "json").ok().json()
    assert isinstance(again, dict) and again["records"] == every["records"]
    exported = cli("audit", "export", "--file", pattern, "--limit", "4").ok().stdout
    assert [json.loads(line)["node"] for line in exported.splitlines()] == [
        "host-7", "host-31", "host-7", "host-31",
    ]  # fmt: skip


def test_who_read_and_read_over_worker_files_are_in_time_order(
    cli: Runner, two_workers: Path, tmp_path: Path
) -> None:
    pattern = str(two_workers / "audit*.jsonl")
    reads = cli("audit", "who-read", SECRET, "--file", pattern, "-o", "json").ok().json()
    assert isinstance(reads, dict)
    assert [r["principal"] for r in reads["reads"][:4]] == [
        "user-7", "user-31", "user-7", "user-31",
    ]  # fmt: skip
    times = [r["time"] for r in reads["reads"]]
    assert len(times) == 20 and times == sorted(times)
    key = tmp_path / "key"
    key.write_text(KEY)
    lines = cli("audit", "read", pattern, "--key-file", str(key)).ok().stdout.splitlines()
    assert [json.loads(line)["node"] for line in lines[:2]] == ["host-7", "host-31"]
    assert [json.loads(line)["time"] for line in lines] == sorted(times)


def test_thousands_of_chains_keep_few_files_open(tmp_path: Path) -> None:
    """A worker's chains of 300 earlier runs (each its own pid, one after another in time),
    read with a limit of 48 open files: every record, in order (the merge used to open
    every chain's first file at once: 'Too many open files')."""
    directory = tmp_path / "audit"
    directory.mkdir()
    for run in range(300):
        _worker_chain(directory, 1000 + run, [10.0 * run + n for n in range(3)], 2)

    def few_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

    args = ["audit", "search", "--file", str(directory / "audit-*.jsonl"), "--limit", "10000"]
    proc = subprocess.run(
        [*CLI, *args, "-o", "json"],
        capture_output=True,
        text=True,
        env=_base_env(),
        preexec_fn=few_files,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)["records"]
    assert len(records) == 900
    assert [r["time"] for r in records] == sorted(r["time"] for r in records)


def test_the_files_of_a_two_worker_server_read_as_the_server_reads_them(
    cli: Runner, tmp_path: Path
) -> None:
    """A real server with two workers: ``search --file`` over its audit files gives the
    records the server's own search gives, in time order."""
    data = tmp_path / "data"
    with ServerProcess(data, env={"MEDSECRETS_WORKERS": "2"}, log_dir=tmp_path / "log") as server:
        headers = {"Authorization": f"Bearer {server.token}", "Connection": "close"}
        for _ in range(30):  # a connection each: both workers answer
            answer = httpx.get(f"{server.addr}/v1/secrets/medessence/development/database",
                               headers=headers)  # fmt: skip
            assert answer.status_code == 200
        answer = httpx.get(
            f"{server.addr}/v1/sys/audit/search",
            params={"operation": "secrets.read", "kind": "response", "limit": "1000"},
            headers=headers,
        )
        assert answer.status_code == 200, answer.text
    online = answer.json()["records"]
    assert len({r["node"] for r in online}) == 2, "both workers should have answered"
    offline = cli(
        "audit", "search", "--file", str(data / "audit" / "audit*.jsonl"),
        "--operation", "secrets.read", "--kind", "response", "--limit", "1000", "-o", "json",
    ).ok().json()  # fmt: skip
    assert isinstance(offline, dict)
    records = offline["records"]
    assert sorted((r["node"], r["seq"]) for r in records) == sorted(
        (r["node"], r["seq"]) for r in online
    )
    assert [r["time"] for r in records] == sorted(r["time"] for r in records)


def _repeated_log(path: Path, count: int) -> Path:
    """``count`` copies of one read record (``audit read`` checks records, not links)."""
    line, _ = render_line(
        _read_event(T0, "alice"), seq=1, prev="0" * 64, node="n", device="file", salter=None
    )
    path.write_bytes(line * count)
    return path


_MEASURE = """
import resource, subprocess, sys
with open(sys.argv[1], "wb") as out:
    code = subprocess.run(sys.argv[2:], stdout=out, check=False).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _peak_rss(args: list[str], out: Path) -> tuple[int, int]:
    """Run the CLI with stdout to ``out``: its exit code and peak resident set (KiB).

    Started by a small Python process of its own: a child's peak counts the memory of the
    process it was forked from (this test's, which grows as it parses the outputs)."""
    measured = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(out), *CLI, *args],
        capture_output=True,
        text=True,
        env=_base_env(),
        check=True,
    )
    code, peak = measured.stdout.split()
    return int(code), int(peak)


def test_read_json_is_streamed_as_one_valid_array(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(KEY)
    peaks = []
    for count in (5_000, 40_000):
        log = _repeated_log(tmp_path / f"log-{count}.jsonl", count)
        out = tmp_path / f"out-{count}.json"
        code, peak = _peak_rss(
            ["audit", "read", str(log), "--key-file", str(key), "-o", "json"], out
        )
        assert code == 0
        records = json.loads(out.read_bytes())
        assert isinstance(records, list) and len(records) == count
        assert records[-1]["principal"] == "alice"
        peaks.append(peak)
    # eight times the records, not more memory (the whole list took ~7 KiB a record)
    assert peaks[1] - peaks[0] < 16 * 1024, peaks


def test_read_json_prints_what_the_whole_list_printed(cli: Runner, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(KEY)
    log = _repeated_log(tmp_path / "log.jsonl", 3)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    text = cli("audit", "read", str(log), "--key-file", str(key), "-o", "json").ok().stdout
    assert text == json.dumps(records, indent=2, ensure_ascii=False) + "\n"
    (tmp_path / "empty.jsonl").write_bytes(b"")
    empty = cli(
        "audit", "read", str(tmp_path / "empty.jsonl"), "--key-file", str(key), "-o", "json"
    )
    assert empty.ok().stdout == "[]\n"
    two = cli("audit", "read", str(log), "--key-file", str(key), "-o", "json", "--limit", "2")
    assert two.ok().json() == records[:2]


def test_read_table_refuses_more_than_its_bound(cli: Runner, tmp_path: Path) -> None:
    from medsecrets.cli.commands.auditfiles import READ_TABLE_LIMIT

    key = tmp_path / "key"
    key.write_text(KEY)
    log = _repeated_log(tmp_path / "log.jsonl", READ_TABLE_LIMIT + 1)
    refused = cli("audit", "read", str(log), "--key-file", str(key), "-o", "table")
    line = refused.error(2)
    assert "at most 10,000 records" in line and "-o jsonl" in line and "--limit" in line
    assert refused.stdout == ""
    shown = cli("audit", "read", str(log), "--key-file", str(key), "-o", "table", "--limit", "3")
    assert "3 record(s)" in shown.ok().stdout
    at_bound = cli(
        "audit", "read", str(log), "--key-file", str(key), "-o", "table",
        "--limit", str(READ_TABLE_LIMIT),
    )  # fmt: skip
    assert f"{READ_TABLE_LIMIT} record(s)" in at_bound.ok().stdout


@pytest.mark.parametrize("bad_line", [b"garbage\n", b'{"no": "record"}\n'])
def test_read_json_prints_the_whole_array_or_nothing(
    cli: Runner, tmp_path: Path, bad_line: bytes
) -> None:
    """An unreadable line partway is exit 2 with nothing on stdout: never an array cut off
    (a JSON parse error) nor one closed early (a silently short answer)."""
    key = tmp_path / "key"
    key.write_text(KEY)
    good = _repeated_log(tmp_path / "good.jsonl", 3).read_bytes()
    log = tmp_path / "log.jsonl"
    log.write_bytes(good + bad_line + good)
    refused = cli("audit", "read", str(log), "--key-file", str(key), "-o", "json")
    assert f"{log}:4:" in refused.error(2)
    assert refused.stdout == ""
    # the records before it are still there for a --limit that stops short of it
    three = cli("audit", "read", str(log), "--key-file", str(key), "-o", "json", "--limit", "3")
    assert len(three.ok().json()) == 3  # type: ignore[arg-type]
    # jsonl is a stream of whole lines: those before the bad one, then the error
    lines = cli("audit", "read", str(log), "--key-file", str(key), "-o", "jsonl")
    lines.error(2)
    assert [json.loads(line)["principal"] for line in lines.stdout.splitlines()] == ["alice"] * 3


def test_read_json_left_unclosed_when_the_files_change_between_its_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The second pass of ``read -o json`` failing (a file rewritten meanwhile) leaves the
    array unclosed, so no JSON reader takes it for the whole, and says why."""
    from medsecrets.cli.commands import auditfiles
    from medsecrets.cli.errors import CliError, ExitCode

    passes = []

    def fake_file_records(files: object, key_file: object) -> object:
        """A fake reader: two records, then (second pass) an unreadable line after one."""
        passes.append(1)
        yield {"seq": 1, "kind": "request", "hash": "h1"}
        if len(passes) > 1:
            raise CliError("log.jsonl:2: not a JSON record", ExitCode.USAGE)
        yield {"seq": 2, "kind": "request", "hash": "h2"}

    monkeypatch.setattr(auditfiles, "file_records", fake_file_records)
    with pytest.raises(CliError) as raised:
        auditfiles.read(files=[tmp_path / "log.jsonl"], key_file=tmp_path / "key",
                        output=auditfiles.ReadFormat.json, limit=None)  # fmt: skip
    assert raised.value.exit_code is ExitCode.USAGE
    assert "changed while they were read" in raised.value.message
    printed = capsys.readouterr().out
    assert printed.startswith("[") and '"h1"' in printed
    with pytest.raises(json.JSONDecodeError):
        json.loads(printed)


def test_verify_from_start_refuses_files_holding_no_record(cli: Runner, tmp_path: Path) -> None:
    """An empty log cannot show that it starts the chain (one wiped to nothing looks the
    same): with --from-start it fails as a chain without its first record (exit 7; it said
    OK). Without --from-start nothing is claimed, and it stays 'nothing to check'."""
    empty = tmp_path / "audit.jsonl"
    empty.write_bytes(b"")
    line = cli("audit", "verify", "--from-start", str(empty)).error(7)
    assert line == (
        f"error: verification failed: {empty} line index 0 (line 1), seq 1: no record: "
        "--from-start needs the chain's first record (seq 1), and a log emptied after the "
        "fact looks the same"
    )
    found = cli("audit", "verify", "--from-start", str(empty), "-o", "json")
    assert found.code == 7
    report = found.json()
    assert isinstance(report, dict)
    assert (report["ok"], report["records"], report["first_bad_seq"]) == (False, 0, 1)
    assert "nothing to check" in cli("audit", "verify", str(empty)).ok().stdout
    maker = ChainMaker()
    maker.append(_read_event(T0, "alice"))
    chain = tmp_path / "audit-20260105T080001Z-000000000001.jsonl"
    chain.write_bytes(b"".join(maker.lines))
    # an empty live file after a rotated file that starts the chain: the log starts it
    assert "1 record(s) in 2 file(s), seq 1 to 1" in (
        cli("audit", "verify", "--from-start", str(chain), str(empty)).ok().stdout
    )
