"""Issue 4: the audit log in process: append, ``audit verify`` and ``audit analyze``.

- **append**: a ``Lane`` over a ``FileAuditDevice`` in a temporary directory
  (chain + HMAC + signed checkpoints every 1,000 records + group-committed
  fsync): threads append request records and wait until each is durable;
  records/s with 32 threads (group commit) and with one thread (one fsync per
  record: the latency bound);
- **verify**: ``verify_files`` on a 200,000-record signed log (rendered with
  ``render_line``, a checkpoint every 1,000 records, the last one exported),
  with the default worker processes and in this process alone, beside the
  ceiling of one process doing nothing but SHA-256 of every line
  (goal: 300,000 records/s);
- **analyze**: ``medsecrets audit analyze --output json`` (the command, in a
  process of its own for each run, as an operator runs it; its own figure:
  events over the seconds it spent reading and detecting) over the labelled
  synthetic data set of ``medsecrets.testing.anomalies`` scaled to more than
  200,000 events, in our format, as CloudTrail files and as a Vault audit log
  (goal on ours: 200,000 events/s; by default a large plain log is parsed by
  a worker process per core, ours is also shown in one process: ``analyze``
  with ``workers=0``, also in a fresh process), and the detectors alone on the
  same events held in memory (in this process). Run here, after the data set
  was generated and the other suites ran, ``analyze`` read 10 to 15% slower
  (a larger, older heap): not how the command runs.

Every figure is the median of three runs (the runs are shown).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.measure import Figure
from medsecrets.audit.checkpoint import CheckpointSigner
from medsecrets.audit.device import ChainHead
from medsecrets.audit.file import FileAuditDevice
from medsecrets.audit.lane import DeviceKeys, Lane
from medsecrets.audit.record import GENESIS, AuditEvent, Salter, render_line, split_path
from medsecrets.audit.verify import verify_files
from medsecrets.catalog import default_catalog
from medsecrets.monitor.detectors import DetectorSet
from medsecrets.monitor.sources import Format, read_events
from medsecrets.testing.anomalies import HONEYTOKENS, generate, write

REPEATS = 3
VERIFY_RECORDS = 200_000
ANALYZE_NORMAL = 200_000
"""Normal records of the analyze data set (plus 200 anomaly episodes of each kind)."""
KEY = hashlib.sha256(b"medsecrets-benchmark-audit-hmac").digest()
SIGNER = CheckpointSigner.from_private_bytes(hashlib.sha256(b"medsecrets-benchmark").digest())
START = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
PRINCIPALS = ("alice", "bob", "ci-deployer", "svc-inference", "svc-backup", "carol")
CATEGORIES = ("database", "api-keys", "model-registry", "smtp")
ROUTES = ("secrets.read",) * 6 + ("metadata.read", "secrets.write", "metadata.list")


def figures(quick: bool = False) -> list[Figure]:
    """Measure and return the figures (``quick``: small counts)."""
    with tempfile.TemporaryDirectory(prefix="medsecrets-bench-audit-") as tmp:
        workdir = Path(tmp)
        found = _append(workdir, quick=quick)
        found += _verify(workdir, 20_000 if quick else VERIFY_RECORDS)
        found += _analyze(workdir, 20_000 if quick else ANALYZE_NORMAL)
    return found


def _median(name: str, runs: Sequence[float], unit: str) -> Figure:
    return Figure(name, statistics.median(runs), unit, tuple(runs))


def _event(rng: random.Random, number: int, at: dt.datetime) -> AuditEvent:
    """A realistic request record (a token to HMAC, a secret path)."""
    environment = rng.choice(("production", "staging"))
    path = f"medessence/{environment}/{rng.choice(CATEGORIES)}/svc-{rng.randrange(40)}"
    env, category = split_path(path, "medessence")
    return AuditEvent(
        kind="request",
        time=at,
        request_id=f"req-{number:09d}",
        principal=rng.choice(PRINCIPALS),
        token=f"tok-{rng.getrandbits(64):016x}",
        auth="token",
        remote=f"10.0.{rng.randrange(4)}.{rng.randrange(1, 250)}",
        user_agent="medsecrets-sdk/0.1",
        operation=rng.choice(ROUTES),
        path=path,
        environment=env,
        category=category,
        version=rng.randint(1, 4),
    )


def _keys(name: str) -> DeviceKeys:
    def sign(node: str, device: str, covers: int, covers_hash: str) -> dict[str, object]:
        return SIGNER.extra(node=node, device=device, covers=covers, covers_hash=covers_hash)

    return DeviceKeys(salter=Salter(KEY), sign=sign)


# -- append -------------------------------------------------------------------------------------


def _append(workdir: Path, *, quick: bool) -> list[Figure]:
    many = _append_runs(workdir, threads=32, each=50 if quick else 300)
    one = _append_runs(workdir, threads=1, each=100 if quick else 500)
    return [
        _median("audit append, 32 threads (group commit, fsync)", many, "records/s"),
        _median("audit append, 1 thread (one fsync per record)", one, "records/s"),
    ]


def _append_runs(workdir: Path, *, threads: int, each: int) -> list[float]:
    runs = []
    for run in range(REPEATS):
        path = workdir / f"append-{threads}-{run}.log"
        lane = Lane(FileAuditDevice("file", path), node="bench-1", keys=_keys)
        lane.start()
        try:
            runs.append(_append_rate(lane, threads=threads, each=each))
        finally:
            lane.stop()
        report = verify_files([path], public_key=SIGNER.public_key, start=ChainHead(), workers=0)
        if not report.ok or report.records < threads * each:
            raise RuntimeError(f"the benchmark's audit log does not verify: {report.problem}")
    return runs


def _append_rate(lane: Lane, *, threads: int, each: int) -> float:
    from medsecrets.audit.waiter import Waiter

    barrier = threading.Barrier(threads + 1)

    def client(number: int) -> None:
        rng = random.Random(number)
        events = [_event(rng, number * each + i, START) for i in range(each)]
        barrier.wait()
        for event in events:
            waiter = Waiter(1)
            lane.append(event, waiter)
            waiter.wait()

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    return threads * each / (time.perf_counter() - started)


# -- verify -------------------------------------------------------------------------------------


def _signed_log(path: Path, count: int) -> list[dict[str, object]]:
    """Write a chain of ``count`` records (a checkpoint every 1,000th); the last checkpoint."""
    import json

    rng = random.Random(4)
    salter = Salter(KEY)
    seq, prev = 0, GENESIS
    checkpoint = b""
    with path.open("wb") as out:
        while seq < count:
            seq += 1
            at = START + dt.timedelta(seconds=seq)
            if seq % 1000 == 0:
                extra = SIGNER.extra(
                    node="bench-1", device="file", covers=seq - 1, covers_hash=prev
                )
                event = AuditEvent(kind="checkpoint", time=at, extra=extra)
            else:
                event = _event(rng, seq, at)
                if seq % 2 == 0:
                    event = dataclasses.replace(event, kind="response", status=200)
            line, prev = render_line(
                event, seq=seq, prev=prev, node="bench-1", device="file", salter=salter
            )
            out.write(line)
            if event.kind == "checkpoint":
                checkpoint = line
    return [json.loads(checkpoint)] if checkpoint else []


def _verify(workdir: Path, count: int) -> list[Figure]:
    path = workdir / "verify.log"
    exported = _signed_log(path, count)

    def rate(workers: int | None) -> list[float]:
        runs = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            report = verify_files(
                [path],
                public_key=SIGNER.public_key,
                checkpoints=exported,
                start=ChainHead(),
                workers=workers,
            )
            elapsed = time.perf_counter() - started
            if not report.ok or report.records != count:
                raise RuntimeError(f"the benchmark log does not verify: {report.problem}")
            runs.append(count / elapsed)
        return runs

    lines = path.read_bytes().splitlines()
    hashing = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for line in lines:
            hashlib.sha256(line).digest()
        hashing.append(len(lines) / (time.perf_counter() - started))
    name = f"audit verify, {count:,} signed records"
    default = f"{name} (default: a worker per core; goal >= 300,000)"
    return [
        _median(default, rate(None), "records/s"),
        _median(f"{name}, in one process", rate(0), "records/s"),
        _median("ceiling: SHA-256 of every line alone, one process", hashing, "lines/s"),
    ]


# -- analyze ------------------------------------------------------------------------------------


def _analyze(workdir: Path, normal: int) -> list[Figure]:
    records, labels = generate(seed=1, normal=normal, per_kind=200 if normal >= 100_000 else 20)
    catalog = dataclasses.replace(default_catalog(), honeytokens=frozenset(HONEYTOKENS))
    honeytoken: Callable[[str], bool] = catalog.is_honeytoken
    found: list[Figure] = []
    formats: tuple[Format, ...] = ("ours", "cloudtrail", "vault")
    for fmt in formats:
        files = write(workdir / fmt, fmt, records, labels)
        runs = []
        events = 0
        for _ in range(REPEATS):
            events, rate = _analyze_command(files, fmt)
            runs.append(rate)
        goal = " (goal >= 200,000)" if fmt == "ours" else ""
        found.append(_median(f"audit analyze, {fmt}, {events:,} events{goal}", runs, "events/s"))
        if fmt == "ours":
            alone = [_analyze_in_one_process(files, fmt) for _ in range(REPEATS)]
            found.append(_median("audit analyze, ours, in one process", alone, "events/s"))
            found.append(_detectors_alone(files, fmt, honeytoken))
    return found


def _analyze_command(files: Sequence[Path], fmt: Format) -> tuple[int, float]:
    """``medsecrets audit analyze`` over ``files``, run as a command: its events and
    events/s (its JSON output). Every detector must have found some of the data set's
    anomalies (200 of each kind), or the command did not do the benchmark's work."""
    prefix = default_catalog().prefix
    decoys = [arg for path in HONEYTOKENS for arg in ("--honeytoken", f"{prefix}/{path}")]
    done = subprocess.run(
        [
            *(sys.executable, "-m", "medsecrets", "audit", "analyze", *map(str, files)),
            *("--format", fmt, *decoys, "--output", "json"),
        ],
        check=True,
        capture_output=True,
    )
    data = json.loads(done.stdout)
    silent = sorted(name for name, count in data["counts"].items() if not count)
    if silent:
        raise RuntimeError(f"audit analyze found nothing for {', '.join(silent)}")
    return int(data["events"]), float(data["events_per_second"])


