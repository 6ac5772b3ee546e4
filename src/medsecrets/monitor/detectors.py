"""Anomaly detectors: each watches the ``AccessEvent`` stream for one kind of misuse.

A ``Detector`` has a ``name`` and ``observe(event) -> list[Alert]``; it keeps
its own state, bounded in memory (sliding windows are pruned on every event
and keep at most about twice the key's threshold of entries, so a
principal reading thousands of times a second costs no more than one reading
at the threshold; per-key tables hold at most ``DetectorConfig.max_keys`` keys:
at the bound half are dropped, those with the fewest events in their windows
first (ties: the oldest), so a flood of new keys (tokens, addresses) drops idle
keys rather than the busy window about to catch its maker; quiet periods that
ended go first, baselines still warming up go before finished ones). An event's
cost does not grow with the tables (no table is scanned per event; a trim's
sort is amortised over the keys it makes room for; a new source address is
parsed once for every detector, ``network_of``). Windows are measured on
*event* time, so the same detectors run online (``MonitorEngine``) and offline
(``analyze``); events are expected in (roughly) time order: a straggler counts
in the window it belongs to, and a clock set back (an online stream's time is
the server's clock) neither silences a key until it catches up (a quiet period
that began more than one period after an event does not hold it) nor makes a
full window drop each new event. A detector is not thread-safe: one thread
observes.

The detectors below are ``BatchDetector``s: their rule is written once, as
``observe_many(events) -> [(index, alert), ...]`` over a sequence of events
(one loop, the state held in locals: several times cheaper per event than a
call per event), and ``observe(event)`` is ``observe_many`` of that one
event. Observing a sequence in one call or event by event, in any slicing,
gives the same alerts: the state carries over between calls.
``DetectorSet.observe_many`` runs each detector over the whole sequence in
turn and merges the alerts into the order of event-by-event observation
(event index, then detector order), which is exact because the detectors of
a set share no state.

The detectors and their rules (every threshold is a ``DetectorConfig`` field):

- ``rate``: more than ``rate_limit`` (50) successful secret reads by one
  principal within ``rate_window`` (300 s); ``rate_principal_limits``
  overrides the limit for a principal, ``rate_category_limits`` adds a limit
  on one principal's reads of one category.
- ``bulk``: reads of ``bulk_distinct`` (20) or more *distinct* secret paths by
  one principal within ``bulk_window`` (60 s).
- ``enumeration``: ``enumeration_lists`` (20) or more list operations by one
  principal within ``enumeration_window`` (60 s), a metadata read of a secret
  (``describe``) counting as one list when no other metadata read of that
  path by the principal is in the window: reading the metadata of many
  secrets one by one maps the store as a list does (repeated reads of one
  secret's metadata, as the SDK cache makes, count once). Lists count when
  they succeed, metadata reads also when they fail for a missing secret
  (``error``: probing names); refused ones are ``failed_burst``'s.
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

State survives a restart: ``DetectorSet.state()`` is every detector's
windows, quiet periods and baselines as JSON values (at most ``STATE_KEYS`` keys
a table: those a trim keeps, the busiest windows, the latest quiet periods, finished
baselines first; ties: the newest), and ``restore(state)`` takes it back (``monitor.state``
keeps it in an encrypted file). Each detector's state carries a fingerprint
of the thresholds it depends on (``_USES``): a detector whose thresholds
changed since, or that the state lacks, starts afresh (``restore`` names
them) while the others are restored; when only ``repeat_after`` changed, the
quiet periods of the detectors that use it start afresh (``_QUIET_USES``), their
baselines are kept. A malformed state changes nothing
(``ValueError``): every part is read before any is installed.

Every alert carries the triggering event's ``request_id`` in
``details["request_id"]`` and a dedup ``key`` (principal, principal and
category/network/hour, source, path). A detector raises an alert for a key at
most once per quiet period: the detector's window for counting detectors, and
``repeat_after`` (1 h) for the others; channels dedupe further. Alerts carry
names, paths, addresses and counts, never a secret value or a token.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import ipaddress
import json
import math
import operator
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Final, Literal, Protocol, TypeVar, runtime_checkable

from medsecrets.errors import ConfigError
from medsecrets.monitor.alert import Alert, Severity
from medsecrets.monitor.events import AccessEvent, bounded

__all__ = [
    "DETECTOR_NAMES",
    "BatchDetector",
    "BulkDetector",
    "Detector",
    "DetectorConfig",
    "DetectorSet",
    "EmergencyDetector",
    "EnumerationDetector",
    "FailedBurstDetector",
    "FirstCategoryDetector",
    "HoneytokenDetector",
    "IndexedAlerts",
    "NewSourceDetector",
    "RateDetector",
    "StateMismatch",
    "UnusualTimeDetector",
    "config_fingerprint",
    "hour_of_week",
    "network_of",
    "origin_of",
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


_V = TypeVar("_V")

IndexedAlerts = list[tuple[int, Alert]]
"""Alerts with the index (in the observed sequence) of the event that raised each."""


@runtime_checkable
class BatchDetector(Detector, Protocol):
    """A detector that also observes a sequence of events in one call (see module docstring)."""

    def observe_many(self, events: Sequence[AccessEvent]) -> IndexedAlerts:
        """``observe`` each event in order; ``(index, alert)`` for every alert, in order."""
        ...


Install = Callable[[], None]
"""Puts a part's state, read beforehand, in place (see ``_Part.load``)."""


STATE_KEYS: Final = 20_000
"""Keys kept per table in a saved state (those a trim keeps, ``_kept``): a state's
size, and the time to save and restore it, stay bounded when an attack fills a table (a
key per source address)."""


class _Part(Protocol):
    """A piece of a detector's state: a window, quiet periods, a baseline."""

    def state(self) -> object:
        """The part as JSON values (at most its newest ``STATE_KEYS`` keys)."""
        ...

    def load(self, data: object) -> Install:
        """Read ``state()``'s output (``ValueError``, ``TypeError`` or ``KeyError`` when
        malformed); the returned call installs it, replacing what the part holds."""
        ...


