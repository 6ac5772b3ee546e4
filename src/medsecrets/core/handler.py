"""``Core``: the one place where the layers meet, free of any transport.

``handle(request)`` runs, in this order:

1. **seal check**: while sealed only ``sys.health``, ``sys.seal_status`` and
   ``sys.unseal`` are served (and ``sys.init`` while uninitialised); every
   other route raises ``SealedError`` (``NotInitializedError`` before init)
   and returns no data;
2. **authenticate** the token (open routes excepted): ``AuthenticationError``;
3. **parse** the body and query strictly (unknown fields, wrong types):
   ``InvalidRequest`` naming the field;
4. **authorize** (``core.authz``, default deny): ``PermissionDenied``;
5. ``audit.on_request`` (for anything but GET: wait until the request record
   is durable); 6. **route** to the handler; 7. ``audit.on_response`` with the
   status and error code, also for errors; for a success, wait until the
   response record is durable (or hand its ticket to the transport); return.

Errors are raised (``MedsecretsError`` subclasses) after they were audited;
the transport maps them to statuses with ``core.status``. An audit hook that
raises refuses the request with ``AuditFailure``: no response leaves
unaudited. Unexpected exceptions are audited as ``500 internal`` and re-raised.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import NamedTuple

import medsecrets
from medsecrets.auth.tokens import TokenStore
from medsecrets.clock import Clock
from medsecrets.core.audit import AuditAdmin, AuditHook, AuditTicket, NullAuditHook
from medsecrets.core.authz import authorize
from medsecrets.core.request import Request, Response
from medsecrets.core.routes import route_table
from medsecrets.core.routes.base import Call, Context, RouteSpec, parse_query
from medsecrets.core.status import status_for
from medsecrets.errors import (
    AlreadyInitializedError,
    AuditFailure,
    AuthenticationError,
    InvalidRequest,
    NotFoundError,
    NotInitializedError,
    SealedError,
)
from medsecrets.schema.seal import SealType
from medsecrets.schema.tokens import TokenInfo
from medsecrets.store import SecretStore
from medsecrets.wire import to_wire

_AUDIT_LOG = logging.getLogger("medsecrets.audit")

__all__ = ["Admitted", "Core", "Routed"]

_INIT = "sys.init"


class Core:
    """Handles transport-free requests against one ``SecretStore`` (see module docstring)."""

    def __init__(
        self,
        store: SecretStore,
        tokens: TokenStore,
        *,
        audit: AuditHook | None = None,
        admin: AuditAdmin | None = None,
        clock: Clock | None = None,
        seal_type: SealType | None = None,
    ) -> None:
        """``seal_type``: the seal the server's configuration names (``sys/init`` refuses
        another), ``None``: any."""
        self.store = store
        self.tokens = tokens
        self._audit: AuditHook = audit if audit is not None else NullAuditHook()
        self._routes = route_table(store.catalog.prefix)
        self._context = Context(
            store=store,
            tokens=tokens,
            clock=clock if clock is not None else store.clock,
            version=medsecrets.__version__,
            audit=admin,
            seal_type=seal_type,
        )

    def __repr__(self) -> str:
        return f"Core(store={self.store!r}, routes={len(self._routes)})"

    @property
    def routes(self) -> Mapping[tuple[str, str], RouteSpec]:
        """Every route spec by ``(method, route name)``."""
        return self._routes

    def spec(self, method: str, route: str) -> RouteSpec | None:
        """The spec of ``route`` for ``method``, if any."""
        return self._routes.get((method, route))

    # -- the pipeline -----------------------------------------------------------------
    def handle(self, request: Request, *, defer_audit: bool = False) -> Response:
        """Run ``request`` through the pipeline; raise its error after auditing it.

        ``admit`` (steps 1 to 5), the wait for the request record, then
        ``Admitted.run`` (steps 6 and 7). With ``defer_audit`` the successful
        response carries its audit ticket (``Response.audit``) instead of being
        waited on here: the caller must ``wait``/``wait_async`` it before
        anything of the response leaves.
        """
        admitted = self.admit(request)
        admitted.wait()
        return admitted.run(defer_audit=defer_audit)

    def admit(self, request: Request) -> Admitted:
        """Steps 1 to 5: seal check, authentication, parsing, authorization, request record.

        Raises the request's error after auditing it (``AuditFailure`` when the
        request record could not be queued). The caller must then ``wait`` (or
        ``wait_async``) and ``run`` the result: ``handle`` does both; an event
        loop awaits the request record itself and runs only the route in a thread.
        """
        spec = self._routes.get((request.method, request.route))
        principal: TokenInfo | None = None
        try:
            if spec is None:
                raise NotFoundError("no such route")
            _check_canonical(request.path)
            self._check_seal(spec)
            if not spec.open:
                if request.token is None:
                    raise AuthenticationError
                principal = self.tokens.authenticate(request.token)
            call = Call(
                request=request,
                path=request.path,
                body=spec.parse(request.body),
                query=parse_query(spec.query, request.query),
                principal=principal,
            )
            authorize(spec, call, principal)
        except AuditFailure:
            raise
        except Exception as exc:
            status, code = status_for(exc)
            self._on_request(request, principal)
            self._on_response(request, principal, status, code)
            raise
        ticket = self._on_request(request, principal)
        if request.method == "GET":
            ticket = None  # the response record's ticket covers it
        return Admitted(self, spec, call, principal, ticket)

    def audit_outside(self, request: Request, check: Callable[[], TokenInfo | None]) -> None:
        """Audit a request the transport serves itself (metrics), around ``check()``.

        ``check`` authenticates and authorizes (raising as ``handle`` would); the
        request and its outcome are recorded like any other, and a failing audit
        hook refuses it (``AuditFailure``). Nothing secret is served this way, so
        the records are not waited on.
        """
        principal: TokenInfo | None = None
        try:
            principal = check()
        except Exception as exc:
            status, code = status_for(exc)
            self._on_request(request, principal)
            self._on_response(request, principal, status, code)
            raise
        self._on_request(request, principal)
        self._on_response(request, principal, 200, None)

    def _check_seal(self, spec: RouteSpec) -> None:
        store = self.store
        store.follow_latch()  # an operator sealed another process of this server
        if not store.barrier.sealed or spec.sealed_ok:
            return
        self.tokens.forget()
        initialized = store.barrier.initialized()
        if spec.name == _INIT:
            if not initialized:
                return
            raise AlreadyInitializedError  # sealed or not, the answer api.md gives (409)
        if not initialized:
            raise NotInitializedError
        raise SealedError

    def _on_request(self, request: Request, principal: TokenInfo | None) -> AuditTicket | None:
        try:
            return self._audit.on_request(request, principal)
        except AuditFailure:  # the hook's own refusal, explained where it decides it
            raise AuditFailure from None
        except Exception as exc:
            _refusal_logged("request", exc)
            raise AuditFailure from None

    def _on_response(
        self,
        request: Request,
        principal: TokenInfo | None,
        status: int,
        code: str | None,
        version: int | None = None,
    ) -> AuditTicket | None:
        try:
            return self._audit.on_response(request, principal, status, code, version)
        except AuditFailure:  # the hook's own refusal, explained where it decides it
            raise AuditFailure from None
        except Exception as exc:
            _refusal_logged("response", exc)
            raise AuditFailure from None

    def _refused(self, request: Request, principal: TokenInfo | None) -> None:
        """Record (best effort) that the request was refused: its record was not durable."""
        with contextlib.suppress(Exception):
            self._audit.on_response(request, principal, 503, AuditFailure.code)


def _refusal_logged(kind: str, exc: Exception) -> None:
    """Log that the audit hook raised while recording a ``kind`` record, so the refusal
    (503 ``audit_failure``) is explained: the exception's type only, never its text, which
    may quote what was being recorded. Not for the hook's own ``AuditFailure`` (the broker
    with no device refuses every request: said once at start, not once per request)."""
    _AUDIT_LOG.error(
        "audit: recording the %s failed (%s): request refused", kind, type(exc).__name__
    )


def _check_canonical(path: str) -> None:
    """Refuse a path that names its resource in a non-canonical form: authorization, the
    engine, the audit record and the monitor must all see the one path (a token scoped to
    ``a/b/`` reached the secret ``a/b`` as ``a/b/``, and ``/a/b`` slipped past honeytokens)."""
    if path and (path[0] == "/" or path[-1] == "/" or "//" in path):
        raise InvalidRequest("path: no leading or trailing '/', and no empty segment ('//')")


def _served_version(body: object) -> int | None:
    """The secret version a successful answer carries, for its response record: a read's
    ``number``, a write's ``version.number``; ``None`` for other answers."""
    if type(body) is not dict:
        return None
    number = body.get("number")
    if number is None:
        inner = body.get("version")
        number = inner.get("number") if type(inner) is dict else None
    return number if type(number) is int else None


