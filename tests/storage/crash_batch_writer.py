"""Child process of ``test_sqlite_crash``: writes batches until it is killed.

Usage: python crash_batch_writer.py DB TAG. Prints ``ready``, then ``ack <writer> <n>``
after each batch *returned* (durable: a blocking write, or a deferred one whose
``settled_async()`` is done). Three threads write blocking batches (group commits) and
three tasks of an event loop deferred ones (loop transactions). Writer ``w``'s batch
``n`` is: ``Expect(head/w, n - 1)``, ``Put(head/w, n)``, ``WIDTH`` puts ``b/w/n/i`` and
the delete of ``b/w/n-3/0``: so after a restart every batch up to ``head/w`` is whole
and none after it is there at all.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Sequence

from medsecrets.storage.base import Delete, Expect, Operation, Put, WriteLockBusy
from medsecrets.storage.sqlite import SqliteStorage

WIDTH = 4
_lock = threading.Lock()


def batch_ops(writer: str, n: int) -> Sequence[Operation]:
    head = f"head/{writer}"
    ops: list[Operation] = [
        Expect(head, None if n == 0 else str(n - 1).encode()),
        Put(head, str(n).encode()),
    ]
    ops += [Put(f"b/{writer}/{n:08d}/{i}", os.urandom(64 + 300 * i)) for i in range(WIDTH)]
    if n >= 3:
        ops.append(Delete(f"b/{writer}/{n - 3:08d}/0"))
    return ops


def _ack(writer: str, n: int) -> None:
    with _lock:
        sys.stdout.write(f"ack {writer} {n}\n")
        sys.stdout.flush()


def _first(store: SqliteStorage, writer: str) -> int:
    head = store.get(f"head/{writer}")
    return 0 if head is None else int(head) + 1


def _blocking(store: SqliteStorage, writer: str) -> None:
    n = _first(store, writer)
    while True:
        store.batch(batch_ops(writer, n))
        _ack(writer, n)
        n += 1


async def _deferred(store: SqliteStorage, writer: str) -> None:
    n = _first(store, writer)
    while True:
        try:
            with store.deferring():
                store.batch(batch_ops(writer, n))
        except WriteLockBusy:  # as the server does: again in a thread, where writes wait
            await asyncio.to_thread(store.batch, batch_ops(writer, n))
        settled = store.settled_async()
        if settled is not None:
            await settled
        _ack(writer, n)
        n += 1


async def _loop(store: SqliteStorage, tag: str) -> None:
    await asyncio.gather(*(_deferred(store, f"{tag}L{k}") for k in range(3)))


def main() -> None:
    db, tag = sys.argv[1], sys.argv[2]
    store = SqliteStorage(db)
    print("ready", flush=True)
    for k in range(3):
        threading.Thread(target=_blocking, args=(store, f"{tag}T{k}"), daemon=True).start()
    asyncio.run(_loop(store, tag))


if __name__ == "__main__":
    main()
