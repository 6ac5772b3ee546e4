"""Concurrent ``sys/init`` on one store (the workers of a server): exactly one wins.

Two ``SecretStore``s over one SQLite file or one PostgreSQL database, the
interleavings forced with events around each storage batch. Whatever the
order, one init answers with its keys, the other raises
``AlreadyInitializedError`` and leaves no key file, and a fresh process
opens the store with the winner's key file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from medsecrets.errors import AlreadyInitializedError
from medsecrets.schema.seal import InitResult, KeyFileSealConfig
from medsecrets.storage.base import Operation, StorageBackend
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore

WAIT = 30.0


class Gated:
    """A storage that stops at its first batch, ``before`` or after applying it, until ``go``."""

    def __init__(self, inner: StorageBackend, *, before: bool) -> None:
        self._inner = inner
        self._before = before
        self._batches = 0
        self.reached = threading.Event()
        self.go = threading.Event()

    def batch(self, ops: Sequence[Operation]) -> None:
        self._batches += 1
        first = self._batches == 1
        if first and self._before:
            self.reached.set()
            assert self.go.wait(WAIT)
        self._inner.batch(ops)
        if first and not self._before:
            self.reached.set()
            assert self.go.wait(WAIT)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


Opener = Callable[[], StorageBackend]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    if request.param == "sqlite":
        return lambda: SqliteStorage(tmp_path / "store.db")
    from medsecrets.storage.postgres import PostgresStorage

    dsn: str = request.getfixturevalue("pg_dsn")
    PostgresStorage(dsn).close()  # the tables, before two processes race to make them
    return lambda: PostgresStorage(dsn, min_size=1, max_size=2)


def _init(store: SecretStore, key: Path, out: dict[str, object], name: str) -> None:
    try:
        out[name] = store.initialize(KeyFileSealConfig(str(key)))
    except Exception as exc:
        out[name] = exc


def _wait_for(condition: Callable[[], bool]) -> None:
    for _ in range(int(WAIT / 0.01)):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError("timed out")


def _race(opener: Opener, tmp_path: Path, *, before: bool) -> dict[str, object]:
    """A's first batch gated; B started once A is at its gate (B gated the same way);
    A released, then B. Returns each init's result or error; checks the store reopens."""
    gates = {name: Gated(opener(), before=before) for name in "AB"}
    stores = {name: SecretStore(gate) for name, gate in gates.items()}  # type: ignore[arg-type]
    out: dict[str, object] = {}
    threads = {
        name: threading.Thread(target=_init, args=(store, tmp_path / f"{name}.key", out, name))
        for name, store in stores.items()
    }
    try:
        threads["A"].start()
        assert gates["A"].reached.wait(WAIT)
        threads["B"].start()
        _wait_for(lambda: gates["B"].reached.is_set() or "B" in out)
        gates["A"].go.set()
        threads["A"].join(WAIT)
        gates["B"].go.set()
        threads["B"].join(WAIT)
        won = [name for name in "AB" if isinstance(out[name], InitResult)]
        assert len(won) == 1, out
        (winner,) = won
        loser = "B" if winner == "A" else "A"
        assert isinstance(out[loser], AlreadyInitializedError), out[loser]
        assert (tmp_path / f"{winner}.key").exists()
        assert not (tmp_path / f"{loser}.key").exists()  # the loser's key is gone
        assert not list(tmp_path.glob(".*.tmp"))
        stores[winner].barrier.put("app/acknowledged", b"kept")
    finally:
        for gate in gates.values():
            gate.go.set()
        for store in stores.values():
            store.close()
    reopened = SecretStore(opener())  # a restart: the stored seal opens the stored keyring
    try:
        assert reopened.auto_unseal().sealed is False
        assert reopened.barrier.get("app/acknowledged") == b"kept"
    finally:
        reopened.close()
    return out


def test_an_init_arriving_while_another_is_committing_loses_cleanly(
    opener: Opener, tmp_path: Path
) -> None:
    """The reviewer's interleaving: A's first write is stored, B arrives before A is done.

    Before the fix init took two transactions, and B took A's seal config for an
    interrupted init: B replaced the root key, A wrote the keyring under its own
    and answered 200, and the store never opened again."""
    out = _race(opener, tmp_path, before=False)
    assert isinstance(out["A"], InitResult)


def test_two_inits_committing_at_once_one_wins(opener: Opener, tmp_path: Path) -> None:
    """Both past their key file and about to write: the batch conditions pick one."""
    _race(opener, tmp_path, before=True)
