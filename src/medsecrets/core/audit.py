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
"""

from __future__ import annotations

from typing import Protocol

from medsecrets.core.request import Request
from medsecrets.schema.tokens import TokenInfo

__all__ = ["AuditHook", "NullAuditHook"]


class AuditHook(Protocol):
    """Sees every request and its outcome (durable audit devices implement this)."""

    def on_request(self, request: Request, principal: TokenInfo | None) -> None:
        """Called before the request runs."""
        ...

    def on_response(
        self,
        request: Request,
        principal: TokenInfo | None,
        response_status: int,
        error_code: str | None,
    ) -> None:
        """Called after the request ran, before its response leaves."""
        ...


class NullAuditHook:
    """Records nothing (the default until durable audit exists)."""

    def on_request(self, request: Request, principal: TokenInfo | None) -> None:
        return None

    def on_response(
        self,
        request: Request,
        principal: TokenInfo | None,
        response_status: int,
        error_code: str | None,
    ) -> None:
        return None
