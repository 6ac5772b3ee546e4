"""``Metrics``: the server's Prometheus metrics, cheap on the request path.

Two kinds of metric live here:

- **Request metrics**, fed by the API once per request through
  ``Metrics.observe_request(route, method, status, seconds)``:
  ``medsecrets_http_requests_total{route, method, status}`` (counter) and
  ``medsecrets_http_request_duration_seconds{route}`` (histogram, buckets
  ``REQUEST_BUCKETS``, 0.5 ms to 5 s). The call costs one dictionary lookup,
  one ``bisect`` and three increments under an uncontended lock (well under
  2 µs); the labelled cells are cached by the caller's label tuple.
  ``prometheus_client``'s own ``Counter``/``Histogram`` children cost about
  2.3 µs together, so the cells are plain objects turned into metric families
  at scrape time.
- **Provided metrics**, read at scrape time only from *providers*: callables
  that return ``(label values, value)`` pairs, registered with
  ``Metrics.register`` (or ``Metrics.provide`` with one of the standard
  ``MetricSpec`` constants below). Other modules write providers without
  importing ``prometheus_client``; nothing runs on the request path. A provider
  that raises or returns malformed samples is logged (type and frames only,
  on ``medsecrets.metrics``) and its family is left out of that scrape; the
  rest of the scrape is unaffected.

Labels never hold secrets: the route label is a route name (``secrets.read``),
never a URL path, secret path or token. A route outside the allow-list given
to the constructor (or, without one, not shaped like a route name) is counted
as ``other``; an unknown HTTP method as ``other``; a status outside 100..599
as ``0``. So a client cannot grow the label set either.

Each ``Metrics`` owns its own ``CollectorRegistry`` (never the global default
one), so several apps and tests coexist. ``render()`` gives the text
exposition format (version 0.0.4, served as ``CONTENT_TYPE``).
"""

from __future__ import annotations

import logging
import re
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from medsecrets.errors import InvalidRequest

__all__ = [
    "ALERTS",
    "ALERTS_PENDING",
    "ALERTS_UNAUDITED",
    "ANOMALIES",
    "AUDIT_DELIVERY_FAILURES",
    "AUDIT_DEVICE_FAILURES",
    "AUDIT_DEVICE_UP",
    "AUDIT_DROPPED",
    "AUDIT_RECORDS",
    "AUDIT_SPOOL_PENDING",
    "CONTENT_TYPE",
    "MONITOR_DROPPED_EVENTS",
    "REQUEST_BUCKETS",
    "SEALED",
    "SECRETS_DUE_FOR_ROTATION",
    "Kind",
    "MetricDefinitionError",
    "MetricSpec",
    "Metrics",
    "Provider",
    "Sample",
    "scalar",
]

CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
"""The ``Content-Type`` of ``Metrics.render()`` output."""

REQUEST_BUCKETS: Final[tuple[float, ...]] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
"""Upper bounds (seconds) of the request duration histogram; ``+Inf`` is implied."""
_BOUND_LABELS: Final = (*(repr(bound) for bound in REQUEST_BUCKETS), "+Inf")
"""The ``le`` label of each bucket (``repr`` is Go's float format for these bounds)."""

REQUESTS_TOTAL: Final = "medsecrets_http_requests_total"
REQUEST_DURATION: Final = "medsecrets_http_request_duration_seconds"

OTHER: Final = "other"
"""Label value standing for any route or method outside the allowed set."""

Kind = Literal["gauge", "counter"]
Sample = tuple[tuple[str, ...], float]
"""One provided value: its label values (in the registered label order) and the value."""
Provider = Callable[[], Iterable[Sample]]
"""Called at scrape time; returns every sample of one family."""

_LOGGER = logging.getLogger("medsecrets.metrics")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ROUTE_NAME = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")
_MAX_ROUTE_LENGTH = 64
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CACHE_LIMIT = 4096
"""Most raw label tuples remembered; past it, lookups normalise first (slower, still right)."""


class MetricDefinitionError(InvalidRequest):
    """A metric registration is malformed or names a metric that exists already."""

    code = "invalid_metric"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """What a provided metric is: name, kind, help text and label names.

    A counter's name ends in ``_total`` (it is exposed under that name).
    """

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()


