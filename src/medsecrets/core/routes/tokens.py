"""Token routes: create (``token``), self (any token), lookup and revoke.

Looking up or revoking another token needs the ``token`` capability and, for
non-root callers, that the other token descends from the caller (it was
created by the caller or by one of its descendants). Any token may look
itself up and revoke itself.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from medsecrets.auth.tokens import NO_SUCH_ACCESSOR
from medsecrets.core.routes.base import Call, Context, RouteSpec
from medsecrets.errors import InvalidRequest, NotFoundError, PermissionDenied
from medsecrets.schema.tokens import CreatedToken, Revoked, TokenInfo
from medsecrets.sensitive import Sensitive

__all__ = ["NO_SUCH_TOKEN", "CreateBody", "TargetBody", "routes"]

NO_SUCH_TOKEN = "no such token"  # noqa: S105 - a message, not a credential
"""The answer for a token value that names no token the caller may see (unknown, revoked,
or outside the caller's tree: the same words)."""


@dataclass(frozen=True, slots=True)
class CreateBody:
    """``POST /v1/auth/token/create``. ``ttl`` in seconds (1 s to 31 days; default 24 h)."""

    paths: tuple[str, ...]
    capabilities: tuple[str, ...]
    ttl: float | None = None
    display_name: str = ""
    emergency: bool = False
    """A break-glass token: its every use is flagged in the audit trail and alerted."""


@dataclass(frozen=True, slots=True)
class TargetBody:
    """The token to look up or revoke: by ``accessor`` or by the ``token`` itself."""

    accessor: str | None = None
    token: Sensitive[str] | None = None


def create(ctx: Context, call: Call) -> CreatedToken:
    body = call.body
    assert isinstance(body, CreateBody)
    token, info = ctx.tokens.create(
        paths=body.paths,
        capabilities=body.capabilities,
        ttl=body.ttl,
        display_name=body.display_name,
        parent=call.principal,
        emergency=body.emergency,
    )
    return CreatedToken(token=token, info=info)


def self_info(ctx: Context, call: Call) -> TokenInfo:
    assert call.principal is not None
    return call.principal


def _target(ctx: Context, call: Call) -> TokenInfo:
    """The token a lookup or revoke is about, after checking the caller may touch it.

    Nothing is looked up for a caller without the ``token`` capability (403 for any
    other token, live or not), and a token outside the caller's tree answers exactly as
    an unknown one, by accessor and by value alike: the answer never says whether a
    token the caller may not touch exists.
    """
    body = call.body
    principal = call.principal
    assert isinstance(body, TargetBody) and principal is not None
    if (body.accessor is None) == (body.token is None):
        raise InvalidRequest("body: give exactly one of accessor and token")
    value = ""
    if body.token is not None:
        value = body.token.reveal()
        if _same_token(value, call.request.token):  # the caller's own: nothing to look up
            return principal
        unknown = NO_SUCH_TOKEN
    else:
        assert body.accessor is not None
        if body.accessor == principal.accessor:
            return principal
        unknown = NO_SUCH_ACCESSOR
    if "token" not in principal.capabilities:  # before the lookup: 403, live or not
        raise PermissionDenied("this token may not look up or revoke other tokens")
    try:
        if body.accessor is not None:
            target = ctx.tokens.lookup(body.accessor)
        else:
            target = ctx.tokens.lookup_token(value)
    except NotFoundError:
        raise NotFoundError(unknown) from None
    if target.accessor == principal.accessor:
        return target
    if not principal.root and not ctx.tokens.is_descendant(target, principal.accessor):
        # Do not reveal whether tokens outside the caller's tree exist: the answer of an
        # unknown one, word for word.
        raise NotFoundError(unknown)
    return target


def _same_token(given: str, own: str | None) -> bool:
    """Whether ``given`` is the caller's own token ``own`` (compared in constant time)."""
    if own is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), own.encode("utf-8"))


def lookup(ctx: Context, call: Call) -> TokenInfo:
    return _target(ctx, call)


def revoke(ctx: Context, call: Call) -> Revoked:
    ctx.tokens.revoke(_target(ctx, call).accessor)
    return Revoked(revoked=True)


def routes() -> tuple[RouteSpec, ...]:
    """The token route specs."""
    return (
        RouteSpec(
            name="tokens.create",
            method="POST",
            url="/v1/auth/token/create",
            handler=create,
            summary="Create a child token (never more than its parent may do)",
            capability="token",
            body=CreateBody,
            body_required=True,
            response=CreatedToken,
            returns_secret=True,
            statuses=(),  # beyond its parent: 403; its parent revoked meanwhile: 401
        ),
        RouteSpec(
            name="tokens.self",
            method="GET",
            url="/v1/auth/token/self",
            handler=self_info,
            summary="The calling token's info",
            response=TokenInfo,
            statuses=(),
        ),
        RouteSpec(
            name="tokens.lookup",
            method="POST",
            url="/v1/auth/token/lookup",
            handler=lookup,
            summary="Look up a token by accessor or token (self, or token capability)",
            body=TargetBody,
            body_required=True,
            response=TokenInfo,
            statuses=(404,),  # no such token (or outside the caller's tree)
        ),
        RouteSpec(
            name="tokens.revoke",
            method="POST",
            url="/v1/auth/token/revoke",
            handler=revoke,
            summary="Revoke a token and its children (self, or token capability)",
            body=TargetBody,
            body_required=True,
            response=Revoked,
            statuses=(404,),  # no such token (or outside the caller's tree, or revoked)
        ),
    )