class StateMismatch(ValueError):
    """A detector state saved under other thresholds (``DetectorConfig``)."""


def config_fingerprint(config: DetectorConfig, uses: Sequence[str] | None = None) -> str:
    """A digest of the thresholds ``uses`` (every one by default) of ``config``: equal
    thresholds, equal digests."""
    values = config.values()
    chosen = values if uses is None else {name: values[name] for name in uses}
    text = json.dumps(chosen, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _lightest(table: Mapping[str, _V], weight: Callable[[_V], float], count: int) -> list[str]:
    """The ``count`` keys of ``table`` whose values weigh least, ties: the oldest first
    (tables keep keys in insertion order; the sort is stable). O(n log n)."""
    return sorted(table, key=lambda key: weight(table[key]))[:count]


def _kept(
    table: Mapping[str, _V], weighing: Callable[[], Callable[[_V], float]]
) -> Iterator[tuple[str, _V]]:
    """The at most ``STATE_KEYS`` items of ``table`` a state keeps, in table order: those
    a trim keeps (``_trim``: the heaviest by ``weighing()``, called only when the table
    is over ``STATE_KEYS``; ties: the newest), so a flood of new keys before a save
    cannot leave out of the state the busy window a trim would have kept."""
    excess = len(table) - STATE_KEYS
    if excess <= 0:
        return iter(table.items())
    dropped = set(_lightest(table, weighing(), excess))
    return ((key, value) for key, value in table.items() if key not in dropped)


class _Batched:
    """Base of the detectors: ``observe`` is ``observe_many`` of one event; ``state`` and
    ``load`` over the parts a detector names in ``_parts`` (see module docstring)."""

    __slots__ = ()

    _config: DetectorConfig
    name: str
    _USES: tuple[str, ...] = ()
    """The thresholds this detector's state depends on (see module docstring)."""
    _QUIET_USES: tuple[str, ...] = ()
    """Those its quiet periods also depend on (``repeat_after``): when only these changed,
    the quiet periods start afresh and the rest of the state is kept."""

    def observe(self, event: AccessEvent) -> list[Alert]:
        """Update the state with ``event``; the alerts it raises (usually none)."""
        return [alert for _, alert in self.observe_many((event,))]

    def observe_many(self, events: Sequence[AccessEvent]) -> IndexedAlerts:
        """``observe`` each event in order; ``(index, alert)`` for every alert, in order."""
        raise NotImplementedError

    def _parts(self) -> dict[str, _Part]:
        """The parts of this detector's state, by name."""
        raise NotImplementedError

    def state(self) -> dict[str, object]:
        """This detector's state as JSON values, with its thresholds' fingerprint."""
        parts = {name: part.state() for name, part in self._parts().items()}
        return {
            "config": config_fingerprint(self._config, self._USES),
            "quiet_config": config_fingerprint(self._config, self._QUIET_USES),
            "parts": parts,
        }

    def load(self, state: object) -> Install:
        """Read ``state()``'s output; the returned call installs it. ``StateMismatch``
        when it was saved under other thresholds (of those in ``_USES``), ``ValueError``,
        ``TypeError`` or ``KeyError`` when malformed (nothing changes either way)."""
        document = _mapping(state)
        if document["config"] != config_fingerprint(self._config, self._USES):
            raise StateMismatch(f"detector {self.name}: saved under other thresholds")
        parts = _mapping(document["parts"])
        if any(name not in parts for name in self._parts()):  # saved by an older rule
            raise StateMismatch(f"detector {self.name}: saved without some of its parts")
        quiet = document["quiet_config"] == config_fingerprint(self._config, self._QUIET_USES)
        return _all(
            [
                part.load(parts[name])
                for name, part in self._parts().items()
                if quiet or name != "quiet"
            ]
        )


def _mapping(data: object) -> Mapping[str, object]:
    """``data`` if it is a JSON object (``TypeError`` otherwise)."""
    if not isinstance(data, dict):
        raise TypeError("a JSON object was expected")
    return data


def _listed(data: object) -> list[object]:
    """``data`` if it is a JSON array (``TypeError`` otherwise)."""
    if not isinstance(data, list):
        raise TypeError("a JSON array was expected")
    return data


def _number(data: object) -> float:
    """``data`` as a float if it is a JSON number (``TypeError`` otherwise)."""
    if isinstance(data, bool) or not isinstance(data, int | float):
        raise TypeError("a JSON number was expected")
    return float(data)


def _numbers(data: object) -> list[float]:
    """``data`` as floats if it is a JSON array of numbers (``TypeError`` otherwise); an
    array of floats, as saved, is checked without a call per item."""
    values = _listed(data)
    if all(type(value) is float for value in values):
        return values  # type: ignore[return-value]
    return [_number(value) for value in values]


def _whole(data: object) -> int:
    """``data`` if it is a JSON integer (``TypeError`` otherwise)."""
    if isinstance(data, bool) or not isinstance(data, int):
        raise TypeError("a JSON integer was expected")
    return data


def _all(installs: list[Install]) -> Install:
    """One call that makes every call of ``installs``, in order."""

    def install() -> None:
        for each in installs:
            each()

    return install


def _replacing(table: dict[str, _V], found: dict[str, _V]) -> Install:
    """The call that replaces ``table``'s content by ``found`` (in place: bound methods
    and locals holding ``table`` stay valid)."""

    def install() -> None:
        table.clear()
        table.update(found)

    return install


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
        for name in _SECONDS:  # 300 and 300.0 are one threshold (and one fingerprint)
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))
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

    def values(self) -> dict[str, object]:
        """Every threshold as builtin values (the mappings as dicts):
        ``DetectorConfig(**config.values()) == config``."""
        return {
            f.name: dict(value) if isinstance(value := getattr(self, f.name), Mapping) else value
            for f in fields(self)
        }


_SECONDS: Final = (
    "rate_window",
    "bulk_window",
    "enumeration_window",
    "failed_window",
    "warmup_days",
    "repeat_after",
)
"""The ``DetectorConfig`` fields that are numbers of seconds or days (floats)."""


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


