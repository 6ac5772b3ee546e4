"""Issue 3: the server over HTTP, under wrk, against ceilings measured in the same run.

- secret read (token, authorization, storage, decrypt, JSON) vs a bare Starlette endpoint
  returning the same bytes, on the same server (granian, embedded, one worker, on the
  event loop our server runs on: ``medsecrets.wakeloop``; the issue's ceiling, served
  through ASGI), vs a bare RSGI callable (the interface our server uses), and
  vs the durable-audit floor (``floor_server.py``: that RSGI callable answering once a
  minimal audit process has fsync'd the request's records: the least a durably audited read
  can cost here);
- the same read vs moto's Secrets Manager ``GetSecretValue`` (the Python peer implementation);
- durable secret writes over HTTP on SQLite vs the disk's raw single-row durable commit rate;
- resident memory of the server holding 10,000 secrets after the read benchmark, across runs;
- where the reads' CPU goes (``benchmarks.cpu``, from ``/proc``): per read, the server's
  event-loop thread, the whole server process and its audit process, and the machine's idle
  share during the audited runs (a microsecond on the loop's thread is worth about twice one
  in the audit process: ``docs/benchmarks.md``, session 21).

All load is wrk on 127.0.0.1 (``make bench`` installs it with apt when missing). The read
runs come in ``READ_ROUNDS`` rounds, each running our read and every ceiling once, back to
back; a ratio to a ceiling is the median of its per-round ratios (on a machine whose speed
drifts, the median of each side alone may pair a slow run with a fast one).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.cpu import CpuShare, per_request, snapshot
from benchmarks.measure import Figure
from medsecrets.testing.serverproc import ServerProcess, free_port

SECRETS = 10_000
CONNECTIONS = 32
READ_PATH = "medessence/bench/auth/svc-00042"
READ_ROUNDS = 5
"""Rounds of the read runs: in each, our read and every ceiling run once, back to back."""

_BARE_SERVER = r"""
import asyncio, sys
from granian.constants import Interfaces
from granian.http import HTTP1Settings
from granian.server.embed import Server
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

body = open(sys.argv[2], "rb").read()

async def endpoint(request):
    return Response(body, media_type="application/json")

app = Starlette(routes=[Route("/v1/secrets/{path:path}", endpoint)])
server = Server(app, address="127.0.0.1", port=int(sys.argv[1]), interface=Interfaces.ASGI,
                log_access=False, websockets=False,
                http1_settings=HTTP1Settings(header_read_timeout=30_000))
from medsecrets.wakeloop import new_loop  # the loop our server runs on
with asyncio.Runner(loop_factory=new_loop) as runner:
    runner.run(server.serve())
"""

_BARE_RSGI_SERVER = r"""
import asyncio, sys
from granian.constants import Interfaces
from granian.http import HTTP1Settings
from granian.server.embed import Server

body = open(sys.argv[2], "rb").read()
headers = [("content-type", "application/json")]

async def app(scope, protocol):
    protocol.response_bytes(200, headers, body)

server = Server(app, address="127.0.0.1", port=int(sys.argv[1]), interface=Interfaces.RSGI,
                log_access=False, websockets=False,
                http1_settings=HTTP1Settings(header_read_timeout=30_000))
from medsecrets.wakeloop import new_loop  # the loop our server runs on
with asyncio.Runner(loop_factory=new_loop) as runner:
    runner.run(server.serve())
"""

_MOTO_LUA = """
wrk.method = "POST"
wrk.body = '{"SecretId": "medessence/bench/auth"}'
wrk.headers["Content-Type"] = "application/x-amz-json-1.1"
wrk.headers["X-Amz-Target"] = "secretsmanager.GetSecretValue"
wrk.headers["Authorization"] = "AWS4-HMAC-SHA256 "
  .. "Credential=testing/20260101/us-east-1/secretsmanager/aws4_request, "
  .. "SignedHeaders=host, Signature=0"
