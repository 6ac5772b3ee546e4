"""The transport-free core: ``Core.handle(Request) -> Response``.

See ``core.handler`` for the pipeline, ``core.routes`` for the route table,
``core.authz`` for authorization, ``core.audit`` for the audit seam and
``core.status`` for the one error → status table.
"""

from medsecrets.core.audit import AuditHook, NullAuditHook
from medsecrets.core.handler import Core
from medsecrets.core.request import Request, Response
from medsecrets.core.status import status_for

__all__ = ["AuditHook", "Core", "NullAuditHook", "Request", "Response", "status_for"]
