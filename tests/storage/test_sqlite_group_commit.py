"""SQLite group commit: writes queued during a commit share it, each with its own result."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from medsecrets.errors import ConflictError
from medsecrets.storage.base import Expect, Put
from medsecrets.storage.sqlite import SqliteStorage


def test_queued_writes_commit_together_and_fail_alone(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "g.db")
    storage.put("counter", b"0")
    results: dict[int, BaseException | None] = {}
    commits = []
    real_commit_group = storage._commit_group

    def counting(group: list) -> None:  # type: ignore[type-arg]
        commits.append(len(group))
        real_commit_group(group)

    storage._commit_group = counting  # type: ignore[method-assign]

    def writer(n: int) -> None:
        ops = [Put(f"k/{n}", b"v")]
        if n == 3:  # this one's condition fails; the others must still commit
            ops.insert(0, Expect("counter", b"not-the-value"))
        try:
            storage.batch(ops)
        except ConflictError as exc:
            results[n] = exc
        else:
            results[n] = None

    storage._leading = True  # as if a commit were running: all eight queue up behind it
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(storage._queue) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(storage._queue) == 8
    assert all(t.is_alive() for t in threads)  # nobody committed on its own
    storage._lead()  # that commit ends: the next group is everything queued
    for t in threads:
        t.join()
    assert not storage._leading
    assert commits == [8]  # one transaction, one fsync, for all eight
    assert isinstance(results[3], ConflictError)
    assert all(results[n] is None for n in range(8) if n != 3)
    assert storage.get("k/3") is None
    assert [storage.get(f"k/{n}") for n in range(8) if n != 3] == [b"v"] * 7
    storage.close()


def test_a_single_writer_still_commits_alone(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "g.db")
    storage.put("a", b"1")
    with pytest.raises(ConflictError):
        storage.batch([Expect("a", b"2"), Put("b", b"x")])
    assert storage.get("b") is None
    storage.batch([Expect("a", b"1"), Put("b", b"x")])
    assert storage.get("b") == b"x"
    storage.close()