"""

_WRITE_LUA = """
local counter = 0
local next_id = 0
setup = function(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
request = function()
  counter = counter + 1
  local path = "/v1/secrets/medessence/bench/auth/w-" .. id .. "-" .. counter .. "-" .. RUN
  return wrk.format("PUT", path, {["Content-Type"] = "application/json",
                                   ["Authorization"] = "Bearer " .. TOKEN}, BODY)
end
"""


def write_script(token: str, run_no: int, value: dict[str, str]) -> str:
    """The wrk script of one write run: new secrets named by thread, counter and run."""
    return (
        f"TOKEN = {json.dumps(token)}\nRUN = {run_no}\n"
        f"BODY = {json.dumps(json.dumps({'fields': value}))}\n" + _WRITE_LUA
    )


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run."""

    rps: float
    p99_ms: float
    errors: int
    requests: int


def _wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed (make bench installs it: apt-get install wrk)")
    return found


def wrk(
    url: str, *, seconds: int, script: str | None = None, token: str | None = None
) -> WrkResult:
    """Run wrk against ``url`` with 32 connections and parse its summary."""
    args = [_wrk_binary(), "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    if token is not None:
        args += ["-H", f"Authorization: Bearer {token}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script or "")
    args += ["-s", lua.name, url]
    try:
        out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=seconds + 30)
    finally:
        os.unlink(lua.name)
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", text)
    assert p99 is not None, text
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = int(bad.group(1)) if bad else 0
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return WrkResult(rps, float(p99.group(1)) * scale, errors, done)


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1)) / 1024


