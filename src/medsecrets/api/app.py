"""``create_app``: HTTP ⇄ core translation, and nothing else.

One handler with two faces: a plain ASGI callable (Starlette's types, no
router or middleware stack; uvicorn and tests use it) and an RSGI one
(``__rsgi__``: granian's native interface, which the server uses: no message
dicts, the answer handed over in one call, about 20 µs a request less). Both
read the request head into one ``_Head`` and share everything else. The handler:

- checks the URL path (over-long, NUL or control characters, ``.``/``..``
  segments also when percent-encoded: 400) and routes it with a table built
  once from the core's route specs (unknown: 404, wrong method: 405, JSON);
- takes the request id from ``X-Request-Id`` if it is ``[A-Za-z0-9-]{1,64}``,
  else makes one, and returns it in ``X-Request-Id``;
- reads the body only for POST/PUT/PATCH/DELETE, never more than
  ``max_body_bytes`` (413, checked against Content-Length first and while
  reading), requires ``application/json`` for a non-empty body (415) and
  parses it (400 ``invalid_json``, also for a key repeated within an object);
  an answer given before a declared body was read to its end (413, an unknown
  route, a wrong method, a GET's body) says ``Connection: close``: the server
  closes the connection rather than read the rest, and a client that sent its
  next request on it would find it gone;
- takes the token from ``Authorization: Bearer`` or ``X-Medsecrets-Token``;
- runs ``core.handle`` (GETs inline, as reads are fast; ``loop_write`` routes
  inline too when the storage ``DefersDurability``: their commits return at
  once and the handler awaits their fsync before it records the outcome;
  other writes in a worker thread, so no fsync blocks the event loop) and
  maps errors through the one status table (``core.status``); unexpected
  exceptions are a generic 500 whose traceback (frames only, never messages
  or values) is logged. No answer leaves before every storage write committed
  so far is durable (``settled_async``): a route may have read one that is
  not yet;
- answers 503 ``timeout`` to a request still unanswered after
  ``request_timeout`` seconds (``api.deadline``: its task is cancelled; work
  in a worker thread is abandoned and may still complete: "outcome unknown";
  work still waiting for a thread is cancelled, never run, and its timeout is
  recorded in its place, so every request keeps one response record);
- logs one JSON access line per request (``api.logging``), without bodies,
  tokens, query strings or paths;
- serves the cached OpenAPI document at ``/v1/openapi.json`` and a docs page
  at ``/v1/docs``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import json
import re
import secrets
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from typing import Any, NamedTuple, NoReturn, Protocol, cast
from urllib.parse import parse_qs

import orjson

from medsecrets.api.deadline import Deadlines
from medsecrets.api.errors import (
    InvalidJsonError,
    MethodNotAllowedError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
    error_body,
)
from medsecrets.api.logging import ERROR_LOGGER, log_access
from medsecrets.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from medsecrets.api.metrics import Metrics
from medsecrets.api.openapi import DOCS_URL, OPENAPI_URL, build_openapi, docs_page
from medsecrets.core.handler import Admitted, Core, Routed
from medsecrets.core.request import Request, Response
from medsecrets.core.routes import UNROUTED
from medsecrets.core.routes.base import RouteSpec, parse_query, quote
from medsecrets.errors import (
    AuditFailure,
    AuthenticationError,
    InvalidRequest,
    NotFoundError,
    NotInitializedError,
    PermissionDenied,
    SealedError,
    StorageError,
    TooLargeError,
)
from medsecrets.loops import running_loop
from medsecrets.schema.tokens import TokenInfo
from medsecrets.storage.base import DefersDurability, WriteLockBusy

__all__ = ["MAX_URL_PATH", "METRICS_URL", "ApiApp", "create_app"]

METRICS_URL = "/v1/sys/metrics"
"""Prometheus text exposition (see ``api.metrics``)."""
METRICS_PATH = "sys/metrics"
"""The path a token must be allowed to ``read`` to scrape metrics."""

MAX_URL_PATH = 2048
"""Longest accepted URL path (raw, percent-encoded) in characters."""

_REQUEST_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_ROUTED_KEPT = 1024
"""URL paths whose checks and route are remembered (the same secrets are read over and over);
the table is emptied when full, so a client naming ever new paths only empties it."""
_BAD_PATH = re.compile(r"[\x00-\x1f\x7f]|(?:^|/)\.{1,2}(?:/|$)")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PARAM = re.compile(r"\{(path|category)\}")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RSGIHeaders(Protocol):
    """The part of granian's ``RSGIHeaders`` the handler uses (names are lower case)."""

    def get(self, key: str, default: Any = None) -> Any: ...


