"""``AuditBroker``: the core's audit hook over the configured devices.

For each request the broker builds its events as tuples of builtin values
(``audit.packed``: an ``AuditEvent``'s fields, without building one on the request's
path; no value in clear: the token accessor and the request body are HMAC'd when
rendered) and appends them to every lane (one per device, see ``audit.lane``). What
it returns to the core:

- ``on_request``: for a state-changing request (not GET) a ticket the core
  waits on *before the request runs*; for a GET none: its event is held and
  appended with the response's (one exchange, one ticket for both records);
- ``on_response``: for a success a ticket the core (or the transport) waits
  on *before the response leaves*; for an error none (no secret leaves).

A ticket succeeds when at least one *required* device durably accepted the
record (``Waiter``), and fails (``AuditFailure``, 503) when every required
device failed or the watchdog found it hung for over ``timeout`` seconds.
A lane that raises while queueing a record (a bug: it must never) answers the
ticket no for itself (the lane keeps nothing of it: ``Lane.append``), the device's
``failures`` count it and its ``dropped`` the records: a refusal is never
unexplained (it used to reach the core as an exception, which refuses the
request with nothing logged). The device is not ``up`` (``last_error``
``append-failed``) until it queues a record again; the log says which device and
what it raised (the type only) once as it starts raising, and how many records
it refused once it queues again (one line per request would flood the log under
a sustained fault).

The record's ``accessor`` is the HMAC of the token's accessor when the
request authenticated, else of the presented token (a failed attempt): so an
operator finds a token's requests by its accessor and the attempts made with
a leaked token by the token itself.

With no device at all the broker refuses every request except the health and
seal-status probes (``AuditFailure``): no audit, no secret. Response events
also go to ``on_event`` (the anomaly monitor), as ``AuditEvent`` objects built for
it only (the monitor reads neither ``token`` nor ``data``); that call must not block.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence

from medsecrets.audit.lane import AuditLane, KeySource
from medsecrets.audit.packed import (
    PackedCompletion,
    PackedEvent,
    pack_event,
    responded,
    stamp,
    stamp_of,
    unpack_event,
)
from medsecrets.audit.record import AuditEvent, split_path
from medsecrets.audit.waiter import Waiter, answer_all
from medsecrets.core.request import Request
from medsecrets.errors import AuditFailure, NotFoundError, SealedError
from medsecrets.loops import running_loop_or_none
from medsecrets.schema.tokens import TokenInfo

__all__ = ["EXEMPT_ROUTES", "AuditBroker"]

_LOG = logging.getLogger("medsecrets.audit")

EXEMPT_ROUTES = frozenset({"sys.health", "sys.seal_status", "openapi", "docs"})
"""Routes served (and still audited when devices exist) with no audit device at all."""

_SECRET_ROUTES = ("secrets.", "metadata.", "stages.")
_LIST = "metadata.list"
_MAX_PATH = 512  # the longest valid secret path: longer query values are cut in records


def _first(values: Sequence[str] | None) -> str:
    """The first value of a query parameter, ``""`` if absent."""
    return values[0] if values else ""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AuditBroker:
    """Implements ``core.audit.AuditHook`` (see module docstring)."""

    def __init__(
        self,
        lanes: Sequence[AuditLane],
        *,
        prefix: str,
        keys: KeySource,
        timeout: float = 5.0,
        on_event: Callable[[AuditEvent], None] | None = None,
        now: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        names = [lane.name for lane in lanes]
        if len(set(names)) != len(names):
            raise ValueError("audit device names must be unique")
        if lanes and not any(lane.required for lane in lanes):
            raise ValueError("at least one audit device must be required")
        self.lanes = tuple(lanes)
        self._required = sum(1 for lane in lanes if lane.required)
        self._prefix = prefix
        self._keys = keys
        self._timeout = timeout
        self._on_event = on_event
        self._stamp = stamp if now is _utcnow else lambda: stamp_of(now())
        self._defer = any(not lane.sends_at_once for lane in lanes)  # wake once an iteration
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._wake_scheduled: set[asyncio.AbstractEventLoop] = set()
        self._attached: asyncio.AbstractEventLoop | None = None
        # id(GET request) -> (that request, its event), until its response; the request is
        # compared too, so an entry left by a request that never got one matches no other
        self._open: dict[int, tuple[Request, PackedEvent]] = {}
        self._append_failures: dict[str, int] = {}  # by device: appends that raised
        self._append_dropped: dict[str, int] = {}  # by device: their records (not written)
        self._raising: dict[str, int] = {}  # device -> appends that raised since it queued
        self._raising_lock = threading.Lock()
        self._attach_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AuditBroker(devices={[lane.name for lane in self.lanes]})"

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        """Open every device and start the writers and the watchdog."""
        for lane in self.lanes:
            lane.start()
        self._watchdog = threading.Thread(target=self._watch, name="audit-watchdog", daemon=True)
        self._watchdog.start()

    def stop(self) -> None:
        """Write what is queued and close every device."""
        self._stop.set()
        for lane in self.lanes:
            lane.stop(self._timeout)
        if self._watchdog is not None:
            self._watchdog.join(1.0)

    def _watch(self) -> None:
        interval = min(0.05, self._timeout / 10)
        while not self._stop.wait(interval):
            now = time.monotonic()
            for lane in self.lanes:
                lane.check_hung(now)

    # -- the hook ---------------------------------------------------------------------
    def on_request(self, request: Request, principal: TokenInfo | None) -> Waiter | None:
        """Queue the request record; a ticket to wait on for state-changing requests.

        A GET's request event is held until ``on_response``, which appends it
        together with the response (``append_exchange``): the two records are
        adjacent, written in one batch and answered by one ticket, so a read is
        answered only once its request record is durable too.
        """
        if not self.lanes:
            if request.route in EXEMPT_ROUTES:
                return None
            raise AuditFailure("no audit device configured: request refused")
        event = self._event("request", request, principal, None, None, at=self._stamp())
        if request.method == "GET":
            self._open[id(request)] = (request, event)  # one dict operation: atomic
            return None
        return self._append(event, wait=True)

    def on_response(
        self,
        request: Request,
        principal: TokenInfo | None,
        response_status: int,
        error_code: str | None,
        version: int | None = None,
    ) -> Waiter | None:
        """Queue the response record (with a GET's request record); a ticket to wait on
        for a success. ``version``: the secret version the response carries (the version a
        read served), recorded instead of the one asked for."""
        if not self.lanes:
            return None
        held = self._open.pop(id(request), None)
        opened = held[1] if held is not None and held[0] is request else None
        wait = response_status < 400
        at = self._stamp()
        if opened is None:
            event = self._event(
                "response", request, principal, response_status, error_code, at=at, served=version
            )
            if self._on_event is not None:
                self._publish(event)
            return self._append(event, wait=wait)
        completion = (at[0], at[1], response_status, error_code, version)
        if self._on_event is not None:
            self._publish(responded(opened, completion))
        return self._append(opened, wait=wait, completion=completion)

    def record(self, event: AuditEvent) -> None:
        """Queue a record that nobody waits for (alerts, lifecycle events)."""
        self._append(pack_event(event), wait=False)

    def _append(
        self, event: PackedEvent, *, wait: bool, completion: PackedCompletion | None = None
    ) -> Waiter | None:
        """Queue ``event`` on every lane (with ``completion``: the request event and its
        response, as one exchange); the ticket of the required lanes if ``wait``."""
        waiter = Waiter(self._required, timeout=self._timeout + 1.0) if wait else None
        loop = running_loop_or_none()
        if loop is not None and loop is not self._attached:
            self._attach(loop)
        notify = loop is None
        for lane in self.lanes:
            ticket = waiter if lane.required else None
            try:
                lane.append_packed(event, completion, ticket, notify=notify)
            except Exception as exc:  # fail closed for this lane, and say so
                self._append_failed(lane, exc, ticket, 1 if completion is None else 2)
            else:
                if self._raising and lane.name in self._raising:
                    self._append_recovered(lane)
        if self._defer and loop is not None and loop not in self._wake_scheduled:
            # On an event loop: wake the writers once, after this iteration's requests
            # (lanes that send at once need no wake).
            self._wake_scheduled.add(loop)
            loop.call_soon(self._wake, loop)
        return waiter

    def _append_failed(
        self, lane: AuditLane, exc: Exception, ticket: Waiter | None, records: int
    ) -> None:
        """``lane`` raised ``exc`` queueing ``records`` records (not written: a lane keeps
        nothing of an append that raised): count it and them, mark the device down, log it
        if it queued before (the exception's type: its text may quote the record), answer
        ``ticket`` no for this lane."""
        with self._raising_lock:
            name = lane.name
            self._append_failures[name] = self._append_failures.get(name, 0) + 1
            self._append_dropped[name] = self._append_dropped.get(name, 0) + records
            first = name not in self._raising
            self._raising[name] = self._raising.get(name, 0) + 1
        if first:
            _LOG.error(
                "audit device %s: queueing a record failed (%s): not written there",
                name,
                type(exc).__name__,
            )
        if ticket is not None:
            answer_all([ticket], ok=False)

    def _append_recovered(self, lane: AuditLane) -> None:
        """``lane`` queued a record again after raising: up again (if it is), and say so."""
        with self._raising_lock:
            refused = self._raising.pop(lane.name, 0)
        if refused:
            _LOG.warning(
                "audit device %s: queueing records again (%d refused while it failed)",
                lane.name,
                refused,
            )

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let the lanes answer on ``loop`` (the first loop that appends; later ones, as
        in tests, get their answers from the lanes' threads)."""
        with self._attach_lock:
            if self._attached is not None:
                return
            self._attached = loop
        for lane in self.lanes:
            lane.attach(loop)

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        self._wake_scheduled.discard(loop)
        for lane in self.lanes:
            lane.wake()

    def _event(
        self,
        kind: str,
        request: Request,
        principal: TokenInfo | None,
        status: int | None,
        code: str | None,
        *,
        at: tuple[int, int],
        served: int | None = None,
    ) -> PackedEvent:
        """The packed event (``audit.packed``) of ``request`` at ``at``; a request event
        carries the body (``data``), a response event ``status`` and ``code``."""
        route = request.route
        path = request.path
        environment: str | None = None
        category: str | None = None
        if route == _LIST:  # the enumeration's scope: its prefix, environment and category
            query = request.query
            path = _first(query.get("prefix"))[:_MAX_PATH]
            # the prefix is a string prefix: only its complete segments name a scope
            environment, category = split_path(path[: path.rfind("/")], self._prefix)
            environment = _first(query.get("environment"))[:_MAX_PATH] or environment
            category = _first(query.get("category"))[:_MAX_PATH] or category
        elif route.startswith(_SECRET_ROUTES):
            environment, category = split_path(path, self._prefix)
        elif route == "catalog.category":
            category = path or None
        version = served
        found = request.query.get("version")
        if version is None and found and found[0].isdigit() and len(found[0]) < 12:
            version = int(found[0])
        if principal is not None:
            name: str | None = principal.display_name or principal.accessor
            token: str | None = principal.accessor
            auth: str | None = "token"
            emergency = principal.emergency
        else:
            name, token, emergency = None, request.token, False
            auth = "token" if request.token else None
        request_kind = kind == "request"
        return (
            "request" if request_kind else "response",
            at[0],
            at[1],
            request.request_id,
            name,
            token,
            auth,
            request.remote,
            request.user_agent,
            route,
            path,
            environment,
            category,
            version,
            status,
            code,
            emergency,
            request.body if request_kind else None,
            None,
        )

    def _publish(self, event: PackedEvent) -> None:
        """Hand the response event to ``on_event`` (the monitor) as an ``AuditEvent``."""
        assert self._on_event is not None
        try:
            self._on_event(unpack_event(event))
        except Exception as exc:  # the monitor never affects a request
            _LOG.warning("audit monitor feed failed (%s)", type(exc).__name__)

    # -- operator tools ------------------------------------------------------------------
    def hash(self, value: str, device: str | None = None) -> tuple[str, str]:
        """``(device, "hmac-sha256:<hex>")`` of ``value`` with that device's key.

        ``device`` defaults to the first device. ``NotFoundError`` for an
        unknown device, ``SealedError`` while sealed.
        """
        lane = self._lane(device)
        keys = self._keys(lane.name)
        if keys is None:
            raise SealedError
        return lane.name, keys.salter.hash(value)

    def _lane(self, device: str | None) -> AuditLane:
        if not self.lanes:
            raise NotFoundError("no audit device configured")
        if device is None:
            return self.lanes[0]
        for lane in self.lanes:
            if lane.name == device:
                return lane
        raise NotFoundError(f"no audit device named {device!r}")

    def health(self) -> list[dict[str, object]]:
        """Per device: name, required, up, hung, records, failures (the appends that raised
        included), dropped (their records included), pending, seq, error (``up`` false and
        error ``append-failed`` while its appends raise).

        A device with its own ``health()`` (the SIEM forwarder) adds
        ``spool_pending``, ``spool_bytes`` and its delivery state: ``delivery_error``,
        ``delivery_failures`` (in a row), ``delivery_dropped``, ``last_delivered_at``.
        """
        found: list[dict[str, object]] = []
        for lane in self.lanes:
            raising = lane.name in self._raising
            entry: dict[str, object] = {
                "name": lane.name,
                "required": lane.required,
                "up": lane.up and not raising,
                "hung": lane.hung,
                "records": lane.records,
                "failures": lane.failures + self._append_failures.get(lane.name, 0),
                "dropped": lane.dropped + self._append_dropped.get(lane.name, 0),
                "pending": lane.pending,
                "last_error": "append-failed" if raising else lane.last_error,
                "seq": lane.head.seq,
            }
            own = getattr(lane.device, "health", None)
            if callable(own):
                try:
                    extra = own()
                    entry["spool_pending"] = extra.get("pending", 0)
                    entry["spool_bytes"] = extra.get("spool_bytes", 0)
                    entry["delivery_error"] = extra.get("last_error")
                    entry["delivery_failures"] = extra.get("consecutive_failures", 0)
                    entry["delivery_dropped"] = extra.get("dropped", 0)
                    entry["last_delivered_at"] = extra.get("last_success_at")
                except Exception as exc:  # health must never fail a scrape
                    entry["delivery_error"] = type(exc).__name__
            found.append(entry)
        return found
