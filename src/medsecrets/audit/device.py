"""``AuditDevice``: where rendered audit records go.

A device receives record lines in chain order and must *durably accept* them
before ``write`` returns: fsync'd for a file, committed for a database, handed
to the kernel for syslog, written to a durable local spool for a forwarder,
flushed for stdout. ``write`` raises (any exception) when it could not; the
broker then counts the device as failed for those records. ``write`` is only
ever called from one thread at a time per device (the broker's writer thread
for that device) and never concurrently with ``open`` or ``close``.

``open`` returns the ``ChainHead`` the device already holds (the last
``seq`` and ``hash`` it stored, so a restarted server continues the chain), or
``ChainHead()`` (``seq`` 0, ``GENESIS``) when it holds none or cannot read back
(syslog, stdout, forwarders start a new chain at every start).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from medsecrets.audit.record import GENESIS

__all__ = ["AuditDevice", "ChainHead"]


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last record of a chain: its ``seq`` (0: none yet) and ``hash``."""

    seq: int = 0
    hash: str = GENESIS


class AuditDevice(Protocol):
    """One audit destination (see module docstring)."""

    @property
    def name(self) -> str:
        """The device's configured name (unique per server)."""
        ...

    def open(self) -> ChainHead:
        """Prepare the device; the chain head it already holds."""
        ...

    def write(self, lines: Sequence[bytes]) -> None:
        """Durably accept ``lines`` (each one record ending in ``\\n``), in order."""
        ...

    def close(self) -> None:
        """Release the device (idempotent)."""
        ...
