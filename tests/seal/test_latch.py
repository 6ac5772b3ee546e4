"""The operator-seal latch: in memory, and shared by a server's processes through a file."""

from __future__ import annotations

import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from medsecrets.clock import ManualClock
from medsecrets.errors import InvalidRequest, PermissionDenied
from medsecrets.schema.seal import KeyFileSealConfig, ShamirSealConfig
from medsecrets.seal.latch import LATCH_PREFIX, LatchError, LocalLatch, SharedLatch
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore


def test_local_latch() -> None:
    latch = LocalLatch()
    assert not latch.is_set()
    latch.set()
    assert latch.is_set()
    assert "set=True" in repr(latch)
    latch.clear()
    assert not latch.is_set()


def _set_in_child(path: str) -> None:
    SharedLatch.open(path).set()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_latch_set_in_another_process_is_seen_here(tmp_path: Path, method: str) -> None:
    latch = SharedLatch.create(str(tmp_path))
    assert not latch.is_set()
    assert stat.S_IMODE(os.stat(latch.path).st_mode) == 0o600
    assert Path(latch.path).name.startswith(f"{LATCH_PREFIX}{os.getpid()}-")
    child = multiprocessing.get_context(method).Process(target=_set_in_child, args=(latch.path,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert latch.is_set()
    assert SharedLatch.open(latch.path).is_set()
    latch.remove()
    assert not os.path.exists(latch.path)
    assert latch.is_set()  # the mapping outlives the file
    latch.remove()  # twice: no error


def test_open_refuses_what_is_not_a_latch(tmp_path: Path) -> None:
    latch = SharedLatch.create(str(tmp_path))
    link = tmp_path / "link"
    link.symlink_to(latch.path)
    with pytest.raises(LatchError, match="cannot open"):
        SharedLatch.open(str(link))
    other = tmp_path / "other"
    other.write_bytes(b"\1")
    with pytest.raises(LatchError, match="not a seal latch"):
        SharedLatch.open(str(other))
    with pytest.raises(LatchError, match="Is a directory"):
        SharedLatch.open(str(tmp_path))
    with pytest.raises(LatchError, match="cannot open"):
        SharedLatch.open(str(tmp_path / "missing"))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(LatchError, match="not a seal latch"):
        SharedLatch.open(str(fifo))  # refused at once, not waited on


def test_create_removes_the_latches_of_dead_servers_only(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f"{LATCH_PREFIX}{int(dead.stdout)}-abc"
    stale.write_bytes(b"")
    alive = tmp_path / f"{LATCH_PREFIX}{os.getppid()}-abc"
    alive.write_bytes(b"")
    unrelated = tmp_path / "medsecrets.db"
    unrelated.write_bytes(b"")
    SharedLatch.create(str(tmp_path))
    assert not stale.exists()
    assert alive.exists()
    assert unrelated.exists()


def test_create_in_a_missing_directory_is_a_latch_error(tmp_path: Path) -> None:
    with pytest.raises(LatchError, match="cannot create a seal latch"):
        SharedLatch.create(str(tmp_path / "missing"))


def test_an_operator_seal_in_one_process_seals_the_others(tmp_path: Path) -> None:
    """Two stores over one storage and one latch, as two workers of a server."""
    first = SecretStore(SqliteStorage(tmp_path / "s.db"), latch=SharedLatch.create(str(tmp_path)))
    first.initialize(KeyFileSealConfig(str(tmp_path / "unseal.key")))
    assert isinstance(first.latch, SharedLatch)
    second = SecretStore(SqliteStorage(tmp_path / "s.db"), latch=SharedLatch.open(first.latch.path))
    try:
        second.auto_unseal()
        assert second.follow_latch() is False
        assert not second.barrier.sealed
        first.seal(by_operator=True)
        assert second.follow_latch() is True
        assert second.barrier.sealed
        with pytest.raises(PermissionDenied, match="sealed by an operator"):
            second.auto_unseal()
        # a seal that is not an operator's (a stop) does not latch
        third_latch = SharedLatch.create(str(tmp_path))
        third = SecretStore(SqliteStorage(tmp_path / "s.db"), latch=third_latch)
        third.auto_unseal()
        third.seal()
        assert not third_latch.is_set()
        assert third.auto_unseal().sealed is False
        third.close()
    finally:
        first.close()
        second.close()


def test_unsealing_with_shares_lifts_the_latch(tmp_path: Path) -> None:
    store = SecretStore(SqliteStorage(tmp_path / "s.db"))
    shares = store.initialize(ShamirSealConfig(shares=1, threshold=1)).shares
    try:
        store.seal(by_operator=True)
        assert store.latch.is_set()
        assert store.unseal(shares[0]).sealed is False
        assert not store.latch.is_set()
    finally:
        store.close()


def test_a_process_follows_an_initialisation_made_by_another(tmp_path: Path) -> None:
    clock = ManualClock()
    first = SecretStore(SqliteStorage(tmp_path / "s.db"), latch=SharedLatch.create(str(tmp_path)))
    assert isinstance(first.latch, SharedLatch)
    second = SecretStore(
        SqliteStorage(tmp_path / "s.db"), latch=SharedLatch.open(first.latch.path), clock=clock
    )
    key = tmp_path / "unseal.key"
    try:
        assert second.follow_latch() is False  # not initialised: nothing to follow
        assert second.barrier.sealed
        with pytest.raises(InvalidRequest, match="several worker processes"):
            first.initialize(ShamirSealConfig(shares=1, threshold=1))
        assert not first.status().initialized  # nothing written
        first.initialize(KeyFileSealConfig(str(key)))
        assert second.follow_latch() is False
        assert second.wait_catch_up(30)  # an auto-unseal in a thread of its own
        assert not second.barrier.sealed  # unsealed with the key file, as at a start
        # a failing auto-unseal is not tried again for a second
        second.seal()
        kept = key.read_bytes()
        key.unlink()
        second.follow_latch()
        assert second.wait_catch_up(30)
        assert second.barrier.sealed
        key.write_bytes(kept)
        key.chmod(0o600)
        second.follow_latch()
        assert second.wait_catch_up(30)
        assert second.barrier.sealed
        clock.advance(1.1)
        second.follow_latch()
        assert second.wait_catch_up(30)
        assert not second.barrier.sealed
    finally:
        first.close()
        second.close()


def test_a_process_of_its_own_does_not_unseal_by_itself(tmp_path: Path) -> None:
    store = SecretStore(SqliteStorage(tmp_path / "s.db"))
    try:
        store.initialize(KeyFileSealConfig(str(tmp_path / "unseal.key")))
        store.seal()
        assert store.follow_latch() is False
        assert store.barrier.sealed
    finally:
        store.close()