class RSGIScope(Protocol):
    """The part of an RSGI HTTP scope the handler uses."""

    proto: str
    method: str
    path: str
    query_string: str
    client: str

    @property
    def headers(self) -> RSGIHeaders: ...


class RSGIProtocol(Protocol):
    """The part of an RSGI HTTP protocol the handler uses."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def __call__(self) -> Awaitable[bytes]:
        """The whole body at once."""
        ...

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None: ...


class ApiApp(Protocol):
    """The app: an ASGI callable that also speaks RSGI (``__rsgi__``, granian)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...

    async def __rsgi__(self, scope: RSGIScope, protocol: RSGIProtocol) -> None: ...


_WORKER_THREADS = 40
"""Threads running requests off the event loop (writes, slow routes): anyio's default."""
_JSON = "application/json"
_TIMEOUT_ERROR = {"code": "timeout", "message": "the request timed out; outcome unknown"}


class _BodyTooLargeError(Exception):
    pass


_MAX_RECORDED_PATH = 512
"""The longest URL path recorded for an ``unrouted`` request (cut beyond)."""


class _Progress:
    """How far ``_answer`` got with a request: its route's name for metrics and the access
    log (``-`` until known), the route's path parameter once routed (``routed``), and
    whether its records are taken care of (the core's pipeline reached, or the transport's
    refusal recorded): a request that times out before that is recorded by ``_serve``,
    never twice. ``unfinished``, while set, records the timeout of a request the core
    took but whose outcome nobody will record: its request record awaited, or its work
    still queued for a worker thread (then cancelled: it never runs)."""

    __slots__ = ("audited", "path", "route", "routed", "unfinished")

    def __init__(self) -> None:
        self.route = "-"
        self.path = ""
        self.routed = False
        self.audited = False
        self.unfinished: Callable[[], object] | None = None


class _Router:
    """URL path → {method: spec} from the route specs' URL templates."""

    def __init__(self, specs: list[RouteSpec]) -> None:
        self.static: dict[str, dict[str, RouteSpec]] = {}
        patterns: dict[str, dict[str, RouteSpec]] = {}
        for spec in specs:
            if "{" in spec.url:
                patterns.setdefault(spec.url, {})[spec.method] = spec
            else:
                self.static.setdefault(spec.url, {})[spec.method] = spec
        # (literal prefix before the parameter, regex, methods): most specific first
        self.patterns: list[tuple[str, re.Pattern[str], dict[str, RouteSpec]]] = []
        for url in sorted(patterns, key=lambda u: (-u.count("/"), u)):
            regex = _PARAM.sub(
                lambda m: "(?P<path>.+)" if m.group(1) == "path" else "(?P<category>[^/]+)",
                re.escape(url).replace(r"\{", "{").replace(r"\}", "}"),
            )
            literal = url[: url.index("{")]
            self.patterns.append((literal, re.compile(regex + r"\Z"), patterns[url]))

    def match(self, path: str) -> tuple[dict[str, RouteSpec], str] | None:
        found = self.static.get(path)
        if found is not None:
            return found, ""
        for literal, regex, methods in self.patterns:
            if path.startswith(literal):  # a string test before the regex
                m = regex.match(path)
                if m is not None:
                    return methods, m.group(m.lastindex or 1)
        return None


class _Head(NamedTuple):
    """What the handler reads from a request's head, whichever the transport."""

    method: str
    path: str
    """Percent-decoded URL path."""
    raw_length: int
    """Length of the URL path as sent (percent-encoded)."""
    query: str
    remote: str
    request_id: str
    token: str | None
    content_type: str
    content_length: int
    user_agent: str
    chunked: bool
    """``Transfer-Encoding`` was given (a body of unknown length)."""

    @property
    def has_body(self) -> bool:
        """Whether the request declared a body (it may still be arriving)."""
        return self.content_length > 0 or self.chunked


