"""``create_app``: HTTP ⇄ core translation, and nothing else.

A plain ASGI app (Starlette's types, no router or middleware stack), which:

- checks the URL path (over-long, NUL or control characters, ``.``/``..``
  segments also when percent-encoded: 400) and routes it with a table built
  once from the core's route specs (unknown: 404, wrong method: 405, JSON);
- takes the request id from ``X-Request-Id`` if it is ``[A-Za-z0-9-]{1,64}``,
  else makes one, and returns it in ``X-Request-Id``;
- reads the body only for POST/PUT/PATCH/DELETE, never more than
  ``max_body_bytes`` (413, checked against Content-Length first and while
  reading), requires ``application/json`` for a non-empty body (415) and
  parses it (400 ``invalid_json``);
- takes the token from ``Authorization: Bearer`` or ``X-Medsecrets-Token``;
- runs ``core.handle`` (GETs inline, as reads are fast; writes in a worker
  thread so fsyncs never block the event loop) and maps errors through the one
  status table (``core.status``); unexpected exceptions are a generic 500
  whose traceback (frames only, never messages or values) is logged;
- logs one JSON access line per request (``api.logging``), without bodies,
  tokens, query strings or paths;
- serves the cached OpenAPI document at ``/v1/openapi.json`` and a docs page
  at ``/v1/docs``.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import time
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import anyio.to_thread
import orjson

from medsecrets.api.errors import (
    InvalidJsonError,
    MethodNotAllowedError,
    UnsupportedMediaTypeError,
    error_body,
)
from medsecrets.api.logging import ERROR_LOGGER, log_access
from medsecrets.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from medsecrets.api.metrics import Metrics
from medsecrets.api.openapi import DOCS_URL, OPENAPI_URL, build_openapi, docs_page
from medsecrets.core.handler import Core
from medsecrets.core.request import Request
from medsecrets.core.routes.base import RouteSpec
from medsecrets.errors import (
    AuthenticationError,
    InvalidRequest,
    NotFoundError,
    PermissionDenied,
    TooLargeError,
)
from medsecrets.schema.tokens import TokenInfo

__all__ = ["MAX_URL_PATH", "METRICS_URL", "create_app"]

METRICS_URL = "/v1/sys/metrics"
"""Prometheus text exposition (see ``api.metrics``)."""
METRICS_PATH = "sys/metrics"
"""The path a token must be allowed to ``read`` to scrape metrics."""

MAX_URL_PATH = 2048
"""Longest accepted URL path (raw, percent-encoded) in characters."""

_REQUEST_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_BAD_PATH = re.compile(r"[\x00-\x1f\x7f]|(?:^|/)\.{1,2}(?:/|$)")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PARAM = re.compile(r"\{(path|category)\}")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON = b"application/json"


class _BodyTooLargeError(Exception):
    pass


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
        self.patterns: list[tuple[re.Pattern[str], dict[str, RouteSpec]]] = []
        for url in sorted(patterns, key=lambda u: (-u.count("/"), u)):
            regex = _PARAM.sub(
                lambda m: "(?P<path>.+)" if m.group(1) == "path" else "(?P<category>[^/]+)",
                re.escape(url).replace(r"\{", "{").replace(r"\}", "}"),
            )
            self.patterns.append((re.compile(regex + r"\Z"), patterns[url]))

    def match(self, path: str) -> tuple[dict[str, RouteSpec], str] | None:
        found = self.static.get(path)
        if found is not None:
            return found, ""
        for regex, methods in self.patterns:
            m = regex.match(path)
            if m is not None:
                return methods, m.group(m.lastindex or 1)
        return None


class _ApiHandler:
    """The ASGI callable behind the catch-all route (see module docstring)."""

    def __init__(
        self,
        core: Core,
        *,
        max_body_bytes: int,
        inline_reads: bool,
        metrics: Metrics | None,
        metrics_unauthenticated: bool,
    ) -> None:
        self._core = core
        self._metrics = metrics
        self._metrics_open = metrics_unauthenticated
        self._max_body = max_body_bytes
        self._inline_reads = inline_reads
        self._router = _Router(list(core.routes.values()))
        document = build_openapi(core.routes.values())
        self._openapi = json.dumps(document, separators=(",", ":")).encode()
        self._docs = docs_page(document).encode()
        self._id_prefix = secrets.token_hex(4)
        self._id_counter = itertools.count(1)

    def _new_request_id(self) -> str:
        """A process-unique id: a random per-process prefix and a counter (16 hex digits)."""
        return f"{self._id_prefix}{next(self._id_counter) & 0xFFFFFFFF:08x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await _lifespan(scope, receive, send)
            return
        started = time.perf_counter()
        method: str = scope["method"]
        path: str = scope["path"]
        client = scope.get("client")
        remote = client[0] if client else ""
        request_id = ""
        token: str | None = None
        content_type = b""
        content_length = -1
        user_agent = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                text = value.decode("latin-1")
                if _REQUEST_ID.fullmatch(text):
                    request_id = text
            elif name == b"authorization":
                scheme, _, credential = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and credential:
                    token = credential.strip()
            elif name == b"x-medsecrets-token":
                token = value.decode("latin-1").strip()
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    content_length = -1
            elif name == b"user-agent":
                user_agent = value[:256].decode("latin-1")
        if not request_id:
            request_id = self._new_request_id()
        route_name = "-"
        status_sent = 500
        try:
            raw_path: bytes = scope.get("raw_path") or path.encode()
            if len(raw_path) > MAX_URL_PATH or len(path) > MAX_URL_PATH:
                raise InvalidRequest(f"URL path longer than {MAX_URL_PATH} characters")
            if _BAD_PATH.search(path):
                raise InvalidRequest(
                    "URL path contains a control character or a '.' or '..' segment"
                )
            matched = self._router.match(path)
            if matched is None:
                if path == METRICS_URL and self._metrics is not None:
                    route_name = "metrics"
                    if method != "GET":
                        raise MethodNotAllowedError
                    await self._serve_metrics(
                        send,
                        Request(
                            method=method,
                            route="sys.metrics",
                            token=token,
                            remote=remote,
                            user_agent=user_agent,
                            request_id=request_id,
                        ),
                    )
                    status_sent = 200
                    return
                if method == "GET" and path == OPENAPI_URL:
                    route_name = "openapi"
                    status_sent = 200
                    await self._send(send, 200, self._openapi, request_id)
                    return
                if method == "GET" and path == DOCS_URL:
                    route_name = "docs"
                    status_sent = 200
                    await self._send(
                        send, 200, self._docs, request_id, content_type=b"text/html; charset=utf-8"
                    )
                    return
                if path in (OPENAPI_URL, DOCS_URL):
                    raise MethodNotAllowedError
                raise NotFoundError("no such route")
            methods, param = matched
            spec = methods.get(method)
            if spec is None:
                allow = ", ".join(sorted(methods)).encode()
                status, _, body = error_body(MethodNotAllowedError(), request_id)
                route_name = next(iter(methods.values())).name
                status_sent = status
                await self._send(send, status, body, request_id, extra=((b"allow", allow),))
                return
            route_name = spec.name
            parsed: object = None
            if method in _BODY_METHODS:
                parsed = await self._read_json(receive, content_type, content_length)
            query_string: bytes = scope.get("query_string", b"")
            query: dict[str, tuple[str, ...]] = {}
            if query_string:
                try:
                    pairs = parse_qs(
                        query_string.decode("utf-8", "replace"),
                        keep_blank_values=True,
                        max_num_fields=64,
                    )
                except ValueError:
                    raise InvalidRequest("malformed query string (or over 64 fields)") from None
                query = {k: tuple(v) for k, v in pairs.items()}
            request = Request(
                method=method,
                route=spec.name,
                path=param,
                token=token,
                body=parsed,
                query=query,
                remote=remote,
                user_agent=user_agent,
                request_id=request_id,
            )
            if method == "GET" and self._inline_reads and not spec.slow:
                response = self._core.handle(request, defer_audit=True)
                if response.audit is not None:
                    await response.audit.wait_async()
            else:
                # Abandoned on cancel (a request timeout answers 503 at once; the thread
                # finishes on its own: "outcome unknown", as documented).
                response = await anyio.to_thread.run_sync(
                    self._core.handle, request, abandon_on_cancel=True
                )
            payload = orjson.dumps(response.body)
            status_sent = response.status
            await self._send(send, response.status, payload, request_id)
        except Exception as exc:
            status_sent = await self._fail(send, exc, request_id, route_name)
        finally:
            if self._metrics is not None:
                self._metrics.observe_request(
                    route_name, method, status_sent, time.perf_counter() - started
                )
            log_access(
                method=method,
                route=route_name,
                status=status_sent,
                duration_ms=(time.perf_counter() - started) * 1000.0,
                request_id=request_id,
                remote=remote,
            )

    async def _serve_metrics(self, send: Send, request: Request) -> None:
        """``GET /v1/sys/metrics``: a token allowed to read ``sys/metrics``, unless open.

        Served here (text, not JSON) but audited by the core like every request,
        so failed token checks reach the audit trail and the monitor.
        """
        assert self._metrics is not None

        def check() -> TokenInfo | None:
            if self._metrics_open:
                return None
            if request.token is None:
                raise AuthenticationError
            info = self._core.tokens.authenticate(request.token)
            if not info.allows("read", METRICS_PATH):
                raise PermissionDenied("this token may not read sys/metrics")
            return info

        self._core.audit_outside(request, check)
        text = await anyio.to_thread.run_sync(self._metrics.render)
        await self._send(
            send, 200, text, request.request_id, content_type=METRICS_CONTENT_TYPE.encode()
        )

    async def _fail(self, send: Send, exc: Exception, request_id: str, route: str) -> int:
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
        await self._send(send, status, body, request_id)
        return status

    async def _read_json(self, receive: Receive, content_type: bytes, length: int) -> object:
        if length > self._max_body:
            raise _BodyTooLargeError
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                raise InvalidRequest("client disconnected")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise _BodyTooLargeError
            if chunk:
                chunks.append(chunk)
            more = bool(message.get("more_body", False))
        if not size:
            return None
        media = content_type.split(b";", 1)[0].strip().lower()
        if media != _JSON:
            raise UnsupportedMediaTypeError
        try:  # orjson refuses NaN/Infinity, invalid UTF-8 and nesting over 1024 levels
            return orjson.loads(b"".join(chunks))
        except (ValueError, RecursionError):
            raise InvalidJsonError from None

    @staticmethod
    async def _send(
        send: Send,
        status: int,
        body: bytes,
        request_id: str,
        *,
        content_type: bytes = _JSON,
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            (b"cache-control", b"no-store"),
            (b"x-content-type-options", b"nosniff"),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


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
) -> ASGIApp:
    """The ASGI app serving API v1 for ``core`` (see module docstring).

    It is a plain ASGI callable (Starlette's types, no router or middleware
    stack: the handler routes by its own table and turns every error into a
    JSON body itself). ``inline_reads`` runs GET requests on the event loop
    (fast; they do no durable writes except a rare coarse access-time
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
    )
