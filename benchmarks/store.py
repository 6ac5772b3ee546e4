"""Issue 2: the in-process store against raw storage in the same run.

- read of a current secret vs a raw storage ``get``: as shipped (SQLite's
  read cache on, the decrypted current value kept by the engine) and with
  every cache off (``read_cache=False``, ``cache_values=False``: each read
  runs a query and decrypts, the comparison of the goal "decrypt included");
- durable write of a new version vs a raw durable storage ``put``, from one
  thread and from 32 threads at once (each thread its own secrets, as the
  server's worker threads write for different clients; group commit lets
  concurrent writes share a commit);
- rewrap of 10,000 secrets after a KEK rotation.

On SQLite always; on PostgreSQL when its binaries are found (a throwaway cluster).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks.measure import Figure, interleaved_throughput
from medsecrets.schema.seal import KeyFileSealConfig
from medsecrets.storage.base import StorageBackend
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore

SECRETS = 1_000
REWRAP_SECRETS = 10_000
THREADS = 32
READ_REPEATS = 5
"""Runs of each read figure (their median is reported), taken in turn with its ceiling."""


@dataclasses.dataclass
class _Backend:
    """One backend's storages: as shipped, and without any read cache (``plain``)."""

    name: str
    store: StorageBackend
    raw: StorageBackend
    plain_store: StorageBackend
    plain_raw: StorageBackend

    def close(self) -> None:
        for storage in (self.store, self.raw, self.plain_store, self.plain_raw):
            storage.close()


@contextlib.contextmanager
def _backends(workdir: Path) -> Iterator[list[_Backend]]:
    """The available backends (SQLite always; PostgreSQL when its binaries are found)."""
    backends = [
        _Backend(
            "sqlite",
            SqliteStorage(workdir / "store.db"),
            SqliteStorage(workdir / "raw.db"),
            SqliteStorage(workdir / "plain.db", read_cache=False),
            SqliteStorage(workdir / "raw.db", read_cache=False),
        )
    ]
    with contextlib.ExitStack() as stack:
        from medsecrets.testing.pgcluster import PostgresCluster, find_pg_bin

        if find_pg_bin() is not None:
            from medsecrets.storage.postgres import PostgresStorage

            cluster = stack.enter_context(PostgresCluster())
            for database in ("store", "raw", "plain"):
                cluster.create_database(database)
            raw = PostgresStorage(cluster.dsn_for("raw"))
            backends.append(
                _Backend(
                    "postgresql",
                    PostgresStorage(cluster.dsn_for("store")),
                    raw,
                    PostgresStorage(cluster.dsn_for("plain")),
                    raw,  # PostgreSQL has no read cache
                )
            )
        yield backends
        for backend in backends:
            backend.close()


def _store(
    storage: StorageBackend, workdir: Path, name: str, *, cache_values: bool = True
) -> SecretStore:
    store = SecretStore(storage, cache_values=cache_values)
    store.initialize(KeyFileSealConfig(str(workdir / f"{name}.key")))
    return store


def figures(quick: bool = False) -> list[Figure]:
    """Measure and return the figures."""
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="medsecrets-bench-") as tmp:
        workdir = Path(tmp)
        with _backends(workdir) as backends:
            for backend in backends:
                figures += _bench_backend(backend, workdir, quick=quick)
    return figures


