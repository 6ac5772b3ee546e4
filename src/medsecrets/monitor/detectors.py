"""Anomaly detectors: each watches the ``AccessEvent`` stream for one kind of misuse.

A ``Detector`` has a ``name`` and ``observe(event) -> list[Alert]``; it keeps
its own state, bounded in memory (sliding windows are deques pruned on every
event; per-key tables hold at most ``DetectorConfig.max_keys`` keys and drop
the oldest beyond that). Windows are measured on *event* time, so the same
detectors run online (``MonitorEngine``) and offline (``analyze``); events are
expected in (roughly) time order. A detector is not thread-safe: one thread
observes.

The detectors and their rules (every threshold is a ``DetectorConfig`` field):

- ``rate``: more than ``rate_limit`` (50) successful secret reads by one
  principal within ``rate_window`` (300 s); ``rate_principal_limits``
  overrides the limit for a principal, ``rate_category_limits`` adds a limit
  on one principal's reads of one category.
- ``bulk``: reads of ``bulk_distinct`` (20) or more *distinct* secret paths by
  one principal within ``bulk_window`` (60 s).
- ``enumeration``: ``enumeration_lists`` (20) or more list operations by one
  principal within ``enumeration_window`` (60 s).
- ``failed_burst``: ``failed_denials`` (5) or more denied accesses within
  ``failed_window`` (60 s), counted per principal and per source address
  (two alerts, two keys).
- ``unusual_time``: after a principal's warm-up, an access in an hour-of-week
  the principal did not use during warm-up. The baseline counts, for every
  hour-of-week, the distinct days with activity; it is pooled over weekdays
  (Monday-Friday) and over weekend days and smoothed by one hour either
  side, and an hour whose pooled count is below ``unusual_min_days`` (1) is
  unusual. Hours are UTC.
- ``new_source``: after warm-up, an access from a network (``/24`` IPv4,
  ``/64`` IPv6; ``new_source_scope="address"`` for exact addresses) the
  principal did not use during warm-up. A source that is not an IP address
  (CloudTrail names AWS services) is compared as text.
- ``first_category``: after warm-up, a principal's access to a secret
  category it did not touch during warm-up.
- ``emergency``: any access with an emergency (break-glass) credential.
- ``honeytoken``: any read (whatever its outcome) of a path for which
  ``is_honeytoken(path)`` is true.

Warm-up (``unusual_time``, ``new_source``, ``first_category``) lasts until the
principal has ``warmup_events`` (50) events *and* ``warmup_days`` (7) days have
passed since its first one. The baselines learn only during warm-up: after it,
what was not seen stays unusual (an operator, not repetition, makes a new
habit normal), so a burst of anomalies never teaches itself in.

Every alert carries the triggering event's ``request_id`` in
``details["request_id"]`` and a dedup ``key`` (principal, principal and
category/network/hour, source, path). A detector raises an alert for a key at
most once per quiet period: the detector's window for counting detectors, and
``repeat_after`` (1 h) for the others; channels dedupe further. Alerts carry
names, paths, addresses and counts, never a secret value or a token.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, TypeVar

from medsecrets.errors import ConfigError
from medsecrets.monitor.alert import Alert, Severity
from medsecrets.monitor.events import AccessEvent

__all__ = [
    "DETECTOR_NAMES",
    "BulkDetector",
    "Detector",
    "DetectorConfig",
    "DetectorSet",
    "EmergencyDetector",
    "EnumerationDetector",
    "FailedBurstDetector",
    "FirstCategoryDetector",
    "HoneytokenDetector",
    "NewSourceDetector",
    "RateDetector",
    "UnusualTimeDetector",
    "hour_of_week",
]

DETECTOR_NAMES: Final = (
    "rate",
    "bulk",
    "enumeration",
    "failed_burst",
    "unusual_time",
    "new_source",
    "first_category",
    "emergency",
    "honeytoken",
)

_DAY = 86400.0
_WEEKDAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class Detector(Protocol):
    """One detector (see module docstring)."""

    @property
    def name(self) -> str:
        """The detector name (``Alert.detector`` of its alerts)."""
        ...

    def observe(self, event: AccessEvent) -> list[Alert]:
        """Update the state with ``event``; the alerts it raises (usually none)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectorConfig:
    """Every detector threshold (defaults from the issue; see module docstring).

    Construction raises ``ConfigError`` naming the first bad setting.
    """

    rate_limit: int = 50
    rate_window: float = 300.0
    rate_principal_limits: Mapping[str, int] = field(default_factory=dict)
    rate_category_limits: Mapping[str, int] = field(default_factory=dict)
    bulk_distinct: int = 20
    bulk_window: float = 60.0
    enumeration_lists: int = 20
    enumeration_window: float = 60.0
    failed_denials: int = 5
    failed_window: float = 60.0
    warmup_events: int = 50
    warmup_days: float = 7.0
    unusual_min_days: int = 1
    new_source_scope: Literal["network", "address"] = "network"
    ipv4_prefix: int = 24
    ipv6_prefix: int = 64
    repeat_after: float = 3600.0
    max_keys: int = 100_000

    def __post_init__(self) -> None:
        counts = {
            "rate_limit": self.rate_limit,
            "bulk_distinct": self.bulk_distinct,
            "enumeration_lists": self.enumeration_lists,
            "failed_denials": self.failed_denials,
            "warmup_events": self.warmup_events,
            "unusual_min_days": self.unusual_min_days,
            "max_keys": self.max_keys,
        }
        counts.update(
            {f"rate_principal_limits[{k}]": v for k, v in self.rate_principal_limits.items()}
        )
        counts.update(
            {f"rate_category_limits[{k}]": v for k, v in self.rate_category_limits.items()}
        )
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"monitor: {name} must be a positive integer")
        for name in ("rate_window", "bulk_window", "enumeration_window", "failed_window"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"monitor: {name} must be a positive number of seconds")
        if not self.warmup_days >= 0 or not self.repeat_after >= 0:
            raise ConfigError("monitor: warmup_days and repeat_after must not be negative")
        if self.new_source_scope not in ("network", "address"):
            raise ConfigError("monitor: new_source_scope must be network or address")
        if not 0 <= self.ipv4_prefix <= 32 or not 0 <= self.ipv6_prefix <= 128:
            raise ConfigError("monitor: ipv4_prefix is 0..32 and ipv6_prefix 0..128")