def _children_rss_mib(pid: int) -> float:
    """The resident size of ``pid``'s child processes (its audit process)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                total += _rss_mib(int(child))
            except FileNotFoundError:  # exited meanwhile
                continue
    return total


FLOOR_SERVER = Path(__file__).resolve().parent / "floor_server.py"


@contextmanager
def _bare_server(
    body: bytes, workdir: Path, program: Sequence[str] = ("-c", _BARE_SERVER), *extra: str
) -> Iterator[str]:
    """A ceiling server (``python *program PORT BODY_FILE *extra``) answering ``body``."""
    body_file = workdir / "body.json"
    body_file.write_bytes(body)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, *program, str(port), str(body_file), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1/secrets/{READ_PATH}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url).content == body:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the bare server did not start")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def _moto() -> Iterator[str]:
    import boto3

    from medsecrets.testing.motoserver import (
        DUMMY_ACCESS_KEY_ID,
        DUMMY_SECRET_ACCESS_KEY,
        MotoServer,
    )

    with MotoServer() as moto:
        client = boto3.client(
            "secretsmanager",
            endpoint_url=moto.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=DUMMY_ACCESS_KEY_ID,
            aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
        )
        client.create_secret(
            Name="medessence/bench/auth", SecretString=json.dumps({"k": "v" * 200})
        )
        yield moto.endpoint_url + "/"


def seed(addr: str, token: str, value: dict[str, str], count: int) -> None:
    """Write ``count`` secrets over HTTP with 16 concurrent clients."""
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []

    def worker(start: int) -> None:
        with httpx.Client(base_url=addr, headers=headers, timeout=60) as http:
            for i in range(start, count, 16):
                r = http.put(
                    f"/v1/secrets/medessence/bench/auth/svc-{i:05d}", json={"fields": value}
                )
                if r.status_code != 200:
                    failures.append(r.text)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"seeding failed: {failures[0]}")


def _raw_commit_rate(workdir: Path, count: int) -> float:
    """Single-row durable commits per second on this disk: plain ``sqlite3``, WAL,
    ``synchronous=FULL`` (SQLite's own fsync at each commit), one writer, 1 KiB rows;
    the disk's ceiling, independent of ``SqliteStorage``."""
    import sqlite3

    conn = sqlite3.connect(workdir / "raw-commits.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("PRAGMA synchronous=FULL").fetchall()
        conn.execute(
            "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)"
            " WITHOUT ROWID"
        )
        blob = os.urandom(1024)
        start = time.perf_counter()
        for i in range(count):
            conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (f"raw/{i:08d}", blob))
        return count / (time.perf_counter() - start)
    finally:
        conn.close()


def measured_wrk(
    pid: int,
    shares: list[CpuShare],
    url: str,
    *,
    seconds: int,
    token: str | None = None,
    script: str | None = None,
) -> WrkResult:
    """``wrk`` (``token``, ``script``: as ``wrk`` takes them) against server ``pid``; the
    CPU its requests cost goes to ``shares`` (where ``/proc`` tells)."""
    before = snapshot(pid)
    result = wrk(url, seconds=seconds, token=token, script=script)
    after = snapshot(pid)
    if before is not None and after is not None:
        shares.append(per_request(before, after, result.requests))
    return result


def _cpu_figures(label: str, shares: list[CpuShare]) -> list[Figure]:
    """The medians of ``shares`` (none where ``/proc`` told nothing)."""
    if not shares:
        return []
    return [
        _median(f"CPU per {label}: the event-loop thread", [s.loop_us for s in shares], "µs"),
        _median(f"CPU per {label}: the server, all threads", [s.server_us for s in shares], "µs"),
        _median(f"CPU per {label}: the audit process", [s.children_us for s in shares], "µs"),
        _median(f"machine idle during the {label}s", [s.idle_percent for s in shares], "%"),
    ]


def _median(name: str, values: list[float], unit: str) -> Figure:
    return Figure(name, statistics.median(values), unit, tuple(values))


def _per_round(name: str, tops: list[WrkResult], bottoms: list[WrkResult]) -> Figure:
    """The median of the per-round ratios ``tops[i] / bottoms[i]`` in per cent (each pair
    measured back to back in one round, so a machine whose speed drifts moves both)."""
    ratios = [100 * top.rps / bottom.rps for top, bottom in zip(tops, bottoms, strict=True)]
    return _median(name, ratios, "%")


def figures(quick: bool = False) -> list[Figure]:
    """Measure and return the figures."""
    from medsecrets.catalog.loader import default_catalog

    seconds = 3 if quick else 10
    secrets = 1_000 if quick else SECRETS
    value = default_catalog().category("auth").build({}, development=False)
    ours: list[WrkResult] = []
    unaudited: list[WrkResult] = []
    bare: list[WrkResult] = []
    bare_rsgi: list[WrkResult] = []
    floor: list[WrkResult] = []
    moto: list[WrkResult] = []
    rss: list[float] = []
    shares: list[CpuShare] = []
    shares_off: list[CpuShare] = []
    helper_rss: list[float] = []
    writes: list[WrkResult] = []
    writes_unaudited: list[WrkResult] = []
    raw_rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="medsecrets-http-bench-") as tmp:
        workdir = Path(tmp)
        with ServerProcess(workdir / "data") as server:
            token = server.token
            assert token is not None
            seed(server.addr, token, value, secrets)
            read_url = f"{server.addr}/v1/secrets/{READ_PATH}"
            body = httpx.get(read_url, headers={"Authorization": f"Bearer {token}"}).content
            with (
                _bare_server(body, workdir) as bare_url,
                _bare_server(body, workdir, ("-c", _BARE_RSGI_SERVER)) as rsgi_url,
                _bare_server(
                    body, workdir, (str(FLOOR_SERVER),), str(workdir / "floor-audit.log")
                ) as floor_url,
                _moto() as moto_url,
            ):
                for _ in range(READ_ROUNDS):
                    ours.append(
                        measured_wrk(server.pid, shares, read_url, seconds=seconds, token=token)
                    )
                    rss.append(_rss_mib(server.pid))
                    helper_rss.append(_children_rss_mib(server.pid))
                    bare.append(wrk(bare_url, seconds=seconds))
                    bare_rsgi.append(wrk(rsgi_url, seconds=seconds))
                    floor.append(wrk(floor_url, seconds=seconds, token=token))
                    moto.append(wrk(moto_url, seconds=seconds, script=_MOTO_LUA))
            for run_no in range(3):
                script = write_script(token, run_no, value)
                writes.append(wrk(f"{server.addr}/", seconds=seconds, script=script))
                raw_rates.append(_raw_commit_rate(workdir, 300 if quick else 1_000))
        off = {"MEDSECRETS_AUDIT_ENABLED": "false"}  # dev mode only: the cost of audit
        with ServerProcess(workdir / "data-unaudited", env=off) as server:
            token = server.token
            assert token is not None
            seed(server.addr, token, value, secrets)
            read_url = f"{server.addr}/v1/secrets/{READ_PATH}"
            for _ in range(3):
                unaudited.append(
                    measured_wrk(server.pid, shares_off, read_url, seconds=seconds, token=token)
                )
            for run_no in range(3):  # the same writes without the audit's records
                script = write_script(token, run_no, value)
                writes_unaudited.append(wrk(f"{server.addr}/", seconds=seconds, script=script))
    for result in (*ours, *unaudited, *writes, *writes_unaudited):
        if result.errors:
            raise RuntimeError(f"wrk saw {result.errors} failed requests against medsecrets")
    read = _median(
        "secret read over HTTP, durable audit on (wrk -c32)", [r.rps for r in ours], "req/s"
    )
    read_off = _median(
        "secret read over HTTP, audit off (dev mode only)", [r.rps for r in unaudited], "req/s"
    )
    ceiling = _median(
        "bare Starlette endpoint, same bytes, same server", [r.rps for r in bare], "req/s"
    )
    rsgi_ceiling = _median(
        "bare RSGI endpoint (our transport), same bytes, same server",
        [r.rps for r in bare_rsgi],
        "req/s",
    )
    floor_fig = _median(
        "durable-audit floor: bare RSGI endpoint + minimal fsync'd audit process",
        [r.rps for r in floor],
        "req/s",
    )
    moto_fig = _median("moto GetSecretValue (same wrk load)", [r.rps for r in moto], "req/s")
    write = _median(
        "durable secret write over HTTP, SQLite (wrk -c32)", [r.rps for r in writes], "req/s"
    )
    write_off = _median(
        "durable secret write over HTTP, audit off (dev mode only)",
        [r.rps for r in writes_unaudited],
        "req/s",
    )
    raw = _median("raw single-row durable commit, same disk (one writer)", raw_rates, "commits/s")
    return [
        read,
        _median("secret read p99 latency, audit on", [r.p99_ms for r in ours], "ms"),
        ceiling,
        _per_round("secret read (audit on) / bare Starlette", ours, bare),
        read_off,
        _median("secret read p99 latency, audit off", [r.p99_ms for r in unaudited], "ms"),
        Figure(
            "secret read (audit off) / bare Starlette", 100 * read_off.value / ceiling.value, "%"
        ),
        Figure("cost of durable audit on reads", 100 * (1 - read.value / read_off.value), "%"),
        *_cpu_figures("audited read", shares),
        *_cpu_figures("unaudited read", shares_off)[:2],
        rsgi_ceiling,
        Figure(
            "secret read (audit off) / bare RSGI endpoint",
            100 * read_off.value / rsgi_ceiling.value,
            "%",
        ),
        floor_fig,
        _per_round("durable-audit floor / bare Starlette", floor, bare),
        _per_round("secret read (audit on) / durable-audit floor", ours, floor),
        moto_fig,
        Figure("secret read / moto GetSecretValue", read.value / moto_fig.value, "x"),
        write,
        _median("secret write p99 latency", [r.p99_ms for r in writes], "ms"),
        write_off,
        _median("secret write p99 latency, audit off", [r.p99_ms for r in writes_unaudited], "ms"),
        Figure("cost of durable audit on writes", 100 * (1 - write.value / write_off.value), "%"),
        raw,
        Figure(
            f"server RSS holding {secrets:,} secrets, after each read run",
            rss[-1],
            "MiB",
            tuple(rss),
        ),
        Figure("RSS growth from first to last read run", rss[-1] - rss[0], "MiB"),
        Figure(
            "its audit process's RSS, after each read run",
            helper_rss[-1],
            "MiB",
            tuple(helper_rss),
        ),
    ]
