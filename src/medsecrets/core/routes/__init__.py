"""The route table: every endpoint of API v1, one module per endpoint group.

``route_table(prefix)`` maps ``(method, route name)`` to its ``RouteSpec``.
"""

from __future__ import annotations

from medsecrets.core.routes import audit, catalog, secrets, system, tokens
from medsecrets.core.routes.base import RouteSpec

__all__ = ["TRANSPORT_OPERATIONS", "UNROUTED", "RouteSpec", "route_table"]

UNROUTED = "unrouted"
"""The operation recorded for a request no route takes: an unknown URL path or method, or
a URL path refused as such (too long, a control character, a ``.`` segment)."""
TRANSPORT_OPERATIONS = frozenset({"sys.metrics", "openapi", "docs", UNROUTED})
"""The operations recorded for what the HTTP layer (``api.app``) serves or refuses itself:
audit records name them besides the route names of ``route_table``."""


def route_table(prefix: str) -> dict[tuple[str, str], RouteSpec]:
    """Every route spec by ``(method, name)``; ``prefix`` is the catalog's path prefix."""
    specs = (
        *system.routes(),
        *secrets.routes(prefix),
        *catalog.routes(prefix),
        *tokens.routes(),
        *audit.routes(),
    )
    table: dict[tuple[str, str], RouteSpec] = {}
    for spec in specs:
        key = (spec.method, spec.name)
        if key in table:  # pragma: no cover - a programming error
            raise RuntimeError(f"duplicate route {key}")
        table[key] = spec
    return table