def hour_of_week(ts: float) -> int:
    """Hour of the week (0 = Monday 00:00-01:00 UTC .. 167) of POSIX time ``ts``."""
    hours = int(ts // 3600)
    return ((hours // 24 + 3) % 7) * 24 + hours % 24  # 1970-01-01 was a Thursday


def _alert(
    detector: str,
    severity: Severity,
    event: AccessEvent,
    key: str,
    summary: str,
    *,
    count: int = 1,
    **details: object,
) -> Alert:
    return Alert(
        detector=detector,
        severity=severity,
        time=event.time,
        summary=summary,
        key=key,
        principal=event.principal or None,
        source=event.source or None,
        path=event.path or None,
        category=event.category,
        environment=event.environment,
        count=count,
        details={"request_id": event.request_id, "operation": event.raw_operation, **details},
    )


_V = TypeVar("_V")


def _trim(table: dict[str, _V], limit: int) -> None:
    """Keep a per-key table under ``limit`` keys by dropping the oldest half."""
    if len(table) >= limit:
        for key in list(table)[: max(1, len(table) // 2)]:
            del table[key]


class _Quiet:
    """Per-key quiet periods after an alert (bounded)."""

    __slots__ = ("_limit", "_until")

    def __init__(self, limit: int) -> None:
        self._until: dict[str, float] = {}
        self._limit = limit

    def ready(self, key: str, ts: float) -> bool:
        until = self._until.get(key)
        return until is None or ts >= until

    def hold(self, key: str, until: float) -> None:
        if key not in self._until:
            _trim(self._until, self._limit)
        self._until[key] = until

    def once(
        self,
        name: str,
        severity: Severity,
        event: AccessEvent,
        key: str,
        summary: str,
        *,
        count: int,
        limit: int,
        window: float,
    ) -> Alert | None:
        """A threshold alert for ``key``, unless ``key`` is in its quiet period (then
        ``None``); raising it starts a quiet period of ``window`` seconds."""
        if not self.ready(key, event.ts):
            return None
        self.hold(key, event.ts + window)
        return _alert(
            name, severity, event, key, summary, count=count, limit=limit, window_seconds=window
        )


class _Counts:
    """Event times per key within a sliding window (deques pruned on every add; bounded)."""

    __slots__ = ("_limit", "_times", "_window")

    def __init__(self, window: float, limit: int) -> None:
        self._times: dict[str, deque[float]] = {}
        self._window = window
        self._limit = limit

    def add(self, key: str, ts: float) -> int:
        """Record an event for ``key`` at ``ts``; the count within the window ending at ``ts``."""
        times = self._times.get(key)
        if times is None:
            _trim(self._times, self._limit)
            times = self._times[key] = deque()
        times.append(ts)
        horizon = ts - self._window
        while times[0] <= horizon:
            times.popleft()
        return len(times)


class _Distinct:
    """Distinct items per key within a sliding window (bounded)."""

    __slots__ = ("_limit", "_state", "_window")

    def __init__(self, window: float, limit: int) -> None:
        self._state: dict[str, tuple[deque[tuple[float, str]], dict[str, int]]] = {}
        self._window = window
        self._limit = limit

    def add(self, key: str, ts: float, item: str) -> int:
        """Record ``item`` for ``key`` at ``ts``; the distinct items within the window."""
        state = self._state.get(key)
        if state is None:
            _trim(self._state, self._limit)
            state = self._state[key] = (deque(), {})
        seen, counts = state
        seen.append((ts, item))
        counts[item] = counts.get(item, 0) + 1
        horizon = ts - self._window
        while seen[0][0] <= horizon:
            old = seen.popleft()[1]
            left = counts[old] - 1
            if left:
                counts[old] = left
            else:
                del counts[old]
        return len(counts)


class _Warmup:
    """When a principal's warm-up ends: ``events`` events and ``seconds`` since its first."""

    __slots__ = ("events", "seconds")

    def __init__(self, config: DetectorConfig) -> None:
        self.events = config.warmup_events
        self.seconds = config.warmup_days * _DAY

    def done(self, count: int, first: float, ts: float) -> bool:
        return count >= self.events and ts - first >= self.seconds


class _Profile:
    __slots__ = ("count", "first", "items", "last", "ready")

    def __init__(self, ts: float) -> None:
        self.first = ts
        self.count = 0
        self.items: set[str] = set()
        self.last = ""
        self.ready = False


class _Learned:
    """Items per principal learned during warm-up, then frozen (``novel`` answers)."""

    __slots__ = ("_limit", "_profiles", "_warmup")

    _ITEMS = 4096

    def __init__(self, config: DetectorConfig) -> None:
        self._profiles: dict[str, _Profile] = {}
        self._warmup = _Warmup(config)
        self._limit = config.max_keys

    def novel(self, principal: str, ts: float, item: str) -> bool:
        """True when ``item`` is new for ``principal`` after its warm-up (learns during it)."""
        profile = self._profiles.get(principal)
        if profile is None:
            _trim(self._profiles, self._limit)
            profile = self._profiles[principal] = _Profile(ts)
        if profile.ready:
            return item != profile.last and item not in profile.items
        profile.count += 1
        if len(profile.items) < self._ITEMS:
            profile.items.add(item)
        profile.last = item
        profile.ready = self._warmup.done(profile.count, profile.first, ts)
        return False


# --- counting detectors ------------------------------------------------------------------------


class RateDetector:
    """``rate``: too many secret reads by one principal (see module docstring)."""

    name = "rate"

    def __init__(self, config: DetectorConfig) -> None:
        self._config = config
        self._counts = _Counts(config.rate_window, config.max_keys)
        self._quiet = _Quiet(config.max_keys)
        self._add = self._counts.add
        self._limit = config.rate_limit
        self._principal_limits = dict(config.rate_principal_limits)
        self._category_limits = dict(config.rate_category_limits)

    def observe(self, event: AccessEvent) -> list[Alert]:
        if event.operation != "read" or event.outcome != "success":
            return []
        principal = event.principal
        if not principal:
            return []
        alerts = []
        limit = self._principal_limits.get(principal, self._limit)
        count = self._add(principal, event.ts)
        if count > limit:
            alert = self._over(event, principal, count, limit, "")
            if alert is not None:
                alerts.append(alert)
        category = event.category
        if category is not None and category in self._category_limits:
            key = f"{principal}|{category}"
            limit = self._category_limits[category]
            count = self._add(key, event.ts)
            if count > limit:
                alert = self._over(event, key, count, limit, category)
                if alert is not None:
                    alerts.append(alert)
        return alerts

    def _over(
        self, event: AccessEvent, key: str, count: int, limit: int, category: str
    ) -> Alert | None:
        """The alert for ``key``'s ``count`` over ``limit``, unless in its quiet period."""
        window = self._config.rate_window
        what = f"{category} secrets" if category else "secrets"
        return self._quiet.once(
            self.name,
            "high",
            event,
            key,
            f"{event.principal} read {what} {count} times in {window:g} s (limit {limit})",
            count=count,
            limit=limit,
            window=window,
        )


class BulkDetector:
    """``bulk``: many distinct secrets read by one principal in a short window."""

    name = "bulk"

    def __init__(self, config: DetectorConfig) -> None:
        self._config = config
        self._distinct = _Distinct(config.bulk_window, config.max_keys)
        self._quiet = _Quiet(config.max_keys)
        self._add = self._distinct.add
        self._threshold = config.bulk_distinct

    def observe(self, event: AccessEvent) -> list[Alert]:
        if event.operation != "read" or event.outcome != "success":
            return []
        principal = event.principal
        if not principal:
            return []
        count = self._add(principal, event.ts, event.path)
        if count < self._threshold:
            return []
        window = self._config.bulk_window
        alert = self._quiet.once(
            self.name,
            "high",
            event,
            principal,
            f"{principal} read {count} distinct secrets in {window:g} s",
            count=count,
            limit=self._threshold,
            window=window,
        )
        return [] if alert is None else [alert]


class EnumerationDetector:
    """``enumeration``: many list operations by one principal in a short window."""

    name = "enumeration"

    def __init__(self, config: DetectorConfig) -> None:
        self._config = config
        self._counts = _Counts(config.enumeration_window, config.max_keys)
        self._quiet = _Quiet(config.max_keys)

    def observe(self, event: AccessEvent) -> list[Alert]:
        if event.operation != "list" or event.outcome != "success" or not event.principal:
            return []
        principal = event.principal
        count = self._counts.add(principal, event.ts)
        config = self._config
        if count < config.enumeration_lists:
            return []
        window = config.enumeration_window
        alert = self._quiet.once(
            self.name,
            "medium",
            event,
            principal,
            f"{principal} listed secrets {count} times in {window:g} s",
            count=count,
            limit=config.enumeration_lists,
            window=window,
        )
        return [] if alert is None else [alert]


class FailedBurstDetector:
    """``failed_burst``: denied accesses piling up per principal and per source address."""

    name = "failed_burst"

    def __init__(self, config: DetectorConfig) -> None:
        self._config = config
        self._counts = _Counts(config.failed_window, config.max_keys)
        self._quiet = _Quiet(config.max_keys)

    def observe(self, event: AccessEvent) -> list[Alert]:
        if event.outcome != "denied":
            return []
        alerts = []
        if event.principal:
            alert = self._check(event, f"principal:{event.principal}", event.principal)
            if alert is not None:
                alerts.append(alert)
        if event.source:
            alert = self._check(event, f"source:{event.source}", event.source)
            if alert is not None:
                alerts.append(alert)
        return alerts

    def _check(self, event: AccessEvent, key: str, who: str) -> Alert | None:
        count = self._counts.add(key, event.ts)
        config = self._config
        if count < config.failed_denials:
            return None
        window = config.failed_window
        return self._quiet.once(
            self.name,
            "medium",
            event,
            key,
            f"{count} denied accesses by {who} in {window:g} s",
            count=count,
            limit=config.failed_denials,
            window=window,
        )


# --- baseline detectors ------------------------------------------------------------------------


class _Hours:
    """A principal's hours: learned during warm-up, then the usual-hours mask.

    ``last`` is the last absolute hour seen during warm-up, and after it the
    last hour found usual (so a run of accesses in one hour tests the mask once).
    """

    __slots__ = ("count", "first", "hours", "last", "ready", "usual")

    def __init__(self, ts: float) -> None:
        self.first = ts
        self.count = 0
        self.hours: set[int] = set()
        self.last = -1
        self.ready = False
        self.usual = 0  # bit b set: hour-of-week b is usual


def _usual_hours(hours: set[int], min_days: int) -> int:
    """The usual-hours bit mask of the absolute hours (POSIX hours) a principal was active."""
    days = [0] * 168
    for hour in hours:
        days[hour_of_week(hour * 3600.0)] += 1
    mask = 0
    for bucket in range(168):
        weekday, hour = divmod(bucket, 24)
        group = range(5) if weekday < 5 else range(5, 7)
        pooled = sum(days[d * 24 + (hour + shift) % 24] for d in group for shift in (-1, 0, 1))
        if pooled >= min_days:
            mask |= 1 << bucket
    return mask


class UnusualTimeDetector:
    """``unusual_time``: an access at an hour-of-week unusual for the principal."""

    name = "unusual_time"

    _HOURS_KEPT = 8192

    def __init__(self, config: DetectorConfig) -> None:
        self._config = config
        self._warmup = _Warmup(config)
        self._profiles: dict[str, _Hours] = {}
        self._quiet = _Quiet(config.max_keys)

    def observe(self, event: AccessEvent) -> list[Alert]:
        principal = event.principal
        if not principal:
            return []
        ts = event.ts
        profile = self._profiles.get(principal)
        if profile is None:
            _trim(self._profiles, self._config.max_keys)
            profile = self._profiles[principal] = _Hours(ts)
        hour = int(ts // 3600)
        if profile.ready:
            if hour == profile.last:
                return []  # this hour was found usual already
        else:
            profile.count += 1
            if hour != profile.last and len(profile.hours) < self._HOURS_KEPT:
                profile.hours.add(hour)
            profile.last = hour
            if self._warmup.done(profile.count, profile.first, ts):
                profile.ready = True
                profile.usual = _usual_hours(profile.hours, self._config.unusual_min_days)
                profile.hours = set()
                profile.last = -1
            return []
        bucket = hour_of_week(ts)
        if profile.usual >> bucket & 1:
            profile.last = hour
            return []
        key = f"{principal}|{bucket}"
        if not self._quiet.ready(key, ts):
            return []
        self._quiet.hold(key, ts + self._config.repeat_after)
        weekday, hour_of_day = divmod(bucket, 24)
        when = f"{_WEEKDAYS[weekday]} {hour_of_day:02d}:00-{hour_of_day:02d}:59 UTC"
        return [
            _alert(
                self.name,
                "low",
                event,
                key,
                f"{principal} active at an unusual time ({when})",
                hour_of_week=bucket,
            )
        ]


class NewSourceDetector:
    """``new_source``: a principal's access from a network (or address) it never used."""

    name = "new_source"

    def __init__(self, config: DetectorConfig) -> None:
        self._config = config
        self._learned = _Learned(config)
        self._novel = self._learned.novel
        self._quiet = _Quiet(config.max_keys)
        self._networks: dict[str, str] = {}

    def network(self, source: str) -> str:
        """The network (or address, by ``new_source_scope``) ``source`` belongs to."""
        found = self._networks.get(source)
        if found is None:
            if len(self._networks) >= 65536:
                self._networks.clear()
            found = self._networks[source] = self._network(source)
        return found

    def _network(self, source: str) -> str:
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            return source
        if self._config.new_source_scope == "address":
            return str(address)
        bits = self._config.ipv4_prefix if address.version == 4 else self._config.ipv6_prefix
        return str(ipaddress.ip_network((address, bits), strict=False))

    def observe(self, event: AccessEvent) -> list[Alert]:
        principal, source = event.principal, event.source
        if not principal or not source:
            return []
        network = self._networks.get(source) or self.network(source)
        if not self._novel(principal, event.ts, network):
            return []
        key = f"{principal}|{network}"
        if not self._quiet.ready(key, event.ts):
            return []
        self._quiet.hold(key, event.ts + self._config.repeat_after)
        return [
            _alert(
                self.name,
                "medium",
                event,
                key,
                f"{principal} connected from a new {self._config.new_source_scope} {network}",
                network=network,
            )
        ]


class FirstCategoryDetector:
    """``first_category``: a principal's first access to a secret category."""

    name = "first_category"

    def __init__(self, config: DetectorConfig) -> None:
        self._config = config
        self._learned = _Learned(config)
        self._novel = self._learned.novel
        self._quiet = _Quiet(config.max_keys)

    def observe(self, event: AccessEvent) -> list[Alert]:
        principal, category = event.principal, event.category
        if not principal or category is None:
            return []
        if not self._novel(principal, event.ts, category):
            return []
        key = f"{principal}|{category}"
        if not self._quiet.ready(key, event.ts):
            return []
        self._quiet.hold(key, event.ts + self._config.repeat_after)
        return [
            _alert(
                self.name,
                "low",
                event,
                key,
                f"{principal} accessed category {category} for the first time",
            )
        ]


# --- single-event detectors --------------------------------------------------------------------


class EmergencyDetector:
    """``emergency``: any access made with an emergency (break-glass) credential."""

    name = "emergency"

    def __init__(self, config: DetectorConfig) -> None:
        self._config = config
        self._quiet = _Quiet(config.max_keys)

    def observe(self, event: AccessEvent) -> list[Alert]:
        if not event.emergency:
            return []
        key = event.principal or event.source
        if not self._quiet.ready(key, event.ts):
            return []
        self._quiet.hold(key, event.ts + self._config.repeat_after)
        who = event.principal or "an unknown principal"
        return [
            _alert(
                self.name,
                "critical",
                event,
                key,
                f"emergency credential used by {who} ({event.raw_operation})",
            )
        ]


class HoneytokenDetector:
    """``honeytoken``: any read of a decoy secret (``is_honeytoken(path)``).

    ``is_honeytoken`` must be a pure function of the path: its answers are
    cached (a bounded table), since the same paths are read over and over.
    """

    name = "honeytoken"

    _PATHS_KEPT = 65536

    def __init__(self, config: DetectorConfig, is_honeytoken: Callable[[str], bool]) -> None:
        self._config = config
        self._is_honeytoken = is_honeytoken
        self._quiet = _Quiet(config.max_keys)
        self._decoys: dict[str, bool] = {}

    def observe(self, event: AccessEvent) -> list[Alert]:
        if event.operation != "read" or not event.path:
            return []
        decoy = self._decoys.get(event.path)
        if decoy is None:
            decoy = self._decoy(event.path)
        if not decoy:
            return []
        key = f"{event.principal}|{event.path}"
        if not self._quiet.ready(key, event.ts):
            return []
        self._quiet.hold(key, event.ts + self._config.repeat_after)
        who = event.principal or "an unknown principal"
        return [
            _alert(
                self.name,
                "critical",
                event,
                key,
                f"honeytoken {event.path} read by {who} ({event.outcome})",
            )
        ]

    def _decoy(self, path: str) -> bool:
        """``is_honeytoken(path)``, remembered."""
        if len(self._decoys) >= self._PATHS_KEPT:
            self._decoys.clear()
        found = self._decoys[path] = bool(self._is_honeytoken(path))
        return found


# --- the set ----------------------------------------------------------------------------------


def _never(path: str) -> bool:
    return False


class DetectorSet:
    """Several detectors as one (itself a ``Detector``); ``counts`` alerts per detector."""

    name = "all"

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self.detectors: tuple[Detector, ...] = tuple(detectors)
        self.counts: dict[str, int] = {d.name: 0 for d in self.detectors}
        self._observers = tuple((d.name, d.observe) for d in self.detectors)

    @classmethod
    def default(
        cls,
        config: DetectorConfig | None = None,
        is_honeytoken: Callable[[str], bool] | None = None,
    ) -> DetectorSet:
        """Every detector of ``DETECTOR_NAMES`` with ``config`` (default thresholds if None)."""
        config = config or DetectorConfig()
        return cls(
            [
                RateDetector(config),
                BulkDetector(config),
                EnumerationDetector(config),
                FailedBurstDetector(config),
                UnusualTimeDetector(config),
                NewSourceDetector(config),
                FirstCategoryDetector(config),
                EmergencyDetector(config),
                HoneytokenDetector(config, is_honeytoken or _never),
            ]
        )

    def observe(self, event: AccessEvent) -> list[Alert]:
        """Every detector's alerts for ``event``, in detector order."""
        alerts: list[Alert] = []
        for name, observe in self._observers:
            found = observe(event)
            if found:
                alerts.extend(found)
                self.counts[name] += len(found)
        return alerts