_ONE_PROCESS = """
import dataclasses, sys
from medsecrets.catalog import default_catalog
from medsecrets.monitor.analyze import analyze
from medsecrets.testing.anomalies import HONEYTOKENS
catalog = dataclasses.replace(default_catalog(), honeytokens=frozenset(HONEYTOKENS))
report = analyze(sys.argv[2:], sys.argv[1], None, catalog.is_honeytoken, workers=0)
print(report.events_per_second)
"""


def _analyze_in_one_process(files: Sequence[Path], fmt: Format) -> float:
    """``analyze`` with no worker process, in a fresh process: its events/s."""
    done = subprocess.run(
        [sys.executable, "-c", _ONE_PROCESS, fmt, *map(str, files)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(done.stdout)


def _detectors_alone(
    files: Sequence[Path], fmt: Format, honeytoken: Callable[[str], bool]
) -> Figure:
    events = [event for path in files for event in read_events(path, fmt)]
    batches = [events[start : start + 8192] for start in range(0, len(events), 8192)]
    runs = []
    for _ in range(REPEATS):
        observe_many = DetectorSet.default(None, honeytoken).observe_many
        started = time.perf_counter()
        for batch in batches:
            observe_many(batch)
        runs.append(len(events) / (time.perf_counter() - started))
    return _median(
        "detectors alone (the same events, parsed beforehand, in batches of 8,192)",
        runs,
        "events/s",
    )
