"""Server-side audit queries read every chain of the device: workers, earlier runs, node ids,
and a file device switched to encryption (a real server process each time)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from medsecrets.testing.serverproc import ServerProcess

SECRET = "medessence/development/database"
CLOSE = {"Connection": "close"}  # a new connection per request: every worker serves


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **CLOSE}


def _read(server: ServerProcess, times: int) -> None:
    for _ in range(times):
        answer = httpx.get(f"{server.addr}/v1/secrets/{SECRET}", headers=_headers(server.token))
        assert answer.status_code == 200


def _who_read(server: ServerProcess) -> dict[str, object]:
    answer = httpx.get(
        f"{server.addr}/v1/sys/audit/who-read",
        params={"path": SECRET},
        headers=_headers(server.token),
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def _search_reads(server: ServerProcess) -> dict[str, object]:
    answer = httpx.get(
        f"{server.addr}/v1/sys/audit/search",
        params={"operation": "secrets.read", "kind": "response", "limit": "1000"},
        headers=_headers(server.token),
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def _reads(body: dict[str, object]) -> list[dict[str, object]]:
    reads = body["reads"]
    assert isinstance(reads, list)
    return reads


def test_who_read_and_search_see_every_worker_and_earlier_runs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"MEDSECRETS_WORKERS": "2"}
    with ServerProcess(data, env=env, log_dir=tmp_path / "l1") as server:
        _read(server, 10)
        for _ in range(4):  # whichever worker answers
            reads = _reads(_who_read(server))
            assert len(reads) == 10
            times = [str(read["time"]) for read in reads]
            assert times == sorted(times)
    with ServerProcess(data, env=env, log_dir=tmp_path / "l2") as server:  # new pids
        _read(server, 5)
        for _ in range(4):
            assert len(_reads(_who_read(server))) == 15
            found = _search_reads(server)
            records = found["records"]
            assert isinstance(records, list)
            assert len([r for r in records if r["path"] == SECRET]) == 15
            assert found["unreadable"] == 0
    files = sorted(p.name for p in (data / "audit").glob("audit-*.jsonl"))
    assert len(files) == 4  # two workers, two runs: four chains


def test_who_read_sees_the_chains_of_earlier_node_ids(tmp_path: Path) -> None:
    """A database device keeps one chain per node id, which defaults to the host name (a
    container's changes at every start)."""
    data = tmp_path / "data"
    first = {"MEDSECRETS_AUDIT_DATABASE": "true", "MEDSECRETS_AUDIT_NODE": "pod-aaaa"}
    with ServerProcess(data, env=first, log_dir=tmp_path / "l1") as server:
        _read(server, 3)
        assert _who_read(server)["device"] == "database"
        assert len(_reads(_who_read(server))) == 3
    second = {**first, "MEDSECRETS_AUDIT_NODE": "pod-bbbb"}
    with ServerProcess(data, env=second, log_dir=tmp_path / "l2") as server:
        _read(server, 2)
        assert len(_reads(_who_read(server))) == 5


def test_queries_and_verify_after_a_switch_to_encryption(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data, log_dir=tmp_path / "l1") as server:
        _read(server, 3)
    config = tmp_path / "server.toml"
    config.write_text(
        "[[audit.device]]\n"
        'type = "file"\n'
        f'path = "{data / "audit" / "audit.jsonl"}"\n'
        'encrypt = "medessence/development/medical-encryption#audit_log_encryption_key"\n'
    )
    with ServerProcess(
        data, extra_args=["--config", str(config)], log_dir=tmp_path / "l2"
    ) as server:
        _read(server, 2)
        who = _who_read(server)
        assert len(_reads(who)) == 5
        assert who["unreadable"] == 0
        assert len(_search_reads(server)["records"]) == 5  # type: ignore[arg-type]
        verified = httpx.get(
            f"{server.addr}/v1/sys/audit/verify", headers=_headers(server.token)
        ).json()
        assert verified["ok"] is True, verified
    lines = (data / "audit" / "audit.jsonl").read_bytes().splitlines()
    assert b'"kind":"sealed"' in lines[-1]
    assert b'"kind":"sealed"' not in lines[0]


def test_an_unreadable_line_is_left_out_and_said(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data, log_dir=tmp_path / "l") as server:
        _read(server, 2)
        with (data / "audit" / "audit.jsonl").open("ab") as log:
            log.write(b"this is not a record\n")
        _read(server, 1)
        who = _who_read(server)
        assert len(_reads(who)) == 3
        assert who["unreadable"] == 1
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MEDSECRETS_")},
            "MEDSECRETS_ADDR": server.addr,
            "MEDSECRETS_TOKEN": server.token,
        }
        done = subprocess.run(
            [sys.executable, "-m", "medsecrets.cli", "audit", "who-read", SECRET],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "1 line(s) of the server's audit log could not be read" in done.stderr
        assert "3 read(s)" in done.stdout


def test_who_read_names_the_version_each_read_served(tmp_path: Path) -> None:
    """Not only the version asked for: a read of the current version, of a stage or by
    version id records the number it served (the compromised-version question)."""
    with ServerProcess(tmp_path / "data", log_dir=tmp_path / "l") as server:
        url = f"{server.addr}/v1/secrets/{SECRET}"
        headers = _headers(server.token)
        first = httpx.get(url, headers=headers).json()
        fields = dict(first["fields"])
        written = httpx.put(url, json={"fields": fields}, headers=headers)
        assert written.status_code == 200, written.text
        assert written.json()["version"]["number"] == 2
        for params in ({}, {"stage": "previous"}, {"version_id": first["id"]}, {"version": "1"}):
            assert httpx.get(url, params=params, headers=headers).status_code == 200
        reads = _reads(_who_read(server))
        assert [read["version"] for read in reads] == [1, 2, 1, 1, 1]
        found = _search_reads(server)
        writes = httpx.get(
            f"{server.addr}/v1/sys/audit/search",
            params={"operation": "secrets.write", "kind": "response"},
            headers=headers,
        ).json()["records"]
        assert [record["version"] for record in writes] == [2]
        assert len(found["records"]) == 5  # type: ignore[arg-type]


def test_times_at_the_edges_of_the_calendar(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data", log_dir=tmp_path / "l") as server:
        _read(server, 1)
        headers = _headers(server.token)
        for route, params in (
            ("search", {"since": "0001-01-01T00:00:00+01:00"}),
            ("search", {"until": "9999-12-31T23:59:59-01:00"}),
            ("who-read", {"path": SECRET, "since": "0001-01-01T00:00:00+01:00"}),
        ):
            answer = httpx.get(
                f"{server.addr}/v1/sys/audit/{route}", params=params, headers=headers
            )
            assert answer.status_code == 400, answer.text
            assert "out of range once in UTC" in answer.json()["error"]["message"]
        # a year before 1000 compares as a year, not as text ("999" > "2026")
        early = httpx.get(
            f"{server.addr}/v1/sys/audit/who-read",
            params={"path": SECRET, "since": "0999-01-01T00:00:00Z"},
            headers=headers,
        ).json()
        assert len(_reads(early)) == 1
        none = httpx.get(
            f"{server.addr}/v1/sys/audit/search",
            params={"until": "0999-01-01T00:00:00Z"},
            headers=headers,
        ).json()
        assert none["records"] == []


def test_verify_reports_an_unreadable_checkpoint_export_instead_of_failing(
    tmp_path: Path,
) -> None:
    """A tampered export file is what verify is for: the answer is ``ok: false`` naming the
    line (the CLI then exits 7), not a 500."""
    data = tmp_path / "data"
    env = {"MEDSECRETS_AUDIT_CHECKPOINT_EVERY": "3"}
    with ServerProcess(data, env=env, log_dir=tmp_path / "l") as server:
        _read(server, 3)
        export = data / "audit" / "checkpoints.jsonl"
        assert export.read_bytes().count(b"\n") >= 1
        with export.open("ab") as planted:
            planted.write(b'{"kind": "checkpoint", "seq": \n')
        answer = httpx.get(f"{server.addr}/v1/sys/audit/verify", headers=_headers(server.token))
        assert answer.status_code == 200, answer.text
        verified = answer.json()
        assert verified["ok"] is False
        assert "exported checkpoints unreadable" in verified["problem"]
        assert "checkpoints.jsonl:" in verified["problem"]
        env_cli = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MEDSECRETS_")},
            "MEDSECRETS_ADDR": server.addr,
            "MEDSECRETS_TOKEN": server.token,
        }
        done = subprocess.run(
            [sys.executable, "-m", "medsecrets.cli", "audit", "verify", "--device", "file"],
            env=env_cli,
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 7, done.stdout + done.stderr
        assert "Traceback" not in done.stderr


def test_search_over_hundreds_of_earlier_chains_keeps_few_files_open(tmp_path: Path) -> None:
    """300 chains left by workers of earlier runs, and the server held to 64 open files:
    its search used to open every chain's first file at once ('Too many open files')."""
    from tests.cli.test_audit_files import _worker_chain

    data = tmp_path / "data"
    with ServerProcess(data, log_dir=tmp_path / "l1"):
        pass  # the data directory, its audit directory and the dev token, made
    for run in range(300):
        _worker_chain(data / "audit", 1000 + run, [10.0 * run + n for n in range(3)], 2)
    with ServerProcess(data, log_dir=tmp_path / "l2") as server:
        subprocess.run(["prlimit", f"--pid={server.pid}", "--nofile=64:64"], check=True)
        answer = httpx.get(
            f"{server.addr}/v1/sys/audit/search",
            params={"operation": "secrets.read", "kind": "response", "limit": "1000"},
            headers=_headers(server.token),
        )
        assert answer.status_code == 200, answer.text
        records = answer.json()["records"]
    planted = [r for r in records if str(r["node"]).startswith("host-")]
    assert len(planted) == 900
    assert [r["time"] for r in planted] == sorted(r["time"] for r in planted)


def test_a_fifo_in_the_audit_directory_is_counted_not_waited_on(tmp_path: Path) -> None:
    """A FIFO named as a rotated file of the device's chain: the server's search and
    who-read held their thread waiting for a writer for ever. Now it is never opened
    (counted as unreadable). Here the FIFO has a writer (a thread that sends nothing), so
    a server that did open it would read it as an empty file and count nothing."""
    import threading

    data = tmp_path / "data"
    with ServerProcess(data, log_dir=tmp_path / "l") as server:
        _read(server, 2)
        fifo = data / "audit" / "audit-20200101T000000Z-1.jsonl"  # before the live file
        os.mkfifo(fifo)
        writer = threading.Thread(target=lambda: fifo.open("wb").close(), daemon=True)
        writer.start()  # it opens the FIFO once a reader does
        try:
            who = _who_read(server)
            assert len(_reads(who)) == 2
            assert who["unreadable"] == 1
            found = _search_reads(server)
            assert len(found["records"]) == 2  # type: ignore[arg-type]
            assert found["unreadable"] == 1
        finally:
            if writer.is_alive():  # never opened by the server: release the writer
                reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
                writer.join()
                os.close(reader)


def test_a_query_no_record_can_match_is_a_400_naming_it(tmp_path: Path) -> None:
    """A malformed path prefix and a window with no time in it used to answer 200 with no
    records: "nobody touched it"."""
    with ServerProcess(tmp_path / "data", log_dir=tmp_path / "l") as server:
        _read(server, 1)
        headers = _headers(server.token)
        for route, params, words in (
            ("search", {"path_prefix": "medessence//x"}, "path_prefix has an empty segment"),
            ("search", {"path_prefix": "medessence/../x"}, "path_prefix segment '..'"),
            ("who-read", {"path": "medessence//x"}, "path has an empty segment"),
            ("who-read", {"path": "medessence/development/../x"}, "path segment '..'"),
            (
                "search",
                {"since": "2026-01-02", "until": "2026-01-02T01:00:00+02:00"},  # 23:00 UTC
                "until (2026-01-01T23:00:00.000000Z) must be later than since "
                "(2026-01-02T00:00:00.000000Z)",
            ),
            ("search", {"since": "2026-01-02", "until": "2026-01-02"}, "must be later than"),
        ):
            answer = httpx.get(
                f"{server.addr}/v1/sys/audit/{route}", params=params, headers=headers
            )
            assert answer.status_code == 400, answer.text
            error = answer.json()["error"]
            assert error["code"] == "invalid_request"
            assert words in error["message"]
        fine = httpx.get(
            f"{server.addr}/v1/sys/audit/search",
            params={"path_prefix": "medessence/development/", "since": "2020-01-01"},
            headers=headers,
        )
        assert fine.status_code == 200, fine.text
        assert fine.json()["records"]


def test_verify_names_a_fifo_in_the_chain_instead_of_waiting_on_it(tmp_path: Path) -> None:
    """A FIFO named as a rotated file of the device's chain held the server's verify on
    it until the request timed out (503). It is not a regular file: the chain cannot be
    verified, and the answer says which file is to blame."""
    data = tmp_path / "data"
    with ServerProcess(data, log_dir=tmp_path / "l") as server:
        _read(server, 1)
        os.mkfifo(data / "audit" / "audit-20200101T000000Z-1.jsonl")
        answer = httpx.get(
            f"{server.addr}/v1/sys/audit/verify", headers=_headers(server.token), timeout=60
        )
        assert answer.status_code == 200, answer.text
        verified = answer.json()
        assert verified["ok"] is False
        assert verified["problem"] == (
            "audit file unreadable: audit-20200101T000000Z-1.jsonl: not a regular file"
        )
