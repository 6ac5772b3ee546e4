"""The storage conformance suite: one set of tests every ``StorageBackend`` must pass.

Use it by subclassing ``StorageConformance`` in a test module (the class name
must start with ``Test`` for pytest to collect it) and providing two fixtures::

    class TestSqliteConformance(StorageConformance):
        @pytest.fixture
        def opener(self, tmp_path: Path) -> StorageOpener:
            return functools.partial(SqliteStorage, tmp_path / "store.db")

        @pytest.fixture
        def unsafe_openers(self) -> Sequence[tuple[str, UnsafeOpener]]:
            return [("journal_mode", functools.partial(SqliteStorage, ":memory:"))]

``opener`` names a fresh, empty store (one per test); every call of it opens
that same store, and it must be picklable because child processes call it to
write the store concurrently. It is called with ``clock=`` to inject a
``ManualClock`` for the lease tests. ``unsafe_openers`` pairs a setting name
with an opener that must refuse with a ``StorageError`` naming that setting.

Multi-process tests use the ``spawn`` start method; the worker functions live
in this module so the children can import them.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import pytest

from medsecrets.clock import Clock, ManualClock
from medsecrets.errors import (
    ConflictError,
    InvalidRequest,
    LeaseLostError,
    StorageError,
    TooLargeError,
)
from medsecrets.storage.base import (
    MAX_KEY_LENGTH,
    MAX_VALUE_SIZE,
    Delete,
    Expect,
    ListPage,
    Put,
    StorageBackend,
)

__all__ = [
    "StorageConformance",
    "StorageOpener",
    "UnsafeOpener",
    "list_all",
    "run_processes",
]

_PROCESSES = 4
_BARRIER_TIMEOUT = 120.0
_JOIN_TIMEOUT = 300.0

#: Keys that stress encoding, separators and SQL/LIKE metacharacters.
INTERESTING_KEYS: tuple[str, ...] = (
    "a",
    "path/to/secret",
    "a:b:c",
    "with space",
    " leading and trailing ",
    "100%",
    "%",
    "_",
    "a_b",
    "a\\b",
    "quote'\"",
    "'; DROP TABLE kv; --",
    "tab\tnew\nline",
    "ключ/значение",
    "日本語/鍵",
    "emoji/\U0001f600",
    "\U0010ffff",
    "\ufffd\uffff",
    "y" * 1000,
)


class StorageOpener(Protocol):
    """Opens the store under test (picklable; ``clock`` injects time for leases)."""

    def __call__(self, *, clock: Clock | None = None) -> StorageBackend: ...


UnsafeOpener = Callable[[], StorageBackend]


def list_all(store: StorageBackend, prefix: str = "", *, limit: int = 1000) -> list[str]:
    """Every key under ``prefix``, following ``next_after`` page by page."""
    keys: list[str] = []
    after = ""
    while True:
        page = store.list(prefix, after=after, limit=limit)
        keys.extend(page.keys)
        if page.next_after is None:
            return keys
        after = page.next_after


# -- multi-process workers (module level so spawned children can import them) --


def _worker_put(opener: StorageOpener, index: int, count: int, barrier: _Barrier) -> None:
    store = opener()
    try:
        barrier.wait(_BARRIER_TIMEOUT)
        for i in range(count):
            store.put(f"proc/{index}/{i:04d}", _value(index, i))
    finally:
        store.close()


def _worker_increment(opener: StorageOpener, key: str, count: int, barrier: _Barrier) -> None:
    store = opener()
    try:
        barrier.wait(_BARRIER_TIMEOUT)
        done = 0
        while done < count:
            current = store.get(key)
            assert current is not None
            try:
                store.batch([Expect(key, current), Put(key, str(int(current) + 1).encode())])
            except ConflictError:
                continue
            done += 1
    finally:
        store.close()


def _worker_lease(opener: StorageOpener, index: int, barrier: _Barrier) -> None:
    store = opener()
    try:
        barrier.wait(_BARRIER_TIMEOUT)
        lease = store.acquire_lease("leader", f"proc-{index}", 3600.0)
        if lease is not None:
            store.put(f"winner/{index}", lease.token.encode())
    finally:
        store.close()


class _Barrier(Protocol):
    def wait(self, timeout: float | None = None) -> int: ...


def run_processes(target: Callable[..., None], args: Sequence[tuple[object, ...]]) -> None:
    """Run ``target(*a, barrier)`` for each ``a`` in a spawned process; all must succeed.

    The processes meet at a shared barrier first so their work overlaps.
    """
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(args))
    procs = [ctx.Process(target=target, args=(*a, barrier), daemon=True) for a in args]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(_JOIN_TIMEOUT)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()
    codes = [proc.exitcode for proc in procs]
    assert codes == [0] * len(procs), f"worker exit codes {codes}"


def _value(index: int, i: int) -> bytes:
    return f"value-{index}-{i}".encode() * (1 + i % 5)


def _run_threads(count: int, work: Callable[[int], None]) -> None:
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        barrier.wait(_BARRIER_TIMEOUT)
        work(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        for future in [pool.submit(run, i) for i in range(count)]:
            future.result()


class StorageConformance:
    """Behaviour every ``StorageBackend`` must show. Subclass and provide the fixtures."""

    # -- fixtures a backend provides ---------------------------------------------

    @pytest.fixture
    def opener(self) -> StorageOpener:
        """A picklable opener of a fresh, empty store (override in the subclass)."""
        raise NotImplementedError("provide an `opener` fixture")

    @pytest.fixture
    def unsafe_openers(self) -> Sequence[tuple[str, UnsafeOpener]]:
        """(setting name, opener that must refuse) pairs (override in the subclass)."""
        raise NotImplementedError("provide an `unsafe_openers` fixture")

    @pytest.fixture
    def storage(self, opener: StorageOpener) -> Iterator[StorageBackend]:
        store = opener()
        yield store
        store.close()

    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    def timed(self, opener: StorageOpener, clock: ManualClock) -> Iterator[StorageBackend]:
        """The store opened with a ``ManualClock`` (for the lease tests)."""
        store = opener(clock=clock)
        yield store
        store.close()

    # -- protocol ----------------------------------------------------------------

    def test_is_a_storage_backend(self, storage: StorageBackend) -> None:
        assert isinstance(storage, StorageBackend)

    # -- values ------------------------------------------------------------------

    def test_get_missing_is_none(self, storage: StorageBackend) -> None:
        assert storage.get("missing") is None

    @pytest.mark.parametrize("size", [0, 1, 1 << 20], ids=["empty", "one-byte", "1MiB"])
    def test_value_sizes_round_trip(self, storage: StorageBackend, size: int) -> None:
        value = os.urandom(size)
        storage.put("k", value)
        got = storage.get("k")
        assert type(got) is bytes
        assert got == value

    def test_empty_value_is_not_absent(self, storage: StorageBackend) -> None:
        storage.put("k", b"")
        assert storage.get("k") == b""
        assert storage.list().keys == ("k",)

    def test_random_values_round_trip(self, storage: StorageBackend) -> None:
        rng = random.Random(20260101)  # noqa: S311 -- reproducible test data, not crypto
        values = {f"r/{i:02d}": rng.randbytes(rng.randrange(0, 70_000)) for i in range(24)}
        values["r/nul-bytes"] = b"\x00" * 100 + b"\xff\x00"
        for key, value in values.items():
            storage.put(key, value)
        for key, value in values.items():
            assert storage.get(key) == value

    def test_largest_value_accepted_and_larger_refused(self, storage: StorageBackend) -> None:
        biggest = b"\xab" * MAX_VALUE_SIZE
        storage.put("big", biggest)
        assert storage.get("big") == biggest
        with pytest.raises(TooLargeError):
            storage.put("big", biggest + b"!")
        with pytest.raises(TooLargeError):
            storage.batch([Put("other", b"x"), Put("big", biggest + b"!")])
        assert storage.get("big") == biggest
        assert storage.get("other") is None

    def test_value_must_be_bytes(self, storage: StorageBackend) -> None:
        with pytest.raises(InvalidRequest):
            storage.put("k", "text")  # type: ignore[arg-type]
        assert storage.get("k") is None

    def test_overwrite(self, storage: StorageBackend) -> None:
        storage.put("k", b"one")
        storage.put("k", b"two")
        assert storage.get("k") == b"two"
        storage.put("k", b"")
        assert storage.get("k") == b""
        assert storage.list().keys == ("k",)

    def test_delete_is_idempotent(self, storage: StorageBackend) -> None:
        storage.delete("never-there")
        storage.put("k", b"v")
        storage.delete("k")
        assert storage.get("k") is None
        storage.delete("k")
        assert storage.list().keys == ()

    # -- keys --------------------------------------------------------------------

    @pytest.mark.parametrize("key", INTERESTING_KEYS, ids=lambda k: repr(k)[:24])
    def test_interesting_keys_round_trip(self, storage: StorageBackend, key: str) -> None:
        storage.put(key, key.encode()[:64])
        storage.put(key + "/child", b"child")
        assert storage.get(key) == key.encode()[:64]
        assert storage.list(key).keys == (key, key + "/child")
        assert storage.list(key, after=key).keys == (key + "/child",)
        storage.delete(key)
        assert storage.get(key) is None
        assert storage.get(key + "/child") == b"child"

    def test_longest_keys(self, storage: StorageBackend) -> None:
        # Longer than any index entry some engines allow; they share long prefixes.
        keys = [
            "x" * MAX_KEY_LENGTH,
            "x" * (MAX_KEY_LENGTH - 1) + "a",
            "x" * 600 + "b",
            "x" * 600 + "a",
            "x" * 600,
            "\U0001f600" * MAX_KEY_LENGTH,
            "\U0001f600" * (MAX_KEY_LENGTH - 1) + "\U0001f601",
        ]
        for i, key in enumerate(keys):
            storage.put(key, bytes([i]))
        for i, key in enumerate(keys):
            assert storage.get(key) == bytes([i])
        assert list_all(storage, limit=2) == sorted(keys)
        assert storage.list("x" * 600).keys == tuple(sorted(keys[:5]))
        assert storage.list("x" * 600 + "a").keys == ("x" * 600 + "a",)
        assert storage.list("x" * 601).keys == tuple(sorted(keys[:2]))
        assert storage.list("x" * 600, after="x" * 600 + "a", limit=2).keys == (
            "x" * 600 + "b",
            "x" * (MAX_KEY_LENGTH - 1) + "a",
        )
        assert storage.list("\U0001f600" * 1000).keys == tuple(sorted(keys[5:]))
        storage.batch([Expect(keys[0], b"\x00"), Delete(keys[0])])
        assert storage.get(keys[0]) is None

    def test_keys_are_distinct_by_exact_text(self, storage: StorageBackend) -> None:
        # Case, trailing space and Unicode normalisation must not merge keys.
        keys = ["Key", "key", "key ", "caf\u00e9", "cafe\u0301", "\u212b", "\u00c5"]
        for i, key in enumerate(keys):
            storage.put(key, bytes([i]))
        for i, key in enumerate(keys):
            assert storage.get(key) == bytes([i])
        assert list_all(storage) == sorted(keys)

    @pytest.mark.parametrize(
        "bad",
        ["", "nul\x00inside", "x" * (MAX_KEY_LENGTH + 1), "lone\ud800surrogate"],
        ids=["empty", "nul", "too-long", "surrogate"],
    )
    def test_bad_keys_refused(self, storage: StorageBackend, bad: str) -> None:
        with pytest.raises(InvalidRequest):
            storage.put(bad, b"v")
        with pytest.raises(InvalidRequest):
            storage.get(bad)
        with pytest.raises(InvalidRequest):
            storage.delete(bad)
        with pytest.raises(InvalidRequest):
            storage.batch([Put("fine", b"v"), Put(bad, b"v")])
        assert storage.list().keys == ()

    # -- list --------------------------------------------------------------------

    def test_list_is_code_point_order(self, storage: StorageBackend) -> None:
        # UTF-16 order would put U+1F600 (surrogates D83D..) before U+E000 and U+FFFF.
        keys = ["b", "a", "ab", "a/b", "A", "~", "\x7f", "\u00e9", "\ue000", "\uffff"]
        keys += ["\U0001f600", "\U00010000", "\U0010ffff", "a\U0001f600", "a\uffff", "0"]
        for key in keys:
            storage.put(key, b"v")
        assert storage.list().keys == tuple(sorted(keys))
        assert list_all(storage, limit=3) == sorted(keys)

    def test_list_prefix_is_literal(self, storage: StorageBackend) -> None:
        keys = ["a%b", "a_b", "axb", "a%", "%x", "ab", "a\\b", "a\\x", "a[b]", "a*b", "A_B"]
        for key in keys:
            storage.put(key, b"v")
        assert storage.list("a%").keys == ("a%", "a%b")
        assert storage.list("a_").keys == ("a_b",)
        assert storage.list("%").keys == ("%x",)
        assert storage.list("_").keys == ()
        assert storage.list("a\\").keys == ("a\\b", "a\\x")
        assert storage.list("a[").keys == ("a[b]",)
        assert storage.list("a*").keys == ("a*b",)
        assert storage.list("A").keys == ("A_B",)

    def test_list_prefix_boundaries(self, storage: StorageBackend) -> None:
        top = "\U0010ffff"
        keys = [
            "p",
            "p/",
            "p/a",
            "p/\U0010ffff",
            "p0",
            "q",
            "o\uffff",
            top,
            top + "a",
            top + top,
            "\U0010fffe",
            "x\ud7ff",
            "x\ud7ffz",
            "x\ue000",
        ]
        for key in keys:
            storage.put(key, b"v")
        assert storage.list("p/").keys == ("p/", "p/a", "p/\U0010ffff")
        assert storage.list("p").keys == ("p", "p/", "p/a", "p/\U0010ffff", "p0")
        assert storage.list(top).keys == (top, top + "a", top + top)
        assert storage.list(top + top).keys == (top + top,)
        assert storage.list("x\ud7ff").keys == ("x\ud7ff", "x\ud7ffz")
        assert storage.list("o").keys == ("o\uffff",)
        assert storage.list("").keys == tuple(sorted(keys))
        assert storage.list("nothing").keys == ()

    def test_list_after_and_limit(self, storage: StorageBackend) -> None:
        for key in ["a", "b", "c", "d"]:
            storage.put(key, b"v")
        assert storage.list(after="b").keys == ("c", "d")
        assert storage.list(after="bb").keys == ("c", "d")
        assert storage.list(after="d") == ListPage(keys=(), next_after=None)
        assert storage.list(limit=2) == ListPage(keys=("a", "b"), next_after="b")
        assert storage.list(after="b", limit=2) == ListPage(keys=("c", "d"), next_after=None)
        assert storage.list(limit=4) == ListPage(keys=("a", "b", "c", "d"), next_after=None)
        assert storage.list(after="", limit=1) == ListPage(keys=("a",), next_after="a")
        # after may sort before the prefix: the prefix still bounds the page
        storage.put("c/1", b"v")
        assert storage.list("c", after="a").keys == ("c", "c/1")

    @pytest.mark.parametrize("limit", [1, 2, 7, 10, 57, 58, 1000])
    def test_pagination_covers_every_key_once(self, storage: StorageBackend, limit: int) -> None:
        keys = [f"page/{i:03d}" for i in range(57)] + ["pagf", "pag", "other/1"]
        storage.batch([Put(k, b"v") for k in keys])
        pages: list[ListPage] = []
        after = ""
        while True:
            page = storage.list("page/", after=after, limit=limit)
            assert len(page.keys) <= limit
            pages.append(page)
            if page.next_after is None:
                break
            assert page.next_after == page.keys[-1]
            after = page.next_after
        got = [k for p in pages for k in p.keys]
        assert got == sorted(k for k in keys if k.startswith("page/"))
        assert len(pages) == -(-57 // limit)

    @pytest.mark.parametrize("limit", [0, -1])
    def test_list_bad_limit_refused(self, storage: StorageBackend, limit: int) -> None:
        with pytest.raises(InvalidRequest):
            storage.list(limit=limit)

    def test_list_bad_prefix_refused(self, storage: StorageBackend) -> None:
        with pytest.raises(InvalidRequest):
            storage.list("nul\x00")
        with pytest.raises(InvalidRequest):
            storage.list(after="nul\x00")

    # -- batch -------------------------------------------------------------------

    def test_batch_applies_everything(self, storage: StorageBackend) -> None:
        storage.put("gone", b"x")
        storage.batch([Put("a", b"1"), Put("b", b"2"), Delete("gone"), Delete("never")])
        assert (storage.get("a"), storage.get("b"), storage.get("gone")) == (b"1", b"2", None)

    def test_batch_empty_is_a_no_op(self, storage: StorageBackend) -> None:
        storage.batch([])
        assert storage.list().keys == ()

    def test_batch_applies_in_order(self, storage: StorageBackend) -> None:
        storage.batch([Put("k", b"1"), Put("k", b"2")])
        assert storage.get("k") == b"2"
        storage.batch([Put("k", b"3"), Delete("k")])
        assert storage.get("k") is None
        storage.batch([Delete("k"), Put("k", b"4")])
        assert storage.get("k") == b"4"

    def test_batch_with_invalid_third_op_applies_nothing(self, storage: StorageBackend) -> None:
        storage.put("a", b"old")
        with pytest.raises(InvalidRequest):
            storage.batch([Put("a", b"new"), Delete("z"), Put("", b"bad"), Put("b", b"x")])
        with pytest.raises(InvalidRequest):
            storage.batch([Put("a", b"new"), Put("b", b"x"), "nonsense"])  # type: ignore[list-item]
        assert storage.get("a") == b"old"
        assert storage.list().keys == ("a",)

    def test_batch_with_failing_third_op_expect_applies_nothing(
        self, storage: StorageBackend
    ) -> None:
        storage.put("a", b"old")
        storage.put("z", b"keep")
        with pytest.raises(ConflictError):
            storage.batch([Put("a", b"new"), Delete("z"), Expect("c", b"x"), Put("b", b"x")])
        assert storage.get("a") == b"old"
        assert storage.get("z") == b"keep"
        assert storage.list().keys == ("a", "z")

    def test_expect_absent(self, storage: StorageBackend) -> None:
        storage.batch([Expect("k", None), Put("k", b"1")])
        assert storage.get("k") == b"1"
        with pytest.raises(ConflictError):
            storage.batch([Expect("k", None), Put("k", b"2")])
        assert storage.get("k") == b"1"

    def test_expect_present(self, storage: StorageBackend) -> None:
        storage.put("k", b"1")
        storage.batch([Expect("k", b"1"), Put("k", b"2")])
        assert storage.get("k") == b"2"
        with pytest.raises(ConflictError):
            storage.batch([Expect("k", b"1"), Put("k", b"3")])
        with pytest.raises(ConflictError):
            storage.batch([Expect("missing", b"1"), Put("k", b"3")])
        assert storage.get("k") == b"2"
        storage.batch([Expect("k", b"2"), Delete("k")])
        assert storage.get("k") is None

    def test_expect_empty_value_differs_from_absent(self, storage: StorageBackend) -> None:
        with pytest.raises(ConflictError):
            storage.batch([Expect("k", b""), Put("k", b"x")])
        storage.put("k", b"")
        with pytest.raises(ConflictError):
            storage.batch([Expect("k", None), Put("k", b"x")])
        storage.batch([Expect("k", b""), Put("k", b"x")])
        assert storage.get("k") == b"x"

    def test_expects_are_checked_before_the_writes(self, storage: StorageBackend) -> None:
        # The condition sees the state before the batch, not after its own Put.
        storage.batch([Put("k", b"1"), Expect("k", None)])
        assert storage.get("k") == b"1"
        with pytest.raises(ConflictError):
            storage.batch([Delete("k"), Expect("k", None)])
        assert storage.get("k") == b"1"

    def test_expect_only_batch(self, storage: StorageBackend) -> None:
        storage.put("a", b"1")
        storage.batch([Expect("a", b"1"), Expect("b", None)])
        with pytest.raises(ConflictError):
            storage.batch([Expect("a", b"1"), Expect("b", b"")])

    def test_shared_expect_is_checked_like_any_other(self, storage: StorageBackend) -> None:
        # A read check (``shared``) may lock differently; its outcome is the same.
        storage.put("k", b"1")
        storage.batch([Expect("k", b"1", shared=True), Put("a", b"1")])
        with pytest.raises(ConflictError):
            storage.batch([Expect("k", b"2", shared=True), Put("a", b"2")])
        with pytest.raises(ConflictError):
            storage.batch([Expect("missing", b"1", shared=True), Put("a", b"2")])
        storage.batch([Expect("k", b"1", shared=True), Expect("k", b"1"), Put("k", b"2")])
        storage.batch([Expect("new", None, shared=True), Put("new", b"x")])
        with pytest.raises(ConflictError):
            storage.batch([Expect("new", None, shared=True), Put("a", b"2")])
        storage.batch([Expect("k", b"2", shared=True), Expect("gone", None, shared=True)])
        assert [storage.get(key) for key in ("a", "k", "new", "gone")] == [b"1", b"2", b"x", None]
        with pytest.raises(InvalidRequest):
            storage.batch([Expect("k", b"2", shared="yes"), Put("a", b"3")])  # type: ignore[arg-type]
        assert storage.get("a") == b"1"

    def test_large_batch(self, storage: StorageBackend) -> None:
        storage.batch([Put(f"many/{i:04d}", i.to_bytes(2, "big")) for i in range(1000)])
        assert len(list_all(storage, "many/")) == 1000
        assert storage.get("many/0999") == (999).to_bytes(2, "big")

    # -- concurrency ---------------------------------------------------------------

    def test_threads_write_at_once(self, storage: StorageBackend) -> None:
        threads, each = 8, 200

        def work(index: int) -> None:
            for i in range(each):
                storage.put(f"t/{index}/{i:03d}", _value(index, i))

        _run_threads(threads, work)
        assert len(list_all(storage, "t/")) == threads * each
        for index in range(threads):
            for i in range(each):
                assert storage.get(f"t/{index}/{i:03d}") == _value(index, i)

    def test_threads_race_on_expect_guarded_counter(self, storage: StorageBackend) -> None:
        threads, each = 8, 25
        storage.put("counter", b"0")

        def work(index: int) -> None:
            done = 0
            while done < each:
                current = storage.get("counter")
                assert current is not None
                try:
                    storage.batch(
                        [Expect("counter", current), Put("counter", str(int(current) + 1).encode())]
                    )
                except ConflictError:
                    continue
                done += 1

        _run_threads(threads, work)
        assert storage.get("counter") == str(threads * each).encode()

    @pytest.mark.slow
    def test_processes_write_at_once(self, storage: StorageBackend, opener: StorageOpener) -> None:
        each = 100
        run_processes(_worker_put, [(opener, i, each) for i in range(_PROCESSES)])
        assert len(list_all(storage, "proc/")) == _PROCESSES * each
        for index in range(_PROCESSES):
            for i in range(each):
                assert storage.get(f"proc/{index}/{i:04d}") == _value(index, i)

    @pytest.mark.slow
    def test_processes_race_on_expect_guarded_counter(
        self, storage: StorageBackend, opener: StorageOpener
    ) -> None:
        each = 25
        storage.put("counter", b"0")
        run_processes(_worker_increment, [(opener, "counter", each) for _ in range(_PROCESSES)])
        assert storage.get("counter") == str(_PROCESSES * each).encode()

    @pytest.mark.slow
    def test_processes_race_for_one_lease(
        self, storage: StorageBackend, opener: StorageOpener
    ) -> None:
        run_processes(_worker_lease, [(opener, i) for i in range(_PROCESSES)])
        winners = storage.list("winner/").keys
        assert len(winners) == 1
        assert storage.acquire_lease("leader", "late", 10.0) is None

    # -- leases --------------------------------------------------------------------

    def test_lease_acquire_and_refuse_second_holder(
        self, timed: StorageBackend, clock: ManualClock
    ) -> None:
        lease = timed.acquire_lease("leader", "node-a", 10.0)
        assert lease is not None
        assert (lease.name, lease.holder) == ("leader", "node-a")
        assert lease.expires_at == pytest.approx(clock.now().timestamp() + 10.0)
        assert lease.token
        assert timed.acquire_lease("leader", "node-b", 10.0) is None
        assert timed.acquire_lease("leader", "node-a", 10.0) is None  # renew, do not re-acquire
        other = timed.acquire_lease("other", "node-b", 10.0)
        assert other is not None
        assert other.token != lease.token

    def test_lease_renew_extends(self, timed: StorageBackend, clock: ManualClock) -> None:
        lease = timed.acquire_lease("leader", "node-a", 10.0)
        assert lease is not None
        clock.advance(8)
        renewed = timed.renew_lease(lease, 10.0)
        assert renewed.token == lease.token
        assert renewed.holder == "node-a"
        assert renewed.expires_at == pytest.approx(clock.now().timestamp() + 10.0)
        clock.advance(8)  # past the first expiry, within the renewed one
        assert timed.acquire_lease("leader", "node-b", 10.0) is None
        assert timed.renew_lease(renewed, 5.0).expires_at == pytest.approx(
            clock.now().timestamp() + 5.0
        )

    def test_lease_release_frees_it(self, timed: StorageBackend) -> None:
        lease = timed.acquire_lease("leader", "node-a", 10.0)
        assert lease is not None
        timed.release_lease(lease)
        timed.release_lease(lease)  # no error when no longer held
        with pytest.raises(LeaseLostError):
            timed.renew_lease(lease, 10.0)
        taken = timed.acquire_lease("leader", "node-b", 10.0)
        assert taken is not None
        assert taken.holder == "node-b"

    def test_lease_expiry_allows_takeover(self, timed: StorageBackend, clock: ManualClock) -> None:
        lease = timed.acquire_lease("leader", "node-a", 10.0)
        assert lease is not None
        clock.advance(9.5)
        assert timed.acquire_lease("leader", "node-b", 10.0) is None
        clock.advance(1)
        taken = timed.acquire_lease("leader", "node-b", 10.0)
        assert taken is not None
        assert taken.holder == "node-b"
        assert taken.token != lease.token
        with pytest.raises(LeaseLostError):
            timed.renew_lease(lease, 10.0)
        timed.release_lease(lease)  # stale release must not free the new holder's lease
        assert timed.acquire_lease("leader", "node-c", 10.0) is None
        assert timed.renew_lease(taken, 10.0).holder == "node-b"

    def test_expired_lease_cannot_be_renewed(
        self, timed: StorageBackend, clock: ManualClock
    ) -> None:
        lease = timed.acquire_lease("leader", "node-a", 10.0)
        assert lease is not None
        clock.advance(10.5)
        with pytest.raises(LeaseLostError):
            timed.renew_lease(lease, 10.0)
        again = timed.acquire_lease("leader", "node-a", 10.0)
        assert again is not None
        assert again.token != lease.token

    def test_lease_is_shared_between_instances(
        self, timed: StorageBackend, opener: StorageOpener, clock: ManualClock
    ) -> None:
        second = opener(clock=clock)
        try:
            lease = timed.acquire_lease("leader", "node-a", 10.0)
            assert lease is not None
            assert second.acquire_lease("leader", "node-b", 10.0) is None
            clock.advance(11)
            taken = second.acquire_lease("leader", "node-b", 10.0)
            assert taken is not None
            with pytest.raises(LeaseLostError):
                timed.renew_lease(lease, 10.0)
        finally:
            second.close()

    @pytest.mark.parametrize("ttl", [0.0, -1.0, float("nan"), float("inf")])
    def test_lease_bad_ttl_refused(self, timed: StorageBackend, ttl: float) -> None:
        with pytest.raises(InvalidRequest):
            timed.acquire_lease("leader", "node-a", ttl)
        lease = timed.acquire_lease("leader", "node-a", 10.0)
        assert lease is not None
        with pytest.raises(InvalidRequest):
            timed.renew_lease(lease, ttl)

    def test_lease_bad_names_refused(self, timed: StorageBackend) -> None:
        with pytest.raises(InvalidRequest):
            timed.acquire_lease("", "node-a", 10.0)
        with pytest.raises(InvalidRequest):
            timed.acquire_lease("leader", "", 10.0)

    def test_leases_do_not_show_in_keys(self, timed: StorageBackend) -> None:
        assert timed.acquire_lease("leader", "node-a", 10.0) is not None
        assert timed.list().keys == ()
        assert timed.get("leader") is None

    # -- lifecycle -------------------------------------------------------------------

    def test_data_survives_reopen(self, opener: StorageOpener) -> None:
        first = opener()
        first.put("k", b"durable")
        first.batch([Put("b", b"batched")])
        first.close()
        second = opener()
        try:
            assert second.get("k") == b"durable"
            assert second.get("b") == b"batched"
        finally:
            second.close()

    def test_close_is_idempotent_and_final(self, opener: StorageOpener) -> None:
        store = opener()
        store.put("k", b"v")
        store.close()
        store.close()
        with pytest.raises(StorageError):
            store.get("k")
        with pytest.raises(StorageError):
            store.put("k", b"v")

    def test_repr_holds_no_values(self, storage: StorageBackend) -> None:
        canary = b"CANARY-3c1f0e"
        storage.put("k", canary)
        assert canary.decode() not in repr(storage)

    def test_unsafe_settings_refused(
        self, unsafe_openers: Sequence[tuple[str, UnsafeOpener]]
    ) -> None:
        assert unsafe_openers, "a backend must show at least one refused setting"
        for setting, open_unsafe in unsafe_openers:
            with pytest.raises(StorageError, match=setting):
                store = open_unsafe()
                store.close()
