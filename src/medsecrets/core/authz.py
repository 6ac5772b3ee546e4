"""Authorization: may this principal make this call? Default deny.

A call is allowed when the route is open, or the route needs only a valid
token, or the token holds the route's capability on one of its paths that
covers the route's authorization path segment by segment (``covers``: the path
itself or a path under it; ``*`` covers every path). For a listing (``lists``)
the token's path must cover everything the listing's string prefix could name
(``covers_listing``). Routes whose ``authz_path`` gives ``None`` are decided by
the capability alone. Child tokens never exceed
their parents (``TokenStore.create`` enforces it), so checking the token
itself is enough.
"""

from __future__ import annotations

from medsecrets.core.routes.base import Call, RouteSpec
from medsecrets.errors import PermissionDenied
from medsecrets.schema.tokens import TokenInfo, covers, covers_listing

__all__ = ["authorize"]


def authorize(spec: RouteSpec, call: Call, principal: TokenInfo | None) -> None:
    """Return if allowed; raise ``PermissionDenied`` (no detail beyond the capability) if not."""
    if spec.open:
        return
    if principal is None:  # pragma: no cover - the core authenticates first
        raise PermissionDenied
    capability = spec.capability
    if capability is None:
        return
    if capability not in principal.capabilities:
        raise PermissionDenied(f"permission denied: this token lacks the {capability!r} capability")
    if spec.authz_path is None:
        return
    path = spec.authz_path(call)
    if path is None:
        return
    check = covers_listing if spec.lists else covers
    scope = spec.list_scope(call) if spec.list_scope is not None else None
    for prefix in principal.paths:
        if check(prefix, path) or (scope is not None and covers(prefix, scope)):
            return
    if spec.lists:
        raise PermissionDenied(
            f"permission denied: {capability!r} is not granted on everything this prefix"
            " lists (a token on a/b lists the prefix a/b/)"
        )
    raise PermissionDenied(f"permission denied: {capability!r} is not granted on this path")
