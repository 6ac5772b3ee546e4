"""Writers killed with SIGKILL at random points, in the middle of group commits and loop
transactions: after a restart every acknowledged batch is there, whole, and no batch that
was not is there in part."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from medsecrets.storage.sqlite import SqliteStorage

from .crash_batch_writer import WIDTH

CYCLES = 30
WRITER = Path(__file__).parent / "crash_batch_writer.py"


def _start(db: Path, tag: str) -> tuple[subprocess.Popen[str], list[str], threading.Thread]:
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(db), tag],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout))  # type: ignore[arg-type]
    reader.start()
    return proc, lines, reader


def _all_keys(store: SqliteStorage, prefix: str) -> list[str]:
    keys: list[str] = []
    after = ""
    while True:
        page = store.list(prefix, after=after, limit=1000)
        keys += page.keys
        if page.next_after is None:
            return keys
        after = page.next_after


def _check(store: SqliteStorage, acknowledged: dict[str, int]) -> None:
    heads = {key.split("/")[1]: int(store.get(key) or b"-1") for key in _all_keys(store, "head/")}
    for writer, n in acknowledged.items():
        assert heads.get(writer, -1) >= n, f"acknowledged batch {writer} {n} lost"
    found: dict[tuple[str, int], set[int]] = {}
    for key in _all_keys(store, "b/"):
        _, writer, n, i = key.split("/")
        found.setdefault((writer, int(n)), set()).add(int(i))
    for (writer, n), parts in found.items():
        head = heads[writer]
        assert n <= head, f"batch {writer} {n} after the head {head} is there in part"
        whole = set(range(1, WIDTH)) if n <= head - 3 else set(range(WIDTH))
        assert parts == whole, f"batch {writer} {n} is there in part: {sorted(parts)}"
    for writer, head in heads.items():
        assert all((writer, n) in found for n in range(head + 1)), f"{writer}: a batch is gone"


@pytest.mark.slow
def test_sigkill_during_batches_loses_nothing_acknowledged_and_leaves_no_half_batch(
    tmp_path: Path,
) -> None:
    db = tmp_path / "store.db"
    SqliteStorage(db).close()
    rng = random.Random(4321)
    acknowledged: dict[str, int] = {}
    for cycle in range(CYCLES):
        # every other cycle two processes write the file at once
        children = [_start(db, tag) for tag in ("A", "B")[: 1 + cycle % 2]]
        time.sleep(rng.uniform(0.01, 0.4))
        for proc, _, _ in children:
            os.kill(proc.pid, signal.SIGKILL)
        for proc, lines, reader in children:
            proc.wait()
            reader.join()
            assert proc.stderr is not None
            assert "Traceback" not in proc.stderr.read()
            for line in lines:
                if line.endswith("\n"):  # a line cut short by the kill was never acknowledged
                    _, writer, n = line.split()
                    acknowledged[writer] = max(acknowledged.get(writer, -1), int(n))
        store = SqliteStorage(db)
        try:
            _check(store, acknowledged)
        finally:
            store.close()
    assert len(acknowledged) == 12  # every writer of both processes acknowledged batches
