"""The transport-free core: ``Core.handle(Request) -> Response``.

See ``core.handler`` for the pipeline, ``core.routes`` for the route table,
``core.authz`` for authorization, ``core.audit`` for the audit seam and
``core.status`` for the one error → status table.

The names below load lazily (PEP 562): importing the package imports none of its
modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medsecrets.lazy import resolve

if TYPE_CHECKING:
    from medsecrets.core.audit import AuditHook, NullAuditHook
    from medsecrets.core.handler import Core
    from medsecrets.core.request import Request, Response
    from medsecrets.core.status import status_for

__all__ = [
    "AuditHook",
    "Core",
    "NullAuditHook",
    "Request",
    "Response",
    "status_for",
]

_EXPORTS = {
    "AuditHook": "medsecrets.core.audit",
    "Core": "medsecrets.core.handler",
    "NullAuditHook": "medsecrets.core.audit",
    "Request": "medsecrets.core.request",
    "Response": "medsecrets.core.request",
    "status_for": "medsecrets.core.status",
}


def __getattr__(name: str) -> object:
    return resolve(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