def _trim(table: dict[str, _V], limit: int, weight: Callable[[_V], float]) -> None:
    """Keep a per-key table under ``limit`` keys by dropping half of it: the keys whose
    values weigh least (ties: the oldest first). Sorting costs O(n log n) once per n/2
    new keys, so a new key costs O(log n) amortised.

    The weight is what the table holds against its key (events in the window, the end
    of a quiet period): a flood of new keys (principals, addresses) drops the idle ones
    and keeps the busy ones, so an attacker cannot push out the window that is about to
    catch them by making keys of their own (they would need more than ``limit / 2``
    keys each busier than theirs)."""
    if len(table) >= limit:
        for key in _lightest(table, weight, max(1, len(table) // 2)):
            del table[key]


class _Readied(Protocol):
    ready: bool


_P = TypeVar("_P", bound=_Readied)


def _trim_baselines(profiles: dict[str, _P], limit: int) -> None:
    """``_trim`` for baselines: profiles still warming up go first (oldest first), finished
    ones only when they alone fill the table, so a flood of new principals (minted
    tokens) cannot push established baselines out."""
    if len(profiles) < limit:
        return
    drop = max(1, len(profiles) // 2)
    warming = [key for key, profile in profiles.items() if not profile.ready][:drop]
    for key in warming:
        del profiles[key]
    if len(warming) < drop:
        for key in list(profiles)[: drop - len(warming)]:
            del profiles[key]


def _kept_baselines(profiles: Mapping[str, _P]) -> Iterator[tuple[str, _P]]:
    """The ``STATE_KEYS`` profiles a state keeps: finished ones first (newest of them),
    then the newest still warming up."""
    ready = [(key, p) for key, p in profiles.items() if p.ready]
    warming = [(key, p) for key, p in profiles.items() if not p.ready]
    kept = ready[max(0, len(ready) - STATE_KEYS) :]
    room = STATE_KEYS - len(kept)
    return iter(kept + (warming[len(warming) - room :] if room > 0 else []))


class _Quiet:
    """Per-key quiet periods of ``period`` seconds after an alert (bounded: at the bound,
    the periods that ended, then those ending soonest, are dropped; a dropped period
    can only let an alert be raised again).

    An event more than one period *before* the event that started a quiet period
    (a clock set back, a log out of order) is outside it: the quiet period is dropped
    rather than silencing the key until the clock catches up again."""

    __slots__ = ("_limit", "_period", "_until")

    def __init__(self, limit: int, period: float) -> None:
        self._until: dict[str, float] = {}
        self._limit = limit
        self._period = period

    def state(self) -> dict[str, float]:
        """Each key's end of quiet (at most ``STATE_KEYS``: those ending last)."""
        return dict(_kept(self._until, lambda: float))

    def load(self, data: object) -> Install:
        """See ``_Part.load``."""
        found = {str(key): _number(until) for key, until in _mapping(data).items()}
        return _replacing(self._until, found)

    def ready(self, key: str, ts: float) -> bool:
        """Whether ``key`` may alert at ``ts`` (callers check it before they build an
        alert's text: a principal over a limit stays over it for every event)."""
        until = self._until.get(key)
        if until is None or ts >= until:
            return True
        if until - ts > 2 * self._period:  # started over a period after ts: clock set back
            del self._until[key]
            return True
        return False

    def hold(self, key: str, until: float) -> None:
        if key not in self._until:
            _trim(self._until, self._limit, float)
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
    """Event times per key within a sliding window (bounded in keys and in times per key).

    ``add(key, ts, cap)`` keeps at most ``cap`` times for ``key`` (the newest;
    ``cap`` is fixed by the key's first add) and returns the count within the
    window, or ``cap`` when there are at least that many. A detector asks "more
    than my threshold?", so a cap above the key's threshold gives the same
    answers while a busy principal (thousands of reads a second, for the whole
    window) costs ``cap`` floats, not one per read; a capped count is reported
    as "at least" (``_count_text``).
    """

    __slots__ = ("_limit", "_times", "_window")

    def __init__(self, window: float, limit: int) -> None:
        self._times: dict[str, deque[float]] = {}
        self._window = window
        self._limit = limit

    def state(self) -> dict[str, list[object]]:
        """Each key's cap and times, oldest first (at most ``STATE_KEYS`` keys: those with
        the most times in the window ending at the newest time held, as ``_trim`` keeps)."""
        kept = _kept(self._times, self._weighing)
        return {key: [times.maxlen, list(times)] for key, times in kept}

    def _weighing(self) -> Callable[[deque[float]], float]:
        """A key's weight for ``_trim`` at the newest time held: its times in the window."""
        newest = max((times[-1] for times in self._times.values() if times), default=0.0)
        horizon = newest - self._window
        return lambda times: _live(times, horizon)

    def load(self, data: object) -> Install:
        """See ``_Part.load``."""
        found: dict[str, deque[float]] = {}
        for key, entry in _mapping(data).items():
            cap, times = _listed(entry)
            found[str(key)] = deque(_numbers(times), maxlen=_whole(cap))
        return _replacing(self._times, found)

    def add(self, key: str, ts: float, cap: int) -> int:
        """Record an event for ``key`` at ``ts``; the count within the window ending at
        ``ts`` (at most ``cap``)."""
        times = self._times.get(key)
        if times is None:
            horizon = ts - self._window
            _trim(self._times, self._limit, lambda kept: _live(kept, horizon))
            times = self._times[key] = deque(maxlen=cap)
        elif times and ts < times[-1]:
            return self._late(times, ts)
        times.append(ts)
        horizon = ts - self._window
        while times and times[0] <= horizon:
            times.popleft()
        return len(times)

    def _late(self, times: deque[float], ts: float) -> int:
        """``add`` for a straggler, older than the newest time kept: it takes its place in
        time order, and the count is of the window ending at ``ts`` (the later times kept
        do not count). When the key already holds ``cap`` times, the oldest goes if it is
        out of that window, the newest otherwise: after a clock set back every event is
        a straggler, and dropping the oldest would drop each one as it came (the key
        blind until the clock caught up)."""
        horizon = ts - self._window
        ordered = sorted([*times, ts])
        if len(ordered) > (times.maxlen or len(ordered)):
            del ordered[0 if ordered[0] <= horizon else -1]
        times.clear()
        times.extend(ordered)
        return bisect.bisect_right(times, ts) - bisect.bisect_right(times, horizon)


def _live(times: deque[float], horizon: float) -> int:
    """How many of ``times`` (in order) are after ``horizon``."""
    return len(times) - bisect.bisect_right(times, horizon)


class _Distinct:
    """Distinct items per key within a sliding window (bounded in keys and items per key).

    Each item is kept once, with the latest time it was seen (oldest first), and
    at most ``cap`` items per key (the most recent): ``add`` returns the
    number of distinct items seen within the window, at most ``cap``.
    """

    __slots__ = ("_cap", "_latest", "_limit", "_state", "_window")

    def __init__(self, window: float, limit: int, cap: int) -> None:
        self._state: dict[str, dict[str, float]] = {}
        self._window = window
        self._limit = limit
        self._cap = cap
        self._latest = -math.inf
        """No item held is later than this: an event at or after it is in order (one
        comparison), only an earlier one needs its key's newest item."""

    def state(self) -> dict[str, list[list[object]]]:
        """Each key's items with their latest times, oldest first (at most ``STATE_KEYS``
        keys: those with the most items in the window ending at the newest time held, as
        ``_trim`` keeps)."""
        kept = _kept(self._state, self._weighing)
        return {key: [[item, ts] for item, ts in seen.items()] for key, seen in kept}

    def _weighing(self) -> Callable[[dict[str, float]], float]:
        """A key's weight for ``_trim`` at the newest time held: its items in the window."""
        horizon = _latest_item(self._state) - self._window
        return lambda seen: _fresh_items(seen, horizon)

    def load(self, data: object) -> Install:
        """See ``_Part.load``."""
        found: dict[str, dict[str, float]] = {}
        for key, pairs in _mapping(data).items():
            seen = found[str(key)] = {}
            for pair in _listed(pairs):
                item, ts = _listed(pair)
                seen[str(item)] = _number(ts)
        install = _replacing(self._state, found)
        latest = _latest_item(found)

        def install_all() -> None:
            install()
            self._latest = latest

        return install_all

    def fresh(self, key: str, ts: float, item: str) -> bool:
        """``add``; whether ``item`` was not seen for ``key`` within the window ending at
        ``ts`` before (an item dropped by the cap is new again)."""
        seen = self._state.get(key)
        last = None if seen is None else seen.get(item)
        self.add(key, ts, item)
        return last is None or last <= ts - self._window

    def add(self, key: str, ts: float, item: str) -> int:
        """Record ``item`` for ``key`` at ``ts``; the distinct items within the window."""
        seen = self._state.get(key)
        if seen is None:
            horizon = ts - self._window
            _trim(self._state, self._limit, lambda items: _fresh_items(items, horizon))
            seen = self._state[key] = {}
        last = seen.get(item)
        if ts >= self._latest:
            self._latest = ts
        elif ts < next(reversed(seen.values()), ts):  # older than this key's newest item
            if last is None or ts > last:
                seen[item] = ts
            return self._late(seen, ts)
        if last is None or ts >= last:  # a late event does not make an item older
            if last is not None:
                del seen[item]  # to the end: dicts keep insertion order
            seen[item] = ts
            if len(seen) > self._cap:
                del seen[next(iter(seen))]
        horizon = ts - self._window
        while seen:
            oldest = next(iter(seen))
            if seen[oldest] > horizon:
                break
            del seen[oldest]
        return len(seen)

    def _late(self, seen: dict[str, float], ts: float) -> int:
        """``add`` for a straggler, older than the newest item kept (a log out of order, a
        clock set back), its item recorded: the items are put back in time order, and the
        count is of the window ending at ``ts`` (later items do not count: after a clock
        set back, an item seen before it would otherwise stay first, stop the pruning of
        every item behind it, and make a secret read every 90 s "20 distinct secrets in
        60 s"). Over ``cap``, the oldest goes if it is out of that window, the newest
        otherwise (as ``_Counts._late``)."""
        horizon = ts - self._window
        ordered = sorted(seen.items(), key=operator.itemgetter(1))
        if len(ordered) > self._cap:
            del ordered[0 if ordered[0][1] <= horizon else -1]
        seen.clear()
        seen.update(ordered)
        return sum(1 for when in seen.values() if horizon < when <= ts)


def _latest_item(state: Mapping[str, dict[str, float]]) -> float:
    """The time of the latest item held in ``state`` (``-inf`` for none)."""
    return max((max(seen.values()) for seen in state.values() if seen), default=-math.inf)


def _fresh_items(seen: dict[str, float], horizon: float) -> int:
    """How many items of ``seen`` were seen after ``horizon``."""
    return sum(1 for ts in seen.values() if ts > horizon)


def _count_text(count: int, cap: int) -> str:
    """``count`` as a summary states it: "at least" once it reached its window's cap."""
    return f"at least {count}" if count >= cap else str(count)


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

    def state(self) -> dict[str, list[object]]:
        """Each principal's first time, count, items, last item and warm-up end."""
        return {
            principal: [p.first, p.count, sorted(p.items), p.last, p.ready]
            for principal, p in _kept_baselines(self._profiles)
        }

    def load(self, data: object) -> Install:
        """See ``_Part.load``."""
        found: dict[str, _Profile] = {}
        for principal, entry in _mapping(data).items():
            first, count, items, last, ready = _listed(entry)
            profile = found[str(principal)] = _Profile(_number(first))
            profile.count = _whole(count)
            profile.items = {str(item) for item in _listed(items)}
            profile.last = str(last)
            profile.ready = ready is True
        return _replacing(self._profiles, found)

    def novel(self, principal: str, ts: float, item: str) -> bool:
        """True when ``item`` is new for ``principal`` after its warm-up (learns during it)."""
        profile = self._profiles.get(principal)
        if profile is None:
            _trim_baselines(self._profiles, self._limit)
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


class RateDetector(_Batched):
    """``rate``: too many secret reads by one principal (see module docstring)."""

    name = "rate"
    _USES = ("rate_limit", "rate_window", "rate_principal_limits", "rate_category_limits")

    def __init__(self, config: DetectorConfig) -> None:
        self._config = config
        self._counts = _Counts(config.rate_window, config.max_keys)
        self._quiet = _Quiet(config.max_keys, config.rate_window)
        self._add = self._counts.add
        self._limit = config.rate_limit
        self._principal_limits = dict(config.rate_principal_limits)
        self._category_limits = dict(config.rate_category_limits)

    def _parts(self) -> dict[str, _Part]:
        return {"counts": self._counts, "quiet": self._quiet}

    def observe_many(self, events: Sequence[AccessEvent]) -> IndexedAlerts:
        found: IndexedAlerts = []
        add = self._add
        default = self._limit
        limits = self._principal_limits
        categories = self._category_limits
        for index, event in enumerate(events):
            if event.operation != "read" or event.outcome != "success":
                continue
            principal = event.principal
            if not principal:
                continue
            limit = limits.get(principal, default) if limits else default
            count = add(principal, event.ts, 2 * limit + 2)
            if count > limit:
                alert = self._over(event, principal, count, limit, "")
                if alert is not None:
                    found.append((index, alert))
            if categories:
                category = event.category
                if category is not None and category in categories:
                    key = f"{principal}|{category}"
                    limit = categories[category]
                    count = add(key, event.ts, 2 * limit + 2)
                    if count > limit:
                        alert = self._over(event, key, count, limit, category)
                        if alert is not None:
                            found.append((index, alert))
        return found

    def _over(
        self, event: AccessEvent, key: str, count: int, limit: int, category: str
    ) -> Alert | None:
        """The alert for ``key``'s ``count`` over ``limit``, unless in its quiet period."""
        if not self._quiet.ready(key, event.ts):  # (every read over the limit gets here)
            return None
        window = self._config.rate_window
        what = f"{category} secrets" if category else "secrets"
        return self._quiet.once(
            self.name,
            "high",
            event,
            key,
            f"{event.principal} read {what} {_count_text(count, 2 * limit + 2)} times"
            f" in {window:g} s (limit {limit})",
            count=count,
            limit=limit,
            window=window,
        )


class BulkDetector(_Batched):
    """``bulk``: many distinct secrets read by one principal in a short window."""

    name = "bulk"
    _USES = ("bulk_distinct", "bulk_window")

    def __init__(self, config: DetectorConfig) -> None:
        self._config = config
        self._distinct = _Distinct(config.bulk_window, config.max_keys, 2 * config.bulk_distinct)
        self._quiet = _Quiet(config.max_keys, config.bulk_window)
        self._add = self._distinct.add
        self._threshold = config.bulk_distinct

    def _parts(self) -> dict[str, _Part]:
        return {"distinct": self._distinct, "quiet": self._quiet}

    def observe_many(self, events: Sequence[AccessEvent]) -> IndexedAlerts:
        found: IndexedAlerts = []
        add = self._add
        threshold = self._threshold
        for index, event in enumerate(events):
            if event.operation != "read" or event.outcome != "success":
                continue
            principal = event.principal
            if not principal:
                continue
            count = add(principal, event.ts, event.path)
            if count < threshold or not self._quiet.ready(principal, event.ts):
                continue
            window = self._config.bulk_window
            alert = self._quiet.once(
                self.name,
                "high",
                event,
                principal,
                f"{principal} read {_count_text(count, 2 * threshold)} distinct secrets"
                f" in {window:g} s",
                count=count,
                limit=threshold,
                window=window,
            )
            if alert is not None:
                found.append((index, alert))
        return found


_PROBED: Final = frozenset({"success", "error"})
"""The outcomes of a metadata read that count for ``enumeration`` (``error``: not found)."""


class EnumerationDetector(_Batched):
    """``enumeration``: many list operations (or metadata reads of distinct secrets) by one
    principal in a short window (see module docstring)."""

    name = "enumeration"
    _USES = ("enumeration_lists", "enumeration_window")

    def __init__(self, config: DetectorConfig) -> None:
        self._config = config
        self._counts = _Counts(config.enumeration_window, config.max_keys)
        self._described = _Distinct(
            config.enumeration_window, config.max_keys, 2 * config.enumeration_lists
        )
        self._quiet = _Quiet(config.max_keys, config.enumeration_window)

    def _parts(self) -> dict[str, _Part]:
        return {"counts": self._counts, "described": self._described, "quiet": self._quiet}

    def observe_many(self, events: Sequence[AccessEvent]) -> IndexedAlerts:
        found: IndexedAlerts = []
        add = self._counts.add
        fresh = self._described.fresh
        config = self._config
        threshold = config.enumeration_lists
        cap = 2 * threshold
        for index, event in enumerate(events):
            operation = event.operation
            if operation == "list":
                if event.outcome != "success" or not event.principal:
                    continue
            elif operation == "describe":
                if (
                    event.outcome not in _PROBED
                    or not event.principal
                    or not fresh(event.principal, event.ts, event.path)
                ):
                    continue
            else:
                continue
            principal = event.principal
            count = add(principal, event.ts, cap)
            if count < threshold or not self._quiet.ready(principal, event.ts):
                continue
            window = config.enumeration_window
            alert = self._quiet.once(
                self.name,
                "medium",
                event,
                principal,
                f"{principal} listed secrets or read their metadata {_count_text(count, cap)}"
                f" times in {window:g} s",
                count=count,
                limit=threshold,
                window=window,
            )
            if alert is not None:
                found.append((index, alert))
        return found


class FailedBurstDetector(_Batched):
    """``failed_burst``: denied accesses piling up per principal and per source (an IPv4
    address, an IPv6 ``/64``)."""

    name = "failed_burst"
    _USES = ("failed_denials", "failed_window")

    def __init__(self, config: DetectorConfig) -> None:
        self._config = config
        self._counts = _Counts(config.failed_window, config.max_keys)
        self._quiet = _Quiet(config.max_keys, config.failed_window)
        self._origins: dict[str, str] = {}
        """A bounded cache of ``_origin`` (the hot path: one lookup per denied event)."""

    def _parts(self) -> dict[str, _Part]:
        return {"counts": self._counts, "quiet": self._quiet}

    def observe_many(self, events: Sequence[AccessEvent]) -> IndexedAlerts:
        found: IndexedAlerts = []
        check = self._check
        for index, event in enumerate(events):
            if event.outcome != "denied":
                continue
            if event.principal:
                alert = check(event, f"principal:{event.principal}", event.principal)
                if alert is not None:
                    found.append((index, alert))
            if event.source:
                origin = self._origins.get(event.source) or self._origin(event.source)
                alert = check(event, f"source:{origin}", origin)
                if alert is not None:
                    found.append((index, alert))
        return found

    def _origin(self, source: str) -> str:
        """Where failures from ``source`` are counted: an IPv4 address (also written as
        ``::ffff:a.b.c.d``), an IPv6 ``/64`` (one host picks any address in it), or the
        source as it is; remembered in a bounded table."""
        origin = origin_of(source)
        if len(self._origins) >= 65536:
            self._origins.clear()
        self._origins[source] = origin
        return origin

    def _check(self, event: AccessEvent, key: str, who: str) -> Alert | None:
        config = self._config
        cap = 2 * config.failed_denials
        count = self._counts.add(key, event.ts, cap)
        if count < config.failed_denials or not self._quiet.ready(key, event.ts):
            return None
        window = config.failed_window
        return self._quiet.once(
            self.name,
            "medium",
            event,
            key,
            f"{_count_text(count, cap)} denied accesses by {who} in {window:g} s",
            count=count,
            limit=config.failed_denials,
            window=window,
        )


# --- addresses -------------------------------------------------------------------------------

_ADDRESS_CHARS: Final = 64
"""Sources longer than this are not parsed as IP addresses (the longest address text,
an IPv4-mapped IPv6 address with an interface's zone, is shorter): they are compared
as text, and never held by the address cache."""


@functools.lru_cache(maxsize=65536)
def _address(source: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``source`` names (an IPv4-mapped IPv6 address, an IPv4 client of a
    dual-stack listener, as IPv4), or ``None``. Parsing costs tens of microseconds and
    every detector that groups sources needs it: a pure, bounded cache shared by them
    all, so a botnet's new address is parsed once, not once per detector."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def network_of(source: str, ipv4_bits: int | None, ipv6_bits: int | None) -> str:
    """Where ``source`` is counted: the text ``ipaddress.ip_network`` gives for its IPv4
    network of ``ipv4_bits`` or its IPv6 network of ``ipv6_bits`` (``None``: the address
    itself, as ``str(ip_address)``); a source that is not an address, as it is."""
    address = _address(source) if len(source) <= _ADDRESS_CHARS else None
    if address is None:
        return source
    bits = ipv4_bits if address.version == 4 else ipv6_bits
    if bits is None:
        return str(address)
    value = int(address)
    host = address.max_prefixlen - bits
    if value >> host << host != value:  # as ip_network: an aligned address keeps its zone
        address = type(address)(value >> host << host)
    return f"{address}/{bits}"  # ip_network's text, without building the network


def origin_of(source: str) -> str:
    """Where one outsider's requests come from: an IPv4 address (also written as
    ``::ffff:a.b.c.d``), an IPv6 ``/64`` (one host may pick any address in it, a new one
    per request), or the source as it is (``network_of``)."""
    return network_of(source, None, 64)


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


class _HoursTable:
    """``UnusualTimeDetector``'s profiles as a state part (the usual-hours mask as hex)."""

    __slots__ = ("_profiles",)

    def __init__(self, profiles: dict[str, _Hours]) -> None:
        self._profiles = profiles

    def state(self) -> dict[str, list[object]]:
        """Each principal's first time, count, hours, last hour, warm-up end and mask."""
        return {
            principal: [h.first, h.count, sorted(h.hours), h.last, h.ready, f"{h.usual:x}"]
            for principal, h in _kept_baselines(self._profiles)
        }

    def load(self, data: object) -> Install:
        """See ``_Part.load``."""
        found: dict[str, _Hours] = {}
        for principal, entry in _mapping(data).items():
            first, count, hours, last, ready, usual = _listed(entry)
            profile = found[str(principal)] = _Hours(_number(first))
            profile.count = _whole(count)
            profile.hours = {_whole(hour) for hour in _listed(hours)}
            profile.last = _whole(last)
            profile.ready = ready is True
            profile.usual = int(str(usual), 16)
        return _replacing(self._profiles, found)


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


class UnusualTimeDetector(_Batched):
    """``unusual_time``: an access at an hour-of-week unusual for the principal."""

    name = "unusual_time"
    _QUIET_USES = ("repeat_after",)
    _USES = ("warmup_events", "warmup_days", "unusual_min_days")

    _HOURS_KEPT = 8192

    def __init__(self, config: DetectorConfig) -> None:
        self._config = config
        self._warmup = _Warmup(config)
        self._profiles: dict[str, _Hours] = {}
        self._quiet = _Quiet(config.max_keys, config.repeat_after)

    def _parts(self) -> dict[str, _Part]:
        return {"hours": _HoursTable(self._profiles), "quiet": self._quiet}

    def observe_many(self, events: Sequence[AccessEvent]) -> IndexedAlerts:
        found: IndexedAlerts = []
        profiles = self._profiles
        for index, event in enumerate(events):
            principal = event.principal
            if not principal:
                continue
            ts = event.ts
            profile = profiles.get(principal)
            if profile is None:
                _trim_baselines(profiles, self._config.max_keys)
                profile = profiles[principal] = _Hours(ts)
            hour = int(ts // 3600)
            if profile.ready:
                if hour == profile.last:
                    continue  # this hour was found usual already
            else:
                self._learn(profile, hour, ts)
                continue
            bucket = hour_of_week(ts)
            if profile.usual >> bucket & 1:
                profile.last = hour
                continue
            alert = self._unusual(event, bucket)
            if alert is not None:
                found.append((index, alert))
        return found

    def _learn(self, profile: _Hours, hour: int, ts: float) -> None:
        """Count an access at absolute ``hour`` during warm-up; end the warm-up when due."""
        profile.count += 1
        if hour != profile.last and len(profile.hours) < self._HOURS_KEPT:
            profile.hours.add(hour)
        profile.last = hour
        if self._warmup.done(profile.count, profile.first, ts):
            profile.ready = True
            profile.usual = _usual_hours(profile.hours, self._config.unusual_min_days)
            profile.hours = set()
            profile.last = -1

    def _unusual(self, event: AccessEvent, bucket: int) -> Alert | None:
        """The alert for an access in unusual hour-of-week ``bucket``, unless quiet."""
        key = f"{event.principal}|{bucket}"
        if not self._quiet.ready(key, event.ts):
            return None
        self._quiet.hold(key, event.ts + self._config.repeat_after)
        weekday, hour_of_day = divmod(bucket, 24)
        when = f"{_WEEKDAYS[weekday]} {hour_of_day:02d}:00-{hour_of_day:02d}:59 UTC"
        return _alert(
            self.name,
            "low",
            event,
            key,
            f"{event.principal} active at an unusual time ({when})",
            hour_of_week=bucket,
        )


class NewSourceDetector(_Batched):
    """``new_source``: a principal's access from a network (or address) it never used."""

    name = "new_source"
    _QUIET_USES = ("repeat_after",)
    _USES = ("warmup_events", "warmup_days", "new_source_scope", "ipv4_prefix", "ipv6_prefix")

    def __init__(self, config: DetectorConfig) -> None:
        self._config = config
        self._learned = _Learned(config)
        self._novel = self._learned.novel
        self._quiet = _Quiet(config.max_keys, config.repeat_after)
        self._networks: dict[str, str] = {}

    def _parts(self) -> dict[str, _Part]:
        return {"learned": self._learned, "quiet": self._quiet}

    def network(self, source: str) -> str:
        """The network (or address, by ``new_source_scope``) ``source`` belongs to."""
        found = self._networks.get(source)
        if found is None:
            if len(self._networks) >= 65536:
                self._networks.clear()
            config = self._config
            by_network = config.new_source_scope == "network"
            found = self._networks[source] = network_of(
                source,
                config.ipv4_prefix if by_network else None,
                config.ipv6_prefix if by_network else None,
            )
        return found

    def observe_many(self, events: Sequence[AccessEvent]) -> IndexedAlerts:
        found: IndexedAlerts = []
        networks = self._networks
        novel = self._novel
        for index, event in enumerate(events):
            principal, source = event.principal, event.source
            if not principal or not source:
                continue
            network = networks.get(source) or self.network(source)
            if not novel(principal, event.ts, network):
                continue
            key = f"{principal}|{network}"
            if not self._quiet.ready(key, event.ts):
                continue
            self._quiet.hold(key, event.ts + self._config.repeat_after)
            scope = self._config.new_source_scope
            alert = _alert(
                self.name,
                "medium",
                event,
                key,
                f"{principal} connected from a new {scope} {network}",
                network=network,
            )
            found.append((index, alert))
        return found


class FirstCategoryDetector(_Batched):
    """``first_category``: a principal's first access to a secret category."""

    name = "first_category"
    _QUIET_USES = ("repeat_after",)
    _USES = ("warmup_events", "warmup_days")

    def __init__(self, config: DetectorConfig) -> None:
        self._config = config
        self._learned = _Learned(config)
        self._novel = self._learned.novel
        self._quiet = _Quiet(config.max_keys, config.repeat_after)

    def _parts(self) -> dict[str, _Part]:
        return {"learned": self._learned, "quiet": self._quiet}

    def observe_many(self, events: Sequence[AccessEvent]) -> IndexedAlerts:
        found: IndexedAlerts = []
        novel = self._novel
        for index, event in enumerate(events):
            principal, category = event.principal, event.category
            if not principal or category is None:
                continue
            if not novel(principal, event.ts, category):
                continue
            key = f"{principal}|{category}"
            if not self._quiet.ready(key, event.ts):
                continue
            self._quiet.hold(key, event.ts + self._config.repeat_after)
            alert = _alert(
                self.name,
                "low",
                event,
                key,
                f"{principal} accessed category {category} for the first time",
            )
            found.append((index, alert))
        return found


# --- single-event detectors --------------------------------------------------------------------


class EmergencyDetector(_Batched):
    """``emergency``: any access made with an emergency (break-glass) credential."""

    name = "emergency"
    _QUIET_USES = ("repeat_after",)

    def __init__(self, config: DetectorConfig) -> None:
        self._config = config
        self._quiet = _Quiet(config.max_keys, config.repeat_after)

    def _parts(self) -> dict[str, _Part]:
        return {"quiet": self._quiet}

    def observe_many(self, events: Sequence[AccessEvent]) -> IndexedAlerts:
        found: IndexedAlerts = []
        for index, event in enumerate(events):
            if not event.emergency:
                continue
            key = event.principal or event.source
            if not self._quiet.ready(key, event.ts):
                continue
            self._quiet.hold(key, event.ts + self._config.repeat_after)
            who = event.principal or "an unknown principal"
            alert = _alert(
                self.name,
                "critical",
                event,
                key,
                f"emergency credential used by {who} ({event.raw_operation})",
            )
            found.append((index, alert))
        return found


class HoneytokenDetector(_Batched):
    """``honeytoken``: any access to a decoy secret (``is_honeytoken(path)``): a read is
    critical, anything else (its metadata, a validation, a change) high. Keyed by the
    principal and path, or without a valid token by the origin (``origin_of``: an IPv4
    address, an IPv6 ``/64``) and path, reads apart from other accesses.

    ``is_honeytoken`` must be a pure function of the path: its answers are
    cached (a bounded table), since the same paths are read over and over.
    """

    name = "honeytoken"
    _QUIET_USES = ("repeat_after",)

    _PATHS_KEPT = 65536

    def __init__(self, config: DetectorConfig, is_honeytoken: Callable[[str], bool]) -> None:
        self._config = config
        self._is_honeytoken = is_honeytoken
        self._quiet = _Quiet(config.max_keys, config.repeat_after)
        self._decoys: dict[str, bool] = {}

    def _parts(self) -> dict[str, _Part]:
        return {"quiet": self._quiet}

    def observe_many(self, events: Sequence[AccessEvent]) -> IndexedAlerts:
        found: IndexedAlerts = []
        decoys = self._decoys
        for index, event in enumerate(events):
            if not event.path:
                continue
            decoy = decoys.get(event.path)
            if decoy is None:
                decoy = self._decoy(event.path)
            if not decoy:
                continue
            read = event.operation == "read"
            # reads and other accesses keep quiet apart: touching a decoy first (its
            # metadata, planting it) must not silence the critical alert of a read;
            # without a principal (no valid token) the source is who: one outsider's
            # probe must not silence another's for the quiet period; an outsider is
            # their origin (an IPv6 /64), or one host would raise a critical alert (never
            # rate-limited) per address it picks
            actor = event.principal or origin_of(event.source)
            key = f"{actor}|{event.path}" + ("" if read else "|touch")
            if not self._quiet.ready(key, event.ts):
                continue
            self._quiet.hold(key, event.ts + self._config.repeat_after)
            who = event.principal or "an unknown principal"
            what = "read" if read else f"touched ({event.raw_operation or event.operation})"
            alert = _alert(
                self.name,
                "critical" if read else "high",
                event,
                key,
                f"honeytoken {event.path} {what} by {who} ({event.outcome})",
            )
            found.append((index, alert))
        return found

    def _decoy(self, path: str) -> bool:
        """``is_honeytoken(path)``, remembered."""
        if len(self._decoys) >= self._PATHS_KEPT:
            self._decoys.clear()
        found = self._decoys[path] = bool(self._is_honeytoken(path))
        return found


# --- the set ----------------------------------------------------------------------------------


def _never(path: str) -> bool:
    return False


def _one_by_one(observe: Callable[[AccessEvent], list[Alert]]) -> _Many:
    """``observe_many`` for a plain ``Detector`` (one ``observe`` call per event)."""

    def observe_many(events: Sequence[AccessEvent]) -> IndexedAlerts:
        return [(index, alert) for index, event in enumerate(events) for alert in observe(event)]

    return observe_many


_Many = Callable[[Sequence[AccessEvent]], IndexedAlerts]
_EVENT_THEN_DETECTOR = operator.itemgetter(0, 1)


class DetectorSet(_Batched):
    """Several detectors as one (itself a ``BatchDetector``); ``counts`` alerts per detector.

    ``observe`` gives every detector's alerts for the event, in detector
    order; ``observe_many`` gives exactly the alerts of observing its events
    one by one (see module docstring). The detectors must share no state (a
    detector given twice is refused with ``ConfigError``); a plain
    ``Detector`` (no ``observe_many``) is called once per event.
    """

    name = "all"

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self.detectors: tuple[Detector, ...] = tuple(detectors)
        if len({id(d) for d in self.detectors}) != len(self.detectors):
            raise ConfigError("monitor: a detector appears twice in a detector set")
        self.counts: dict[str, int] = {d.name: 0 for d in self.detectors}
        self._batches: tuple[tuple[str, _Many], ...] = tuple(
            (d.name, d.observe_many if isinstance(d, BatchDetector) else _one_by_one(d.observe))
            for d in self.detectors
        )

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

    def state(self) -> dict[str, object]:
        """The state of every detector that has one (``_Batched``), by name (JSON values)."""
        return {d.name: d.state() for d in self.detectors if isinstance(d, _Batched)}

    def load(self, state: object) -> Install:
        """Read ``state()``'s output; the returned call installs it (see ``restore``)."""
        install, _ = self._read(state)
        return install

    def restore(self, state: object) -> list[str]:
        """Take back ``state()``'s output (see module docstring); the names of the
        detectors that start afresh instead (thresholds changed, or not in ``state``).

        ``ValueError`` (and nothing changed) when ``state`` is malformed.
        """
        install, afresh = self._read(state)
        install()
        return afresh

    def _read(self, state: object) -> tuple[Install, list[str]]:
        installs: list[Install] = []
        afresh: list[str] = []
        try:
            saved = _mapping(state)
            for detector in self.detectors:
                if not isinstance(detector, _Batched):
                    continue
                if detector.name not in saved:
                    afresh.append(detector.name)
                    continue
                try:
                    installs.append(detector.load(saved[detector.name]))
                except StateMismatch:
                    afresh.append(detector.name)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed detector state ({type(exc).__name__})") from None
        return _all(installs), afresh

    def observe_many(
        self,
        events: Sequence[AccessEvent],
        on_error: Callable[[str, Exception], None] | None = None,
    ) -> IndexedAlerts:
        """Every detector's alerts for ``events``, ordered by event, then detector; the
        detectors see the events' texts bounded (``events.bounded``: at most 1 KiB a key).

        A detector that raises: without ``on_error`` the exception propagates
        (offline analysis stops on a bug); with it, ``on_error(name, exc)`` is
        called and the other detectors' alerts are still returned (the online
        monitor loses only the failing detector's alerts for this batch).
        """
        events = bounded(events)  # no text of over 1 KiB becomes a key (see ``events``)
        merged: list[tuple[int, int, Alert]] = []
        counts = self.counts
        for position, (name, many) in enumerate(self._batches):
            if on_error is None:
                found = many(events)
            else:
                try:
                    found = many(events)
                except Exception as exc:
                    on_error(name, exc)
                    continue
            if found:
                counts[name] += len(found)
                merged.extend([(index, position, alert) for index, alert in found])
        if not merged:
            return []
        merged.sort(key=_EVENT_THEN_DETECTOR)  # stable: one detector's alerts keep their order
        return [(index, alert) for index, _, alert in merged]