class _Answer(NamedTuple):
    status: int
    body: bytes
    request_id: str
    content_type: str = _JSON
    extra: tuple[tuple[str, str], ...] = ()


def _bearer(value: str) -> str | None:
    scheme, _, credential = value.partition(" ")
    if scheme.lower() == "bearer" and credential:
        return credential.strip()
    return None


def _length(value: str | None) -> int:
    if value is None:
        return -1
    try:
        return int(value)
    except ValueError:
        return -1


class _BodyReader:
    """A request's body chunks (``body()`` as the transports give it), noting whether
    they were read to the end (``finished``)."""

    def __init__(self, body: Callable[[], AsyncIterator[bytes]]) -> None:
        self._body = body
        self.finished = False

    async def __call__(self) -> AsyncIterator[bytes]:
        async for chunk in self._body():
            yield chunk
        self.finished = True


class _ApiHandler:
    """The ASGI and RSGI callable (see module docstring): both transports share ``_serve``."""

    def __init__(
        self,
        core: Core,
        *,
        max_body_bytes: int,
        inline_reads: bool,
        metrics: Metrics | None,
        metrics_unauthenticated: bool,
        request_timeout: float | None,
    ) -> None:
        self._core = core
        storage = core.store.storage
        self._deferrable = storage if isinstance(storage, DefersDurability) else None
        self._background: set[asyncio.Future[None]] = set()  # recordings after a timeout
        self._metrics = metrics
        self._metrics_open = metrics_unauthenticated
        self._max_body = max_body_bytes
        self._inline_reads = inline_reads
        self._deadlines = Deadlines(request_timeout) if request_timeout else None
        # Plain executor threads: a hand-off costs less than half of anyio.to_thread's.
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=_WORKER_THREADS, thread_name_prefix="medsecrets-api"
        )
        self._router = _Router(list(core.routes.values()))
        self._routed: dict[str, tuple[dict[str, RouteSpec], str]] = {}  # checked and routed
        document = build_openapi(
            core.routes.values(),
            metrics_url=METRICS_URL if metrics is not None else None,
            metrics_open=metrics_unauthenticated,
        )
        self._openapi = json.dumps(document, separators=(",", ":")).encode()
        self._docs = docs_page(document).encode()
        self._id_prefix = secrets.token_hex(4)
        self._id_counter = itertools.count(1)

    def _new_request_id(self) -> str:
        """A process-unique id: a random per-process prefix and a counter (16 hex digits)."""
        return f"{self._id_prefix}{next(self._id_counter) & 0xFFFFFFFF:08x}"

    # -- transports ------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI (uvicorn, tests)."""
        if scope["type"] != "http":
            await _lifespan(scope, receive, send)
            return
        request_id = ""
        token: str | None = None
        content_type = ""
        content_length = -1
        user_agent = ""
        chunked = False
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")
            elif name == b"authorization":
                token = _bearer(value.decode("latin-1")) or token
            elif name == b"x-medsecrets-token":
                token = value.decode("latin-1").strip()
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                content_length = _length(value.decode("latin-1"))
            elif name == b"user-agent":
                user_agent = value[:256].decode("latin-1")
            elif name == b"transfer-encoding":
                chunked = True
        path: str = scope["path"]
        client = scope.get("client")
        head = _Head(
            method=scope["method"],
            path=path,
            raw_length=len(scope.get("raw_path") or b"") or len(path),
            query=scope.get("query_string", b"").decode("latin-1"),
            remote=client[0] if client else "",
            request_id=request_id,
            token=token,
            content_type=content_type,
            content_length=content_length,
            user_agent=user_agent,
            chunked=chunked,
        )

        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    raise InvalidRequest("client disconnected")
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    return

        answer = await self._serve(head, body)
        headers = [(name.encode(), value.encode("latin-1")) for name, value in _headers(answer)]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})

    async def __rsgi__(self, scope: RSGIScope, protocol: RSGIProtocol) -> None:
        """RSGI (granian's native interface: no message dicts, one call to answer)."""
        if scope.proto != "http":
            return
        headers = scope.headers
        get = headers.get
        token: str | None = None
        authorization = get("authorization")
        if authorization is not None:
            token = _bearer(authorization)
        direct = get("x-medsecrets-token")
        if direct is not None:
            token = direct.strip()
        # Percent-decoded by granian already (as ASGI servers do): never decode it again, or
        # %252F would reach a secret as "/" (a path checked and used in another spelling).
        path = scope.path
        client = scope.client
        head = _Head(
            method=scope.method,
            path=path,
            raw_length=len(path),
            query=scope.query_string,
            remote=client.rpartition(":")[0].strip("[]") if ":" in client else client,
            request_id=get("x-request-id", ""),
            token=token,
            content_type=get("content-type", ""),
            content_length=_length(get("content-length")),
            user_agent=get("user-agent", "")[:256],
            chunked=get("transfer-encoding") is not None,
        )

        async def body() -> AsyncIterator[bytes]:
            try:
                if head.content_length >= 0:  # declared (and checked against the limit first)
                    yield await protocol()
                    return
                async for chunk in protocol:  # chunked: counted against the limit as it comes
                    yield chunk
            except RuntimeError:  # granian's RSGIProtocolClosed: the client went away
                raise InvalidRequest("client disconnected") from None

        answer = await self._serve(head, body)
        protocol.response_bytes(answer.status, _headers(answer), answer.body)

    # -- the shared part ---------------------------------------------------------------
    async def _serve(self, head: _Head, body: Callable[[], AsyncIterator[bytes]]) -> _Answer:
        """The answer to one request (never raises): timing, timeout, metrics, access log."""
        started = time.perf_counter()
        request_id = head.request_id
        if not (request_id and _REQUEST_ID.fullmatch(request_id)):
            request_id = self._new_request_id()
        progress = _Progress()
        deadlines = self._deadlines
        task = asyncio.current_task(running_loop()) if deadlines is not None else None
        if task is not None and deadlines is not None:
            deadlines.enter(task)
        timed_out = False
        reader = _BodyReader(body)
        try:
            answer = await self._answer(head, reader, request_id, progress)
        except asyncio.CancelledError:
            if task is None or deadlines is None or not deadlines.leave(task):
                raise
            task.uncancel()
            timed_out = True
            # the documented error shape, as every error: the request id in the body too
            timeout_body = orjson.dumps({"error": _TIMEOUT_ERROR, "request_id": request_id})
            answer = _Answer(503, timeout_body, request_id)
            ERROR_LOGGER.warning(
                "request timed out", extra={"request_id": request_id, "route": progress.route}
            )
            if not progress.audited:  # timed out before the core (a body that drips)
                try:
                    self._refuse(
                        head,
                        request_id,
                        progress,
                        RequestTimeoutError(),
                        route=progress.route if progress.routed else UNROUTED,
                        path=progress.path,
                    )
                except AuditFailure as exc:  # a refusal that cannot be recorded, as any
                    answer = self._fail(exc, request_id, progress.route)
                except RequestTimeoutError:
                    pass
            elif progress.unfinished is not None:  # the core's outcome would go unrecorded
                with contextlib.suppress(Exception):  # the timeout, if it can be recorded
                    progress.unfinished()
        except Exception as exc:
            answer = self._fail(exc, request_id, progress.route)
        finally:
            if task is not None and deadlines is not None:
                deadlines.leave(task)
        settled = (
            self._deferrable.settled_async()
            if self._deferrable is not None and not timed_out
            else None
        )
        if settled is not None:  # the route may have read a commit not yet durable
            try:
                await settled
            except StorageError as exc:
                answer = self._fail(exc, request_id, progress.route)
        if head.has_body and not reader.finished:
            # answered before the body was read (413, 404, 405, a GET's body): the server
            # closes the connection rather than read the rest, so the client must not
            # send its next request on it (it raced the close: "disconnected")
            answer = answer._replace(extra=(*answer.extra, ("connection", "close")))
        if self._metrics is not None:
            self._metrics.observe_request(
                progress.route, head.method, answer.status, time.perf_counter() - started
            )
        log_access(
            method=head.method,
            route=progress.route,
            status=answer.status,
            duration_ms=(time.perf_counter() - started) * 1000.0,
            request_id=request_id,
            remote=head.remote,
        )
        return answer

    async def _answer(
        self,
        head: _Head,
        body: Callable[[], AsyncIterator[bytes]],
        request_id: str,
        progress: _Progress,
    ) -> _Answer:
        """Route and run one request; raises what ``_fail`` turns into an error answer.

        A request refused here, before the core (its URL path, route, method, body or
        query), is recorded as the core records its refusals (``_refuse``)."""
        method, path = head.method, head.path
        if head.raw_length > MAX_URL_PATH or len(path) > MAX_URL_PATH:
            self._refuse(
                head,
                request_id,
                progress,
                InvalidRequest(f"URL path longer than {MAX_URL_PATH} characters"),
            )
        matched = self._routed.get(path)
        if matched is None:
            if _BAD_PATH.search(path):
                self._refuse(
                    head,
                    request_id,
                    progress,
                    InvalidRequest(
                        "URL path contains a control character or a '.' or '..' segment"
                    ),
                )
            matched = self._router.match(path)
            if matched is None:
                return await self._unrouted(head, request_id, progress)
            if len(self._routed) >= _ROUTED_KEPT:
                self._routed.clear()
            self._routed[path] = matched
        methods, param = matched
        spec = methods.get(method)
        if spec is None:
            progress.route = next(iter(methods.values())).name
            return self._not_allowed(head, request_id, progress, sorted(methods))
        progress.route, progress.path, progress.routed = spec.name, param, True
        parsed: object = None
        try:
            if method in _BODY_METHODS:
                parsed = await self._read_json(body(), head.content_type, head.content_length)
            query = _query(head.query)
        except (InvalidRequest, _BodyTooLargeError) as exc:
            self._refuse(head, request_id, progress, exc, route=spec.name, path=param)
        progress.audited = True  # from here on the core records it
        request = Request(
            method=method,
            route=spec.name,
            path=param,
            token=head.token,
            body=parsed,
            query=query,
            remote=head.remote,
            user_agent=head.user_agent,
            request_id=request_id,
        )
        if method == "GET" and self._inline_reads and not spec.slow:
            response = self._core.handle(request, defer_audit=True)
            if response.audit is not None:
                await response.audit.wait_async()
        elif method != "GET" and self._inline_reads:
            # A change: admitted and its request record awaited on the loop, only the
            # route itself in a thread (abandoned on cancel: a request timeout answers
            # 503 at once and the thread finishes on its own, "outcome unknown").
            admitted = self._core.admit(request)
            progress.unfinished = functools.partial(_record_timeout, admitted)
            await admitted.wait_async()
            if spec.loop_write and self._deferrable is not None:
                response = await self._write_on_loop(admitted, self._deferrable, progress)
            else:
                response = await self._in_thread(
                    admitted.run_deferred, functools.partial(_record_timeout, admitted), progress
                )
            progress.unfinished = None
            if response.audit is not None:
                await response.audit.wait_async()
        else:

            def refused_in_queue() -> None:
                self._refuse(
                    head, request_id, progress, RequestTimeoutError(), route=spec.name, path=param
                )

            response = await self._in_thread(
                functools.partial(self._core.handle, request), refused_in_queue, progress
            )
        return _Answer(response.status, orjson.dumps(response.body), request_id)

    async def _in_thread(
        self, work: Callable[[], Response], unstarted: Callable[[], None], progress: _Progress
    ) -> Response:
        """``work()`` in a worker thread, which records its outcome. Should the request
        time out while ``work`` still waits for a thread, it is cancelled (never run) and
        ``unstarted()`` records the timeout instead (``progress.unfinished``)."""
        future = self._threads.submit(work)

        def abandon() -> None:
            if future.cancel():  # never started (or cancelled already): nothing recorded
                unstarted()

        progress.unfinished = abandon  # left set on a cancel: ``_serve`` calls it
        response = await asyncio.wrap_future(future)
        progress.unfinished = None
        return response

    async def _write_on_loop(
        self, admitted: Admitted, storage: DefersDurability, progress: _Progress
    ) -> Response:
        """Route a ``loop_write`` change here, its writes deferred; record it once durable.

        A route whose write found the write lock taken (``WriteLockBusy``: it
        wrote nothing) runs again in a worker thread, where writes wait and the
        outcome is recorded whatever becomes of this task. A
        failed fsync replaces a successful outcome (the write is not durable).
        On a request timeout the outcome is still recorded once durable, by a
        task of its own, as a worker thread would ("outcome unknown" to the
        client).
        """
        with storage.deferring():
            routed = admitted.route()
        progress.unfinished = None  # routed: its outcome is recorded below, or by a task
        if isinstance(routed.error, WriteLockBusy):  # as any change, recorded in the thread
            return await self._in_thread(
                admitted.run_deferred, functools.partial(_record_timeout, admitted), progress
            )
        try:
            routed = await _durable(routed, storage)
        except asyncio.CancelledError:
            task = asyncio.ensure_future(_record_when_durable(admitted, routed, storage))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            raise
        return admitted.finish(routed, defer_audit=True)

    async def _unrouted(self, head: _Head, request_id: str, progress: _Progress) -> _Answer:
        """Metrics, the OpenAPI document and the docs page (not core routes); recorded
        as core routes are. Any other URL path is 404, recorded as ``UNROUTED``.

        As strict as the core routes: another method is 405 with ``Allow: GET``;
        any query parameter is unknown (400 ``invalid_request``).
        """
        method, path = head.method, head.path
        if path == METRICS_URL and self._metrics is not None:
            progress.route = "metrics"
            if method != "GET":
                return self._not_allowed(head, request_id, progress, ("GET",))
            try:
                query = _query(head.query)
            except InvalidRequest as exc:  # malformed: refused before the token is checked
                self._refuse(head, request_id, progress, exc, route="sys.metrics")
            progress.audited = True  # _serve_metrics records it
            text = await self._serve_metrics(
                Request(
                    method=method,
                    route="sys.metrics",
                    token=head.token,
                    query=query,
                    remote=head.remote,
                    user_agent=head.user_agent,
                    request_id=request_id,
                )
            )
            return _Answer(200, text, request_id, content_type=METRICS_CONTENT_TYPE)
        if path in (OPENAPI_URL, DOCS_URL):
            name = progress.route = "openapi" if path == OPENAPI_URL else "docs"
            if method != "GET":
                return self._not_allowed(head, request_id, progress, ("GET",))
            try:
                parse_query((), _query(head.query))  # takes none: any one is unknown (400)
            except InvalidRequest as exc:
                self._refuse(head, request_id, progress, exc, route=name)
            self._record(head, request_id, progress, route=name, path="", check=lambda: None)
            if path == OPENAPI_URL:
                return _Answer(200, self._openapi, request_id)
            return _Answer(200, self._docs, request_id, content_type="text/html; charset=utf-8")
        self._refuse(head, request_id, progress, NotFoundError("no such route"), path=path)

    def _not_allowed(
        self, head: _Head, request_id: str, progress: _Progress, methods: Iterable[str]
    ) -> _Answer:
        """405 ``method_not_allowed`` (``Allow``: ``methods``), recorded as ``UNROUTED``."""
        try:
            self._refuse(head, request_id, progress, MethodNotAllowedError(), path=head.path)
        except MethodNotAllowedError:
            return _not_allowed(request_id, methods)

    def _refuse(
        self,
        head: _Head,
        request_id: str,
        progress: _Progress,
        error: Exception,
        *,
        route: str = UNROUTED,
        path: str = "",
    ) -> NoReturn:
        """Record the transport's refusal of a request with ``error`` (its request and
        response records, as the core records its own refusals: without a principal, the
        token HMAC'd), then raise ``error`` (``AuditFailure`` if it cannot be recorded:
        refused all the same, 503). ``path``: the secret path, or the URL path of an
        ``UNROUTED`` request (cut to ``_MAX_RECORDED_PATH``)."""
        if isinstance(error, _BodyTooLargeError):
            error = TooLargeError(f"request body over {self._max_body} bytes")

        def refused() -> NoReturn:
            raise error

        self._record(head, request_id, progress, route=route, path=path, check=refused)
        raise error  # not reached: _record raised it

    def _record(
        self,
        head: _Head,
        request_id: str,
        progress: _Progress,
        *,
        route: str,
        path: str,
        check: Callable[[], None],
    ) -> None:
        """Record a request the transport answers itself (``Core.audit_outside``): its
        outcome is what ``check()`` raises, or success."""
        progress.audited = True
        request = Request(
            method=head.method,
            route=route,
            path=path[:_MAX_RECORDED_PATH],
            token=head.token,
            remote=head.remote,
            user_agent=head.user_agent,
            request_id=request_id,
        )
        self._core.audit_outside(request, check)

    async def _serve_metrics(self, request: Request) -> bytes:
        """``GET /v1/sys/metrics``: a token allowed to read ``sys/metrics``, unless open.

        Served here (text, not JSON) but audited by the core like every request,
        so failed token checks reach the audit trail and the monitor.
        """
        assert self._metrics is not None

        def check() -> TokenInfo | None:
            # The core's order: the seal, authenticate, parse (no query parameters), authorize.
            info: TokenInfo | None = None
            if not self._metrics_open:
                self._core.store.follow_latch()
                barrier = self._core.store.barrier
                if barrier.sealed:  # no token can be checked: say why, as the core routes do
                    raise SealedError if barrier.initialized() else NotInitializedError
                if request.token is None:
                    raise AuthenticationError
                info = self._core.tokens.authenticate(request.token)
            parse_query((), request.query)
            if info is not None and not info.allows("read", METRICS_PATH):
                raise PermissionDenied("this token may not read sys/metrics")
            return info

        self._core.audit_outside(request, check)
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._metrics.render)

    def _fail(self, exc: Exception, request_id: str, route: str) -> _Answer:
        if isinstance(exc, _BodyTooLargeError):
            exc = TooLargeError(f"request body over {self._max_body} bytes")
        status, code, body = error_body(exc, request_id)
        if status >= 500 and code == "internal":
            frames = [
                f"{f.filename}:{f.lineno} in {f.name}"
                for f in traceback.extract_tb(exc.__traceback__)
            ]
            ERROR_LOGGER.error(
                "internal error",
                extra={
                    "request_id": request_id,
                    "route": route,
                    "error_type": type(exc).__name__,
                    "traceback": frames,
                },
            )
        return _Answer(status, body, request_id)

    async def _read_json(
        self, chunks: AsyncIterator[bytes], content_type: str, length: int
    ) -> object:
        if length > self._max_body:
            raise _BodyTooLargeError
        parts: list[bytes] = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > self._max_body:
                raise _BodyTooLargeError
            if chunk:
                parts.append(chunk)
        if not size:
            return None
        media = content_type.split(";", 1)[0].strip().lower()
        if media != _JSON:
            raise UnsupportedMediaTypeError
        raw = b"".join(parts)
        try:  # orjson refuses NaN/Infinity, invalid UTF-8 and nesting over 1024 levels
            value = orjson.loads(raw)
        except (ValueError, RecursionError):
            raise InvalidJsonError from None
        kind = type(value)
        if (kind is dict or kind is list) and raw.count(b":") != _key_count(value):
            _refuse_repeated_keys(raw)  # a ':' in a string, or a key given twice
        return value