class Routed(NamedTuple):
    """What a route produced: its JSON-ready ``body``, or the ``error`` it raised."""

    body: object
    error: BaseException | None


class Admitted:
    """A request past ``Core.admit``: authenticated, authorized, its record queued.

    ``wait``/``wait_async`` wait until the request record is durable (state-
    changing requests only; a GET's record is covered by its response's), and
    on failure record the refusal and raise ``AuditFailure``. ``run`` then
    routes it (steps 6 and 7 of ``Core.handle``) and may run on another thread.
    """

    __slots__ = ("_call", "_core", "_principal", "_spec", "_ticket")

    def __init__(
        self,
        core: Core,
        spec: RouteSpec,
        call: Call,
        principal: TokenInfo | None,
        ticket: AuditTicket | None,
    ) -> None:
        self._core = core
        self._spec = spec
        self._call = call
        self._principal = principal
        self._ticket = ticket

    def __repr__(self) -> str:
        return f"Admitted(route={self._spec.name!r})"

    def wait(self) -> None:
        """Block until the request record is durable (see class docstring)."""
        if self._ticket is not None:
            try:
                self._ticket.wait()
            except AuditFailure:
                self._core._refused(self._call.request, self._principal)
                raise

    async def wait_async(self) -> None:
        """``wait`` for an event loop."""
        if self._ticket is not None:
            try:
                await self._ticket.wait_async()
            except AuditFailure:
                self._core._refused(self._call.request, self._principal)
                raise

    def run(self, *, defer_audit: bool = False) -> Response:
        """Route the request and record its outcome (see ``Core.handle``)."""
        return self.finish(self.route(), defer_audit=defer_audit)

    def route(self) -> Routed:
        """Step 6 alone: the route's JSON-ready body, or what it raised; nothing recorded.

        The caller must hand the result to ``finish``, as it is or with the
        failure that kept its writes from becoming durable in its place.
        """
        try:
            result = self._spec.handler(self._core._context, self._call)
            # Handlers on hot paths may return ready JSON dicts; the rest go through the codec.
            return Routed(result if type(result) is dict else to_wire(result), None)
        except BaseException as exc:
            return Routed(None, exc)

    def finish(self, routed: Routed, *, defer_audit: bool = False) -> Response:
        """Step 7: record ``routed`` (a response record), then return it or raise its error."""
        core, request, principal = self._core, self._call.request, self._principal
        error = routed.error
        if error is not None:
            if isinstance(error, Exception) and not isinstance(error, AuditFailure):
                status, code = status_for(error)
                core._on_response(request, principal, status, code)
            else:  # every request gets its response record
                core._refused(request, principal)
            raise error
        ticket = core._on_response(request, principal, 200, None, _served_version(routed.body))
        if ticket is not None and not defer_audit:
            ticket.wait()
            ticket = None
        return Response(200, routed.body, audit=ticket)

    def run_deferred(self) -> Response:
        """``run(defer_audit=True)``, as one callable for an executor."""
        return self.run(defer_audit=True)