SEALED: Final = MetricSpec("medsecrets_sealed", "gauge", "1 while the store is sealed, else 0.")
AUDIT_DEVICE_UP: Final = MetricSpec(
    "medsecrets_audit_device_up",
    "gauge",
    "1 while the audit device accepts records, else 0.",
    ("device",),
)
AUDIT_DEVICE_FAILURES: Final = MetricSpec(
    "medsecrets_audit_device_failures_total",
    "counter",
    "Writes the audit device failed or timed out (and hangs or losses of its audit process).",
    ("device",),
)
AUDIT_DROPPED: Final = MetricSpec(
    "medsecrets_audit_dropped_total",
    "counter",
    "Audit records the device never wrote (queued while it was down, lost with its process).",
    ("device",),
)
AUDIT_RECORDS: Final = MetricSpec(
    "medsecrets_audit_records_total",
    "counter",
    "Audit records the device has durably accepted.",
    ("device",),
)
AUDIT_SPOOL_PENDING: Final = MetricSpec(
    "medsecrets_audit_spool_pending",
    "gauge",
    "Audit records spooled locally, waiting to be forwarded.",
    ("device",),
)
AUDIT_DELIVERY_FAILURES: Final = MetricSpec(
    "medsecrets_audit_delivery_failures",
    "gauge",
    "Failed deliveries in a row of a forwarding audit device (0 once one succeeds).",
    ("device",),
)
ANOMALIES: Final = MetricSpec(
    "medsecrets_anomalies_total",
    "counter",
    "Anomalies raised, by detector.",
    ("detector",),
)
MONITOR_DROPPED_EVENTS: Final = MetricSpec(
    "medsecrets_monitor_dropped_events_total",
    "counter",
    "Audit events the monitor dropped because its queue was full.",
)
ALERTS: Final = MetricSpec(
    "medsecrets_alerts_total",
    "counter",
    "Alert deliveries, by channel and status.",
    ("channel", "status"),
)
ALERTS_PENDING: Final = MetricSpec(
    "medsecrets_alert_deliveries_pending",
    "gauge",
    "Alert deliveries queued, being sent or waiting for a retry, by channel.",
    ("channel",),
)
ALERTS_UNAUDITED: Final = MetricSpec(
    "medsecrets_alerts_unaudited_total",
    "counter",
    "Alerts that never reached the audit trail (the audit hook's queue was full or its call"
    " failed, or the audit process sent a malformed alert).",
)
SECRETS_DUE_FOR_ROTATION: Final = MetricSpec(
    "medsecrets_secrets_due_for_rotation",
    "gauge",
    "Secrets whose rotation is due.",
)


def scalar(read: Callable[[], float | bool]) -> Provider:
    """A provider for an unlabelled metric from a function giving its one value."""

    def provide() -> Iterable[Sample]:
        return (((), float(read())),)

    return provide


class _Histogram:
    """One route's duration histogram: per-bucket (not cumulative) counts and the sum."""

    __slots__ = ("buckets", "total")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * size
        self.total = 0.0


class _Cell:
    """One (route, method, status) request count, and its route's histogram."""

    __slots__ = ("count", "histogram")

    def __init__(self, histogram: _Histogram) -> None:
        self.count = 0
        self.histogram = histogram


@dataclass(frozen=True, slots=True)
class _Registration:
    spec: MetricSpec
    provider: Provider


