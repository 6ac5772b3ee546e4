"""The transport-free request and response the core handles.

The API layer builds a ``Request`` from HTTP (or a test builds one directly)
and turns the ``Response`` back into HTTP. ``token`` and ``body`` are kept out
of ``repr`` (they may hold credentials or secret values).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from medsecrets.core.audit import AuditTicket

__all__ = ["Request", "Response"]


@dataclass(slots=True, kw_only=True)
class Request:
    """One API call (treat as immutable: not frozen only because a frozen dataclass
    costs microseconds to build on every request).

    ``route`` is the route name (``"secrets.read"``); ``path`` the resource the
    route acts on as it appears in the URL (secret path, category name; ``""``
    if none); ``body`` the parsed JSON body (``None`` if there was none);
    ``query`` every query parameter with all its values.
    """

    method: str
    route: str
    path: str = ""
    token: str | None = field(default=None, repr=False)
    body: object = field(default=None, repr=False)
    query: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    remote: str = ""
    user_agent: str = ""
    request_id: str = ""


@dataclass(slots=True)
class Response:
    """The result of a successful call: an HTTP-like status and a JSON-ready body
    (treat as immutable, like ``Request``).

    ``audit`` is the audit ticket still to be waited on before the body may
    leave (only with ``Core.handle(..., defer_audit=True)``; else ``None``).
    """

    status: int
    body: object = field(repr=False)
    audit: AuditTicket | None = field(default=None, repr=False)
