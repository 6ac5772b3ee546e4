"""Issue 2: the in-process store against raw storage in the same run.

- read of a current secret (decrypt included) vs a raw storage ``get``;
- durable write of a new version vs a raw durable storage ``put``;
- rewrap of 10,000 secrets after a KEK rotation.

On SQLite always; on PostgreSQL when its binaries are found (a throwaway cluster).
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.measure import Figure, throughput
from medsecrets.schema.seal import KeyFileSealConfig
from medsecrets.storage.base import StorageBackend
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore

SECRETS = 1_000
REWRAP_SECRETS = 10_000


@contextlib.contextmanager
def _backends(workdir: Path) -> Iterator[list[tuple[str, StorageBackend, StorageBackend]]]:
    """(name, storage for the store, storage for raw ops) per available backend."""
    backends = [
        (
            "sqlite",
            SqliteStorage(workdir / "store.db"),
            SqliteStorage(workdir / "raw.db"),
        )
    ]
    with contextlib.ExitStack() as stack:
        from medsecrets.testing.pgcluster import PostgresCluster, find_pg_bin

        if find_pg_bin() is not None:
            from medsecrets.storage.postgres import PostgresStorage

            cluster = stack.enter_context(PostgresCluster())
            cluster.create_database("store")
            cluster.create_database("raw")
            backends.append(
                (
                    "postgresql",
                    PostgresStorage(cluster.dsn_for("store")),
                    PostgresStorage(cluster.dsn_for("raw")),
                )
            )
        yield backends
        for _, a, b in backends:
            a.close()
            b.close()


def _store(storage: StorageBackend, workdir: Path, name: str) -> SecretStore:
    store = SecretStore(storage)
    store.initialize(KeyFileSealConfig(str(workdir / f"{name}.key")))
    return store


def figures(quick: bool = False) -> list[Figure]:
    """Measure and return the figures."""
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="medsecrets-bench-") as tmp:
        workdir = Path(tmp)
        with _backends(workdir) as backends:
            for name, storage, raw in backends:
                figures += _bench_backend(name, _store(storage, workdir, name), raw, quick=quick)
    return figures


def _bench_backend(
    name: str, store: SecretStore, raw: StorageBackend, *, quick: bool
) -> list[Figure]:
    secrets = 200 if quick else SECRETS
    value = store.catalog.category("auth").build({}, development=False)
    paths = [f"medessence/bench/auth/svc-{i:05d}" for i in range(secrets)]
    for p in paths:
        store.secrets.put(p, value)
    for p in paths:  # first reads record last-access once; keep that out of timing
        store.secrets.get(p)
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
    raw_get = throughput(
        f"{name}: raw storage get", lambda i: raw.get(keys[order[i % secrets]]), count=reads
    )
    secret_get = throughput(
        f"{name}: secret read (current, decrypted)",
        lambda i: store.secrets.get(paths[order[i % secrets]]),
        count=reads,
    )
    runs = iter(range(10_000_000))
    raw_put = throughput(  # a new row per commit, as a new secret version is
        f"{name}: raw durable put (new row)",
        lambda i: raw.put(f"raw/new/{next(runs):08d}", blob),
        count=writes,
    )
    secret_put = throughput(
        f"{name}: secret write (new version, durable)",
        lambda i: store.secrets.put(paths[i % secrets], value),
        count=writes,
    )
    figures = [raw_get, secret_get, _ratio(secret_get, raw_get)]
    figures += [raw_put, secret_put, _ratio(secret_put, raw_put)]
    if name == "sqlite":
        total = 1_000 if quick else REWRAP_SECRETS
        figures.append(_rewrap(store, value, existing=secrets, total=total))
    store.seal()
    return figures


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