class _Collector:
    """The ``prometheus_client`` collector that turns a ``Metrics`` into families."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._metrics._request_families()
        yield from self._metrics._provided_families()


class Metrics:
    """The server's metrics (see the module docstring).

    ``routes``: the route names the API may report; any other route is
    counted as ``other``. Without it, a route must look like a route name
    (lower-case dotted words, at most 64 characters). Thread-safe.
    """

    def __init__(self, *, routes: Iterable[str] | None = None) -> None:
        self._routes = None if routes is None else frozenset(routes)
        self._bounds = REQUEST_BUCKETS
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str, int], _Cell] = {}
        self._cells: dict[tuple[str, str, str], _Cell] = {}
        self._histograms: dict[str, _Histogram] = {}
        self._registrations: dict[str, _Registration] = {}
        self._taken = {_stem(REQUESTS_TOTAL), _stem(REQUEST_DURATION)}
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_Collector(self))

    @property
    def registry(self) -> CollectorRegistry:
        """This instance's own registry (to add e.g. ``prometheus_client`` process metrics)."""
        return self._registry

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request and record its duration (the hot path).

        ``route`` is the route name (see the class docstring), ``method`` the
        HTTP method, ``status`` the status sent, ``seconds`` the wall time.
        A negative or NaN duration is recorded as 0.
        """
        cell = self._cache.get((route, method, status))
        if cell is None:
            cell = self._cell(route, method, status)
        if not seconds >= 0.0:
            seconds = 0.0
        index = bisect_left(self._bounds, seconds)
        lock = self._lock
        lock.acquire()  # cheaper than ``with`` on 3.11; nothing below can raise
        try:
            cell.count += 1
            histogram = cell.histogram
            histogram.buckets[index] += 1
            histogram.total += seconds
        finally:
            lock.release()

    def register(
        self,
        name: str,
        kind: Kind,
        help: str,
        labels: Sequence[str],
        provider: Provider,
    ) -> None:
        """Expose the metric ``name``, read from ``provider`` at every scrape.

        ``provider()`` returns ``(label values, value)`` pairs, one per series,
        label values in the order of ``labels``. Raises
        ``MetricDefinitionError`` for a malformed name or label, a counter
        whose name does not end in ``_total``, or a name in use already.
        """
        self.provide(MetricSpec(name, kind, help, tuple(labels)), provider)

    def provide(self, spec: MetricSpec, provider: Provider) -> None:
        """``register`` for a ``MetricSpec`` (such as the module's standard ones)."""
        _check_spec(spec)
        stem = _stem(spec.name)
        with self._lock:
            if stem in self._taken:
                raise MetricDefinitionError(f"metric {spec.name!r} is registered already")
            self._taken.add(stem)
            self._registrations[spec.name] = _Registration(spec, provider)

    def render(self) -> bytes:
        """The text exposition of every metric (calls every provider once)."""
        return generate_latest(self._registry)

    def _cell(self, route: str, method: str, status: int) -> _Cell:
        """The cell for a raw label tuple, normalising labels; cached while small."""
        labels = (self._route_label(route), _method_label(method), _status_label(status))
        with self._lock:
            cell = self._cells.get(labels)
            if cell is None:
                histogram = self._histograms.get(labels[0])
                if histogram is None:
                    histogram = _Histogram(len(self._bounds) + 1)
                    self._histograms[labels[0]] = histogram
                cell = _Cell(histogram)
                self._cells[labels] = cell
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[(route, method, status)] = cell
        return cell

    def _route_label(self, route: str) -> str:
        if self._routes is not None:
            return route if route in self._routes else OTHER
        if len(route) <= _MAX_ROUTE_LENGTH and _ROUTE_NAME.fullmatch(route):
            return route
        return OTHER

    def _request_families(self) -> Iterator[Metric]:
        with self._lock:
            counts = [(labels, cell.count) for labels, cell in self._cells.items()]
            durations = [(route, list(h.buckets), h.total) for route, h in self._histograms.items()]
        requests = CounterMetricFamily(
            REQUESTS_TOTAL, "HTTP requests by route, method and status.", labels=_REQUEST_LABELS
        )
        for labels, count in sorted(counts):
            requests.add_metric(labels, count)
        yield requests
        duration = HistogramMetricFamily(
            REQUEST_DURATION, "HTTP request duration by route.", labels=("route",)
        )
        for route, buckets, total in sorted(durations):
            cumulative: list[tuple[str, float]] = []
            running = 0
            for bound, count in zip(_BOUND_LABELS, buckets, strict=True):
                running += count
                cumulative.append((bound, running))
            duration.add_metric((route,), cumulative, total)
        yield duration

    def _provided_families(self) -> Iterator[Metric]:
        with self._lock:
            registrations = list(self._registrations.values())
        for registration in registrations:
            spec = registration.spec
            try:
                family = _family(spec, registration.provider())
            except Exception:
                _LOGGER.warning(
                    "metrics provider failed; family left out of this scrape",
                    exc_info=True,
                    extra={"metric": spec.name},
                )
                continue
            yield family


_REQUEST_LABELS: Final = ("route", "method", "status")


def _method_label(method: str) -> str:
    return method if method in _METHODS else OTHER


def _status_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else "0"


def _stem(name: str) -> str:
    """The name without the suffixes Prometheus derives series names with."""
    for suffix in ("_total", "_bucket", "_count", "_sum", "_created"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _check_spec(spec: MetricSpec) -> None:
    if not _METRIC_NAME.fullmatch(spec.name):
        raise MetricDefinitionError(f"metric name {spec.name!r} is not a Prometheus name")
    if spec.kind not in ("gauge", "counter"):
        raise MetricDefinitionError(f"metric {spec.name!r}: kind must be 'gauge' or 'counter'")
    if spec.kind == "counter" and not spec.name.endswith("_total"):
        raise MetricDefinitionError(f"counter {spec.name!r} must be named '..._total'")
    if len(set(spec.labels)) != len(spec.labels):
        raise MetricDefinitionError(f"metric {spec.name!r} repeats a label name")
    for label in spec.labels:
        if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
            raise MetricDefinitionError(f"metric {spec.name!r}: bad label name {label!r}")


def _family(spec: MetricSpec, samples: Iterable[Sample]) -> Metric:
    """One family from a provider's samples; raises if a sample is malformed."""
    family: CounterMetricFamily | GaugeMetricFamily
    if spec.kind == "counter":
        family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
    else:
        family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
    seen: set[tuple[str, ...]] = set()
    for labels, value in samples:
        values = tuple(labels)
        if len(values) != len(spec.labels) or not all(type(v) is str for v in values):
            raise MetricDefinitionError(
                f"metric {spec.name!r}: a sample's label values do not match {spec.labels}"
            )
        if values in seen:
            raise MetricDefinitionError(f"metric {spec.name!r}: a series is given twice")
        seen.add(values)
        family.add_metric(values, float(value))
    return family