def _key_count(value: object) -> int:
    """How many keys the objects in ``value`` (parsed JSON) have, all levels together."""
    count = 0
    stack = [value]
    while stack:  # a loop, not recursion: a body may nest 1024 levels deep
        item = stack.pop()
        members: Iterable[object]
        if isinstance(item, dict):
            count += len(item)
            members = item.values()
        else:
            members = cast(list[object], item)
        for member in members:
            if type(member) is dict or type(member) is list:
                stack.append(member)
    return count


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidJsonError(
                    f"the request body repeats the key {quote(key)} in an object"
                )
            seen.add(key)
    return found


def _refuse_repeated_keys(raw: bytes) -> None:
    """``InvalidJsonError`` naming the first key ``raw`` repeats within one object.

    orjson keeps the last of repeated keys, silently, and a proxy, a WAF or an
    approval step that keeps the first would see another request than the one
    run. Every member of an object has one ':' outside strings, so a body with
    no more ':' than its parsed objects have keys repeats none (``_read_json``
    counts: the usual case, at the cost of a count and a walk over the
    containers); only a body with more (a ':' in a string, or a repeated key)
    is read again here, by ``json`` with a hook that sees every key.
    """
    try:
        json.loads(raw, object_pairs_hook=_unique_pairs)
    except RecursionError:  # orjson took it: deeper than json's recursion limit
        raise InvalidJsonError("the request body nests too deep") from None
    except ValueError:  # never for what orjson read; a 400 all the same, not a 500
        raise InvalidJsonError from None


