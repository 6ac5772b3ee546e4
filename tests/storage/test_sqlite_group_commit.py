"""SQLite group commit: writes queued during a commit share it, each with its own result."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from medsecrets.errors import ConflictError
from medsecrets.storage.base import Delete, Expect, Operation, Put
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


def _queue_in_order(storage: SqliteStorage, batches: list[list[Operation]]) -> list[object]:
    """Queue ``batches`` behind a pretend commit, in this order; commit them as one group."""
    results: list[object] = [None] * len(batches)

    def writer(n: int) -> None:
        try:
            storage.batch(batches[n])
        except ConflictError as exc:
            results[n] = exc
        else:
            results[n] = "ok"

    storage._leading = True
    threads = []
    for n in range(len(batches)):
        thread = threading.Thread(target=writer, args=(n,))
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 10
        while len(storage._queue) < n + 1 and time.monotonic() < deadline:
            time.sleep(0.005)  # one at a time: the queue order is the order given
        assert len(storage._queue) == n + 1
    storage._lead()
    for thread in threads:
        thread.join()
    return results


def test_members_of_a_group_see_the_writes_of_those_before_them(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "g.db")
    storage.put("gone", b"old")
    results = _queue_in_order(
        storage,
        [
            [Expect("k", None), Put("k", b"1")],  # creates k
            [Expect("k", b"1"), Put("k", b"2")],  # holds only after the first
            [Expect("k", None), Put("k", b"x")],  # k exists by now: fails alone
            [Expect("k", b"2"), Delete("gone"), Put("other", b"o")],
            [Expect("gone", None), Put("gone", b"new")],  # deleted just before
            [Expect("k", b"1"), Put("never", b"n")],  # stale: k is 2
        ],
    )
    assert results[0] == results[1] == results[3] == results[4] == "ok"
    assert isinstance(results[2], ConflictError)
    assert isinstance(results[5], ConflictError)
    assert storage.get("k") == b"2"
    assert storage.get("other") == b"o"
    assert storage.get("gone") == b"new"
    assert storage.get("never") is None
    storage.close()


def test_a_failed_member_leaves_nothing_even_when_later_members_pass(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "g.db")
    storage.put("a", b"1")
    results = _queue_in_order(
        storage,
        [
            [Put("x", b"first"), Expect("a", b"wrong"), Put("y", b"first")],
            [Expect("x", None), Expect("y", None), Put("x", b"second")],
        ],
    )
    assert isinstance(results[0], ConflictError)
    assert results[1] == "ok"
    assert storage.get("x") == b"second"
    assert storage.get("y") is None
    storage.close()


def test_large_batches_span_several_statements(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "g.db")
    count = 700  # more rows than one multi-row statement takes
    storage.batch([Put(f"k/{i:04d}", bytes([i % 256])) for i in range(count)])
    expects: list[Operation] = [Expect(f"k/{i:04d}", bytes([i % 256])) for i in range(count)]
    stale = list(expects)
    stale[-1] = Expect(f"k/{count - 1:04d}", b"stale")  # only the very last one is off
    with pytest.raises(ConflictError):
        storage.batch([*stale, *(Delete(f"k/{i:04d}") for i in range(count))])
    assert storage.get(f"k/{count - 1:04d}") is not None
    storage.batch([*expects, *(Delete(f"k/{i:04d}") for i in range(0, count, 2))])
    assert storage.list("k/", limit=1000).keys == tuple(f"k/{i:04d}" for i in range(1, count, 2))
    storage.close()


def test_last_write_of_a_key_wins_within_a_batch_and_empty_values_compare(
    tmp_path: Path,
) -> None:
    storage = SqliteStorage(tmp_path / "g.db")
    storage.batch([Put("a", b"1"), Delete("a"), Put("b", b"1"), Put("b", b""), Delete("c")])
    assert storage.get("a") is None
    assert storage.get("b") == b""
    storage.batch([Expect("b", b""), Expect("a", None), Delete("b"), Put("b", b"2")])
    assert storage.get("b") == b"2"
    with pytest.raises(ConflictError):
        storage.batch([Expect("b", b""), Put("z", b"z")])  # an empty value is not "absent"
    with pytest.raises(ConflictError):
        storage.batch([Expect("a", b""), Put("z", b"z")])  # nor is "absent" an empty value
    assert storage.get("z") is None
    storage.close()
