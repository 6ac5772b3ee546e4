"""The health of a file device whose at-rest key is deferred (a Shamir store: the key, a
secret, is read after the unseal), written by a real audit process (``RemoteLane``): while
it refuses records because that key cannot be had, it is not ``up`` (``/v1/sys/metrics``'
``medsecrets_audit_device_up``, the health endpoints and ``medsecrets status`` read this),
each refusal counts as a failure, and it is ``up`` again once a write succeeds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from medsecrets.audit.remote import RemoteLane
from medsecrets.audit.waiter import Waiter
from medsecrets.errors import AuditFailure, StorageError
from tests.audit.test_remote_lane import HMAC_KEY, SIGNER, _config, _event

KEY = bytes(range(32))

Material = tuple[bytes, bytes, bytes | str | None] | None


def _write(lane: RemoteLane, number: int) -> bool:
    """Append event ``number``; whether it was durably written."""
    waiter = Waiter(1)
    lane.append(_event(number), waiter)
    try:
        waiter.wait()
    except AuditFailure:
        return False
    return True


def _lane(tmp_path: Path, material: Callable[[str], Material]) -> RemoteLane:
    lane = RemoteLane(
        _config(tmp_path / "audit.jsonl", cipher_deferred=True), key_material=material
    )
    lane.start()
    return lane


def test_keys_that_cannot_be_read_put_the_device_down_until_a_write_succeeds(
    tmp_path: Path,
) -> None:
    state = "trouble"

    def material(name: str) -> Material:
        if state == "trouble":  # unsealed, but reading the keys fails (storage trouble)
            raise StorageError("storage unavailable")
        return (HMAC_KEY, SIGNER.private_bytes(), KEY)

    lane = _lane(tmp_path, material)
    try:
        assert lane.up is True
        assert _write(lane, 1) is False  # refused: it would have been written plain
        assert lane.up is False  # it said up while refusing every record
        assert lane.last_error == "keys-unavailable"
        assert lane.failures == 1
        assert _write(lane, 2) is False
        assert lane.up is False and lane.failures == 2
        state = "unsealed"
        assert _write(lane, 3) is True
        assert lane.up is True
    finally:
        lane.stop()


def test_a_key_the_audit_process_was_told_it_cannot_have_puts_the_device_down(
    tmp_path: Path,
) -> None:
    why: list[bytes | str] = ["reading it failed (StorageError)"]

    def material(name: str) -> Material:
        return (HMAC_KEY, SIGNER.private_bytes(), why[0])

    lane = _lane(tmp_path, material)
    try:
        assert _write(lane, 1) is False  # the audit process fails the write
        assert lane.up is False
        why[0] = KEY
        assert _write(lane, 2) is True
        assert lane.up is True
    finally:
        lane.stop()


def test_keys_unavailable_is_logged_once_as_it_starts_and_once_as_it_ends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Storage trouble that lasts logs one warning, not one a flush (a request each)."""
    state = "trouble"

    def material(name: str) -> Material:
        if state == "trouble":
            raise StorageError("storage unavailable")
        return (HMAC_KEY, SIGNER.private_bytes(), KEY)

    lane = _lane(tmp_path, material)
    try:
        with caplog.at_level("INFO", logger="medsecrets.audit"):
            for number in range(1, 4):
                assert _write(lane, number) is False
            state = "unsealed"
            assert _write(lane, 4) is True
            assert _write(lane, 5) is True
        lines = [r.getMessage() for r in caplog.records if "keys" in r.getMessage()]
        assert lines == [
            "audit device file: keys unavailable (StorageError)",
            "audit device file: keys available again",
        ]
    finally:
        lane.stop()
