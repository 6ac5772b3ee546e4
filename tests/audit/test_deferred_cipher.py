"""A file device's deferred at-rest key (a Shamir store: the key, a secret, is read after
the unseal) through ``BarrierKeySource(ciphers=)`` and a real audit process
(``RemoteLane``): a key whose read fails, whatever it raises, fails the device's writes
(nothing in clear) while the HMAC and signing keys still come, and it is read again at the
next write, so storage trouble heals without a seal (which would itself need the audit)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from medsecrets.audit.crypt import RecordCipher, is_sealed
from medsecrets.audit.keys import BarrierKeySource
from medsecrets.audit.remote import RemoteLane
from medsecrets.audit.waiter import Waiter
from medsecrets.errors import AuditFailure, StorageError
from medsecrets.store import SecretStore
from tests.audit.test_remote_lane import CANARY, HMAC_KEY, SIGNER, _config, _event

KEY = bytes(range(32))


def _write(lane: RemoteLane, number: int) -> bool:
    """Append event ``number``; whether it was durably written."""
    waiter = Waiter(1)
    lane.append(_event(number), waiter)
    try:
        waiter.wait()
    except AuditFailure:
        return False
    return True


def _lane(tmp_path: Path, source: BarrierKeySource) -> RemoteLane:
    lane = RemoteLane(
        _config(tmp_path / "audit.jsonl", cipher_deferred=True), key_material=source.material
    )
    lane.start()
    return lane


def _failing(error: Exception) -> Callable[[], bytes]:
    def resolve() -> bytes:
        raise error

    return resolve


@pytest.mark.parametrize(
    "error",
    [OSError("disk trouble at /secret/place"), RuntimeError("a bug")],
    ids=["oserror", "runtimeerror"],
)
def test_a_key_read_that_raises_fails_the_writes_and_keeps_the_hmac_keys(
    store: SecretStore, tmp_path: Path, error: Exception
) -> None:
    source = BarrierKeySource(store.barrier, ciphers={"file": _failing(error)})
    lane = _lane(tmp_path, source)
    try:
        assert _write(lane, 1) is False  # it used to be written, plain and without HMACs
    finally:
        lane.stop()
    assert (tmp_path / "audit.jsonl").read_bytes() == b""
    material = source.material("file")
    assert material is not None
    hmac_key, signing_key, why = material
    assert len(hmac_key) == 32 and signing_key
    assert why == f"reading it failed ({type(error).__name__})"  # the type, never the text


def test_a_key_that_could_not_be_read_is_read_again_at_the_next_write(
    store: SecretStore, tmp_path: Path
) -> None:
    answers: list[bytes | Exception] = [StorageError("storage unavailable"), KEY]

    def resolve() -> bytes:
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    source = BarrierKeySource(store.barrier, ciphers={"file": resolve})
    lane = _lane(tmp_path, source)
    try:
        assert _write(lane, 1) is False  # storage trouble: nothing written in clear
        assert _write(lane, 2) is True  # healed: it used to fail until a seal and unseal
    finally:
        lane.stop()
    (line,) = (tmp_path / "audit.jsonl").read_bytes().splitlines(keepends=True)
    assert is_sealed(line)
    record = json.loads(RecordCipher(KEY).open(line))
    assert record["request_id"] == "req-2" and record["accessor"] is not None
    assert CANARY.encode() not in line


def test_keys_that_cannot_be_read_after_the_unseal_send_nothing_to_be_written_in_clear(
    tmp_path: Path,
) -> None:
    state = "sealed"

    def material(name: str) -> tuple[bytes, bytes, bytes] | None:
        if state == "sealed":
            return None
        if state == "trouble":  # unsealed, but reading the keys fails (storage trouble)
            raise StorageError("storage unavailable")
        return (HMAC_KEY, SIGNER.private_bytes(), KEY)

    lane = RemoteLane(
        _config(tmp_path / "audit.jsonl", cipher_deferred=True), key_material=material
    )
    lane.start()
    try:
        assert _write(lane, 1) is True  # the sealed spell: plain, without HMACs
        state = "trouble"
        assert _write(lane, 2) is False  # it used to be written plain, without HMACs
        state = "unsealed"
        assert _write(lane, 3) is True
        state = "trouble"  # the audit process has the cipher now: its lines are sealed
        assert _write(lane, 4) is True
    finally:
        lane.stop()
    first, *rest = (tmp_path / "audit.jsonl").read_bytes().splitlines(keepends=True)
    assert json.loads(first)["request_id"] == "req-1" and not is_sealed(first)
    opened = [json.loads(RecordCipher(KEY).open(line)) for line in rest]
    assert [record["request_id"] for record in opened] == ["req-3", "req-4"]
