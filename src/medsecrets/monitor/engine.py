"""``MonitorEngine``: the detectors, online, off the request path.

The server hands every audit event it recorded to ``submit`` (an
``AuditEvent``, or a record-shaped mapping); that call never blocks and never
raises: it puts the record on a bounded queue and, when the
queue is full, drops it and counts it in ``dropped`` (a slow detector must not
slow requests; the drop count is exported as a metric and is itself a reason
to look). The last tenth of the queue (``alert.critical_reserve``) is kept for
the records that raise critical alerts: an emergency credential's, and any
access to a path ``is_honeytoken`` names, so a flood of ordinary requests
cannot make them go unobserved (a flood of those still can: counted). The
check runs only when the queue is that full.

One daemon thread takes records off the queue, turns responses into
``AccessEvent`` (``access_event``: the fields ``sources.event_from_record``
reads from the same record in our log, as ``audit analyze`` does; mappings
go through ``event_from_record`` itself), runs the detectors over each batch of
queued records in one ``observe_many`` call (the same alerts as event by
event; a plain ``Detector`` is observed event by event) and calls
``on_alert`` for each alert. The conversion happens on that thread, not on
the request path.

Counters (read them from any thread): ``submitted`` and ``dropped`` (updated
under a lock by the submitting threads), ``events`` (responses seen by the
detectors), ``alerts``, ``errors`` (records that could not be converted,
detector failures (one per detector per failed batch: that detector's
alerts for the batch are lost, the other detectors' are delivered) and
``on_alert`` calls that raised; the worker keeps going; these three are
updated by the worker only).

``start`` starts the worker (once); ``drain`` waits until everything submitted
so far has been processed (tests, shutdown); ``stop(timeout)`` drains and ends
the worker. After ``stop``, ``submit`` drops (and counts) everything.

With a ``keeper`` (``monitor.state.StateKeeper`` over the same detectors) the
worker restores the detectors' saved state before the first batch it observes
with a key, saves it periodically after batches, and once more when it ends.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import cast

from medsecrets.audit.packed import PackedEvent, pack_event
from medsecrets.audit.record import AuditEvent, outcome_for
from medsecrets.errors import MedsecretsError
from medsecrets.monitor.alert import Alert, critical_reserve
from medsecrets.monitor.detectors import BatchDetector, Detector, DetectorSet, IndexedAlerts
from medsecrets.monitor.events import ROUTE_OPERATIONS, AccessEvent, lineage
from medsecrets.monitor.sources import event_from_record
from medsecrets.monitor.state import StateKeeper

__all__ = ["MonitorEngine", "access_event", "packed_access_event"]

Submitted = AuditEvent | Mapping[str, object]

_LINGER = 0.005
"""Seconds the worker waits after a wake-up before draining (detection is not latency-bound)."""

_BATCH = 4096
"""Records the worker takes off the queue at a time (the detectors observe them in one call)."""

_log = logging.getLogger(__name__)


def access_event(event: AuditEvent) -> AccessEvent | None:
    """The ``AccessEvent`` of a response event (``None`` for any other kind).

    The same values ``sources.event_from_record`` reads from the record this
    event renders to (the outcome from the status, the time as POSIX seconds).
    """
    return packed_access_event(pack_event(event)) if event.kind == "response" else None


def packed_access_event(event: PackedEvent) -> AccessEvent | None:
    """``access_event`` of a packed event (``audit.packed``), built from the tuple."""
    if event[0] != "response":
        return None
    status = event[14]
    return AccessEvent(
        (event[1] * 1_000_000 + event[2]) / 1_000_000,  # as datetime.timestamp() rounds
        lineage(event[4] or ""),
        event[7],
        ROUTE_OPERATIONS.get(event[9], "other"),
        event[9],
        event[10],
        event[11] or None,
        event[12] or None,
        outcome_for(status if status is not None else 0),
        event[16],
        event[3],
    )


class MonitorEngine:
    """Runs ``detectors`` over submitted audit records on a worker thread (see module docstring)."""

    def __init__(
        self,
        detectors: Detector,
        on_alert: Callable[[Alert], None],
        *,
        queue_size: int = 100_000,
        keeper: StateKeeper | None = None,
        is_honeytoken: Callable[[str], bool] | None = None,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._detectors = detectors
        detector_set = detectors if isinstance(detectors, DetectorSet) else None
        if detector_set is None and not isinstance(detectors, BatchDetector):
            detector_set = DetectorSet([detectors])
        self._observe_many: Callable[[Sequence[AccessEvent]], IndexedAlerts] = (
            functools.partial(detector_set.observe_many, on_error=self._detector_failed)
            if detector_set is not None
            else cast(BatchDetector, detectors).observe_many
        )
        self._on_alert = on_alert
        self._keeper = keeper
        self._size = queue_size
        self._room = queue_size - critical_reserve(queue_size)
        """Records any submit may queue; the rest only ``_critical`` ones."""
        self._is_honeytoken = is_honeytoken
        # A deque (appends and pops are atomic) and one wake-up per batch: a submit costs
        # well under a microsecond on the request path, unlike queue.Queue's two locks.
        self._queue: collections.deque[Submitted] = collections.deque()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._counting = threading.Lock()
        self._stopped = False
        self._processed = 0
        self.submitted = 0
        self.dropped = 0
        self.events = 0
        self.alerts = 0
        self.errors = 0

    def start(self) -> None:
        """Start the worker thread (idempotent; refused after ``stop``)."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("the monitor engine was stopped")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="medsecrets-monitor", daemon=True
                )
                self._thread.start()

    def submit(self, record: Submitted) -> None:
        """Queue one audit event or record for the detectors; never blocks, never raises."""
        queued = len(self._queue)
        if self._stopped or (
            queued >= self._room and (queued >= self._size or not self._critical(record))
        ):
            with self._counting:
                self.dropped += 1
            return
        self._queue.append(record)
        with self._counting:
            self.submitted += 1
        if not self._wake.is_set():
            self._wake.set()

    def _critical(self, record: Submitted) -> bool:
        """Whether ``record`` raises a critical alert (an emergency credential's, an access
        to a decoy): it may take the queue's reserve. Never raises."""
        try:
            if isinstance(record, AuditEvent):
                emergency: object = record.emergency
                path: object = record.path
            else:
                emergency, path = record.get("emergency"), record.get("path")
            if emergency is True:
                return True
            decoy = self._is_honeytoken
            return decoy is not None and isinstance(path, str) and bool(path) and decoy(path)
        except Exception:  # a submit never raises
            return False

    def drain(self) -> None:
        """Wait until every record submitted so far has been processed (needs ``start``)."""
        if self._thread is None:
            raise RuntimeError("the monitor engine is not started")
        with self._counting:
            target = self.submitted
        with self._idle:
            self._idle.wait_for(lambda: self._processed >= target or not self._alive())

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float | None = None) -> bool:
        """Process what is queued, end the worker; False if it did not end within ``timeout``."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        if thread is None:
            return True
        self._wake.set()
        thread.join(timeout)
        return not thread.is_alive()

    def _run(self) -> None:
        queue = self._queue
        popleft = queue.popleft
        while True:
            self._wake.wait()
            if not self._stopped:
                time.sleep(_LINGER)  # let a burst accumulate: one wake-up per batch, not per event
            self._wake.clear()
            while queue:
                batch = [popleft() for _ in range(min(len(queue), _BATCH))]
                self._process(batch)
                self._processed += len(batch)
                if not queue:
                    with self._idle:
                        self._idle.notify_all()
            if self._stopped and not queue:
                if self._keeper is not None:
                    self._keeper.close()
                with self._idle:
                    self._idle.notify_all()
                return

    def _detector_failed(self, name: str, exc: Exception) -> None:
        """A detector raised on a batch: count it, log it; the others' alerts stand."""
        self.errors += 1
        _log.error("monitor: detector %s failed", name, exc_info=exc)

    def _process(self, records: list[Submitted]) -> None:
        """Convert ``records`` to events, run the detectors over them, deliver the alerts."""
        events: list[AccessEvent] = []
        for record in records:
            try:
                if isinstance(record, AuditEvent):
                    event = access_event(record)
                else:
                    event = event_from_record(record) if isinstance(record, Mapping) else None
            except MedsecretsError:
                self.errors += 1
                continue
            if event is not None:
                events.append(event)
        if not events:
            return
        self.events += len(events)
        keeper = self._keeper
        if keeper is not None:
            keeper.before()
        try:
            alerts = self._observe_many(events)
        except Exception:  # a detector bug must not stop the monitor
            self.errors += 1
            _log.exception("monitor: a detector failed")
            return
        if keeper is not None:
            keeper.after()
        for _, alert in alerts:
            self.alerts += 1
            try:
                self._on_alert(alert)
            except Exception:  # an alert sink must not stop the monitor
                self.errors += 1
                _log.exception("monitor: alert delivery failed (%s)", alert.detector)
