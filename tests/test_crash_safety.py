"""A writer process killed with SIGKILL at random points loses no acknowledged write."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from medsecrets.schema.seal import KeyFileSealConfig
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore

CYCLES = 50
MAX_VERSIONS = 100  # the store's default: older versions are pruned
WRITER = Path(__file__).parent / "support" / "crash_writer.py"


def run_cycle(db: Path, keyfile: Path, seed: int, kill_after: float) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(db), str(keyfile), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout))  # type: ignore[arg-type]
    reader.start()
    time.sleep(kill_after)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join()
    # a line cut short by the kill was never acknowledged
    return [line for line in lines if line.endswith("\n")]


@pytest.mark.slow
def test_sigkill_during_writes_loses_nothing_acknowledged(tmp_path: Path) -> None:
    db, keyfile = tmp_path / "store.db", tmp_path / "unseal.key"
    store = SecretStore(SqliteStorage(db))
    store.initialize(KeyFileSealConfig(str(keyfile)))
    store.close()
    rng = random.Random(1234)
    acknowledged: dict[tuple[str, int], str] = {}
    for cycle in range(CYCLES):
        for line in run_cycle(db, keyfile, cycle, rng.uniform(0.02, 0.4)):
            path, version, digest = line.split()
            acknowledged[(path, int(version))] = digest
    assert len(acknowledged) > CYCLES  # the writer really wrote
    store = SecretStore(SqliteStorage(db))
    store.auto_unseal()
    kept = {path: {v.number for v in store.secrets.versions(path)} for path, _ in acknowledged}
    for (path, version), digest in acknowledged.items():
        if version not in kept[path]:
            # Pruned by design (a fast machine writes more than the store keeps): only an
            # old version of a secret that holds the maximum number of versions may go.
            assert len(kept[path]) == MAX_VERSIONS and version < min(kept[path])
            continue
        value = store.secrets.get(path, version=version).fields.to_dict()
        assert hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest() == digest
    # nothing is undecryptable: every kept version of every secret opens
    for meta in store.secrets.list().items:
        for v in meta.versions:
            store.secrets.get(meta.path, version=v.number)
    store.close()
