"""FAKE audit lanes for the tests of the broker's handling of a lane that fails.

``FakeFailingSignerLane``: a lane whose queueing of any record raises, the way a lane's
bug reaches the broker (``tests/audit/test_audit_load_refusals.py``,
``tests/audit/test_audit_review_append.py``).
"""

from __future__ import annotations

from pathlib import Path

from medsecrets.audit.file import FileAuditDevice
from medsecrets.audit.lane import DeviceKeys, Lane
from medsecrets.audit.record import Salter


class FakeFailingSignerLane(Lane):
    """A FAKE fault: a real in-process lane (device ``primary``, a real file device at
    ``path``, node ``n1``) whose checkpoint signer always raises ``RuntimeError(message)``,
    with a checkpoint due after every record, so that every ``append`` raises.

    Why a fake: no real signer fails on demand, and what is under test is the broker
    meeting a lane that raises while queueing a record; the lane, its device, the
    broker and the records are all real, only the signing fails. ``keys`` is the lane's
    key material (a real salter; the broker salts with it too).
    """

    def __init__(self, path: Path, *, message: str = "signing failed") -> None:
        self.message = message
        self.keys = DeviceKeys(salter=Salter(b"k" * 32), sign=self._sign)
        super().__init__(
            FileAuditDevice("primary", path),
            node="n1",
            keys=lambda name: self.keys,
            checkpoint_every=1,  # a checkpoint is due after every record: every append raises
        )

    def _sign(self, node: str, device: str, covers: int, covers_hash: str) -> dict[str, object]:
        raise RuntimeError(self.message)
