"""An encrypted file device built while the store is sealed (a Shamir store at start: the
key, a secret in it, is read after the unseal), in process, through ``build_audit``: a
record rendered while the store was unsealed is sealed even when its write comes after
a seal (a device that is not required, or a slow disk, writes behind the requests)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from medsecrets.audit.crypt import RecordCipher, is_sealed
from medsecrets.audit.lane import Lane
from medsecrets.audit.record import AuditEvent
from medsecrets.server.auditsetup import build_audit
from medsecrets.store import SecretStore
from tests.server.test_auditconfig import settings_from

KEY_PATH = "medessence/production/medical-encryption"
FIELD = "audit_log_encryption_key"


def _event(number: int) -> AuditEvent:
    return AuditEvent(
        kind="request",
        time=dt.datetime.now(dt.UTC),
        request_id=f"req-{number}",
        token="tok-deferred-key-0123456789",
        operation="secrets.read",
        path="medessence/production/database",
    )


def test_a_record_rendered_unsealed_and_written_after_a_seal_is_sealed(
    tmp_path: Path, store: SecretStore
) -> None:
    store.provision("production", categories=("medical-encryption",))
    key = RecordCipher.from_hex(store.secrets.get(KEY_PATH).fields[FIELD])
    store.seal()
    text = (
        f'[audit]\nprocess = false\n[[audit.device]]\ntype = "file"\nname = "primary"\n'
        f'path = "{tmp_path / "audit.jsonl"}"\nencrypt = "{KEY_PATH}#{FIELD}"\n'
    )
    stack = build_audit(settings_from(tmp_path, text), store)
    assert stack.broker is not None
    (lane,) = stack.broker.lanes
    assert isinstance(lane, Lane)
    stack.start()
    try:
        store.auto_unseal()
        lane.append(_event(1), notify=False)  # rendered now, with the HMAC keys
        store.seal()
        lane.wake()  # written after the seal
        lane.stop()
    finally:
        stack.stop()
    (line,) = (tmp_path / "audit.jsonl").read_bytes().splitlines(keepends=True)
    assert is_sealed(line), json.loads(line)
    assert json.loads(key.open(line))["accessor"] is not None