def _query(text: str) -> dict[str, tuple[str, ...]]:
    """Every query parameter of ``text`` with all its values (400 if malformed)."""
    if not text:
        return {}
    try:
        pairs = parse_qs(text, keep_blank_values=True, max_num_fields=64)
    except ValueError:
        raise InvalidRequest("malformed query string (or over 64 fields)") from None
    return {k: tuple(v) for k, v in pairs.items()}


def _not_allowed(request_id: str, methods: Iterable[str]) -> _Answer:
    """405 ``method_not_allowed`` with the ``Allow`` header listing ``methods``."""
    status, _, error = error_body(MethodNotAllowedError(), request_id)
    return _Answer(status, error, request_id, extra=(("allow", ", ".join(methods)),))


def _headers(answer: _Answer) -> list[tuple[str, str]]:
    headers = [
        ("content-type", answer.content_type),
        ("content-length", str(len(answer.body))),
        ("x-request-id", answer.request_id),
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
    ]
    if answer.extra:
        headers += answer.extra
    return headers


async def _lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer the ASGI lifespan protocol (nothing to set up or tear down here)."""
    if scope["type"] != "lifespan":
        return
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(
    core: Core,
    *,
    max_body_bytes: int = 1_048_576,
    inline_reads: bool = True,
    metrics: Metrics | None = None,
    metrics_unauthenticated: bool = False,
    request_timeout: float | None = None,
) -> ApiApp:
    """The ASGI app serving API v1 for ``core`` (see module docstring).

    It is a plain ASGI callable that also has ``__rsgi__`` (granian's RSGI):
    the handler routes by its own table and turns every error into a JSON
    body itself. ``request_timeout`` (seconds, ``None``: none) answers 503
    ``timeout`` to requests still unanswered by then. ``inline_reads`` runs
    GET requests on the event loop (fast; they do no durable writes except a rare coarse access-time
    update, and await their audit record without blocking the loop); set it
    false to run every request in a worker thread. With ``metrics`` every
    request is counted and timed, and ``GET /v1/sys/metrics`` serves them
    (to a token allowed to read ``sys/metrics``, or to anyone with
    ``metrics_unauthenticated``).
    """
    return _ApiHandler(
        core,
        max_body_bytes=max_body_bytes,
        inline_reads=inline_reads,
        metrics=metrics,
        metrics_unauthenticated=metrics_unauthenticated,
        request_timeout=request_timeout,
    )


async def _durable(routed: Routed, storage: DefersDurability) -> Routed:
    """``routed`` once every commit so far is durable; the ``StorageError`` of a
    failed fsync in place of a successful outcome."""
    settled = storage.settled_async()
    if settled is not None:
        try:
            await settled
        except StorageError as exc:
            if routed.error is None:
                return Routed(None, exc)
    return routed


def _record_timeout(admitted: Admitted) -> None:
    """Record that ``admitted`` timed out before its route ran (it never will)."""
    with contextlib.suppress(RequestTimeoutError):
        admitted.finish(Routed(None, RequestTimeoutError()))


async def _record_when_durable(
    admitted: Admitted, routed: Routed, storage: DefersDurability
) -> None:
    """Record a timed-out loop write's outcome once durable (its answer is gone);
    cancelled (the server stopping: closing the store makes it durable), at once."""
    try:
        routed = await _durable(routed, storage)
    finally:
        with contextlib.suppress(Exception):
            admitted.finish(routed, defer_audit=True)
