"""The audit seam of the core.

``AuditHook.on_request`` is called once the request is authenticated and
authorized, before it runs; ``on_response`` after it ran (or failed), before
the response goes back to the transport, so nothing (no secret) leaves
without the hook seeing the outcome. Every request gets exactly one
``on_request`` and one ``on_response`` call, also when it is refused early
(then ``principal`` may be ``None``). An exception from either call refuses
the request with ``AuditFailure`` (503): fail closed. Hooks never receive
secret values: only the request (whose body they must treat as sensitive),
the principal, the status and the error code.

Durability is expressed by ``AuditTicket``: a hook may return one from either
call, and the record is durably accepted once ``wait()`` (or ``wait_async()``)
returns; both raise ``AuditFailure`` when no required device accepted it in
time. The core waits on the request ticket before it runs a request that can
change state (anything but GET), and on the response ticket before it returns
a successful response, unless the transport asked to wait itself
(``Core.handle(..., defer_audit=True)``, so an event loop can await it).
Waiting on a later record of the same request covers the earlier ones.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Protocol

from medsecrets.core.request import Request
from medsecrets.schema.audit import (
    AlertList,
    AuditDevices,
    AuditHash,
    AuditPublicKey,
    AuditReads,
    AuditRecords,
    AuditVerification,
)
from medsecrets.schema.tokens import TokenInfo

__all__ = ["AuditAdmin", "AuditHook", "AuditTicket", "NullAuditHook"]


class AuditTicket(Protocol):
    """A record handed to the audit devices, to be waited on (see module docstring)."""

    def wait(self) -> None:
        """Block until durably accepted; ``AuditFailure`` if it was not."""
        ...

    async def wait_async(self) -> None:
        """``wait`` for an event loop (never blocks the loop)."""
        ...


class AuditHook(Protocol):
    """Sees every request and its outcome (durable audit devices implement this)."""

    def on_request(self, request: Request, principal: TokenInfo | None) -> AuditTicket | None:
        """Called before the request runs."""
        ...

    def on_response(
        self,
        request: Request,
        principal: TokenInfo | None,
        response_status: int,
        error_code: str | None,
        version: int | None = None,
    ) -> AuditTicket | None:
        """Called after the request ran, before its response leaves; ``version``: the
        secret version a successful response carries (the one a read served)."""
        ...


class NullAuditHook:
    """Records nothing (tests and tools that need no audit trail)."""

    def on_request(self, request: Request, principal: TokenInfo | None) -> AuditTicket | None:
        return None

    def on_response(
        self,
        request: Request,
        principal: TokenInfo | None,
        response_status: int,
        error_code: str | None,
        version: int | None = None,
    ) -> AuditTicket | None:
        return None


class AuditAdmin(Protocol):
    """The operator's view of the audit trail, served by the ``sys.audit.*`` routes.

    Queries read the first device that can be read back (a database device,
    else a file device); ``NotFoundError`` when there is none.
    """

    def hash(self, value: str, device: str | None) -> AuditHash:
        """The HMAC ``device`` (default: the first) writes for ``value``."""
        ...

    def devices(self) -> AuditDevices:
        """Health of every device."""
        ...

    def search(self, filters: Mapping[str, object], limit: int) -> AuditRecords:
        """Records matching ``filters`` (principal, path_prefix, category, environment,
        operation, outcome, kind, since, until), oldest first, at most ``limit``."""
        ...

    def who_read(self, path: str, since: dt.datetime | None) -> AuditReads:
        """Every successful read of ``path`` (any version) since ``since``."""
        ...

    def public_key(self) -> AuditPublicKey:
        """The checkpoint signing key (``SealedError`` while sealed)."""
        ...

    def verify(self, device: str | None) -> AuditVerification:
        """Check ``device``'s chain (default: the first readable one) and its checkpoints."""
        ...

    def alerts(self, limit: int) -> AlertList:
        """Recent alerts, newest first."""
        ...
