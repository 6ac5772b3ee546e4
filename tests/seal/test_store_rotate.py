"""``SecretStore.rotate`` answers with the term it added, also when another rotation races it."""

from __future__ import annotations

from pathlib import Path

from medsecrets.schema.seal import ShamirSealConfig
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore


def test_rotate_answers_its_own_term_when_another_rotation_comes_right_after(
    tmp_path: Path,
) -> None:
    store = SecretStore(SqliteStorage(tmp_path / "store.db"))
    try:
        store.initialize(ShamirSealConfig(shares=1, threshold=1))
        barrier = store.barrier
        real_rotate = barrier.rotate

        def rotate_then_another_caller_rotates() -> int:
            mine = real_rotate()
            real_rotate()  # a racing caller (thread or node) rotates before this one reads
            return mine

        barrier.rotate = rotate_then_another_caller_rotates  # type: ignore[method-assign]
        info = store.rotate()
        assert info.term == 2
        assert barrier.keyring_info().term == 3
    finally:
        store.close()