def _bench_backend(backend: _Backend, workdir: Path, *, quick: bool) -> list[Figure]:
    name, raw = backend.name, backend.raw
    store = _store(backend.store, workdir, name)
    plain = _store(backend.plain_store, workdir, f"{name}-plain", cache_values=False)
    secrets = 200 if quick else SECRETS
    value = store.catalog.category("auth").build({}, development=False)
    paths = [f"medessence/bench/auth/svc-{i:05d}" for i in range(secrets)]
    for p in paths:
        store.secrets.put(p, value)
        plain.secrets.put(p, value)
    for p in paths:  # first reads record last-access once; keep that out of timing
        store.secrets.get(p)
        plain.secrets.get(p)
    blob = os.urandom(1024)
    keys = [f"raw/{i:05d}" for i in range(secrets)]
    for k in keys:
        raw.put(k, blob)
    rng = random.Random(7)
    order = [rng.randrange(secrets) for _ in range(secrets)]
    reads = 20_000 if name == "sqlite" else 5_000
    writes = 300 if quick else 1_500
    if quick:
        reads //= 10
    cached = " (read cache on, as shipped)" if name == "sqlite" else ""
    uncached = " (no read cache: a query each time)" if name == "sqlite" else ""
    plain_raw = backend.plain_raw
    reads_of: list[tuple[str, Callable[[int], object]]] = [
        (f"{name}: raw storage get{cached}", lambda i: raw.get(keys[order[i % secrets]])),
        (
            f"{name}: secret read (current, decrypted value cached, as shipped)",
            lambda i: store.secrets.get(paths[order[i % secrets]]),
        ),
        (
            f"{name}: secret read (current, decrypted on every read"
            f"{uncached and ', no read cache'})",
            lambda i: plain.secrets.get(paths[order[i % secrets]]),
        ),
    ]
    if plain_raw is not raw:
        reads_of.append(
            (
                f"{name}: raw storage get{uncached}",
                lambda i: plain_raw.get(keys[order[i % secrets]]),
            )
        )
    # In turn, so a slow spell of the machine slows each read and its ceiling alike.
    measured = interleaved_throughput(reads_of, count=reads, repeats=READ_REPEATS)
    raw_get, secret_get, plain_get = measured[:3]
    plain_raw_get = measured[3] if plain_raw is not raw else raw_get
    plain.seal()
    runs = iter(range(10_000_000))
    raw_put, secret_put = interleaved_throughput(
        [
            (  # a new row per commit, as a new secret version is
                f"{name}: raw durable put (new row)",
                lambda i: raw.put(f"raw/new/{next(runs):08d}", blob),
            ),
            (
                f"{name}: secret write (new version, durable)",
                lambda i: store.secrets.put(paths[i % secrets], value),
            ),
        ],
        count=writes,
    )
    per_thread = (100 if name == "sqlite" else 40) // (5 if quick else 1)
    own = secrets // THREADS  # secrets per thread: no two threads write the same one
    raw_put_mt = concurrent_throughput(
        f"{name}: raw durable put (new row), {THREADS} threads",
        lambda t, i: raw.put(f"raw/threads/{next(runs):08d}", blob),
        threads=THREADS,
        per_thread=per_thread,
    )
    secret_put_mt = concurrent_throughput(
        f"{name}: secret write (new version, durable), {THREADS} threads",
        lambda t, i: store.secrets.put(paths[t * own + i % own], value),
        threads=THREADS,
        per_thread=per_thread,
    )
    figures = [raw_get, secret_get, _ratio(secret_get, raw_get)]
    if plain_raw_get is not raw_get:
        figures.append(plain_raw_get)
    figures += [plain_get, _ratio(plain_get, plain_raw_get)]
    figures += [raw_put, secret_put, _ratio(secret_put, raw_put)]
    figures += [raw_put_mt, secret_put_mt, _ratio(secret_put_mt, raw_put_mt)]
    if name == "sqlite":
        total = 1_000 if quick else REWRAP_SECRETS
        figures.append(_rewrap(store, value, existing=secrets, total=total))
    store.seal()
    return figures


def concurrent_throughput(
    name: str,
    op: Callable[[int, int], object],
    *,
    threads: int,
    per_thread: int,
    repeats: int = 3,
) -> Figure:
    """Median total operations per second of ``threads`` threads each calling
    ``op(thread, i)`` for ``i`` in ``range(per_thread)``, all released at once,
    timed until the last one finishes; one untimed warm-up run, then ``repeats``."""
    _concurrent_run(op, threads, per_thread)
    runs = tuple(_concurrent_run(op, threads, per_thread) for _ in range(repeats))
    return Figure(name, statistics.median(runs), "ops/s", runs)


def _concurrent_run(op: Callable[[int, int], object], threads: int, per_thread: int) -> float:
    start_line = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        start_line.wait()
        try:
            for i in range(per_thread):
                op(thread, i)
        except BaseException as exc:  # raised below: a failed run gives no figure
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    start_line.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return threads * per_thread / elapsed


def _ratio(ours: Figure, ceiling: Figure) -> Figure:
    return Figure(f"{ours.name} / {ceiling.name}", 100.0 * ours.value / ceiling.value, "%")


def _rewrap(store: SecretStore, value: dict[str, str], *, existing: int, total: int) -> Figure:
    for i in range(total - existing):
        store.secrets.put(f"medessence/bench/auth/rw-{i:05d}", value)
    store.rotate_key("auth")
    start = time.perf_counter()
    report = store.rewrap()
    elapsed = time.perf_counter() - start
    name = f"sqlite: rewrap of {report.rewrapped:,} secrets"
    return Figure(name, report.rewrapped / elapsed, "secrets/s")
