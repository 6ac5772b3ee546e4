"""The detectors and the alert pipeline under hostile load: a flood of keys, of alerts,
evasion at the thresholds and window edges, a clock set back, and the cost of one event.

Every detector here is the real one; the alert channels are in-process recorders
(``Recorder``, a fake channel named as one), the clock of the dispatcher's windows
a ``ManualClock``. No timing thresholds: cost is counted in function calls.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import ipaddress
import sys
import threading
import tracemalloc
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from types import FrameType

import pytest

from medsecrets.audit.record import AuditEvent, Outcome
from medsecrets.clock import ManualClock
from medsecrets.monitor.alert import Alert, Severity
from medsecrets.monitor.detectors import (
    BulkDetector,
    DetectorConfig,
    DetectorSet,
    EnumerationDetector,
    FailedBurstDetector,
    RateDetector,
    network_of,
)
from medsecrets.monitor.dispatcher import SUMMARY_DETECTOR, AlertDispatcher
from medsecrets.monitor.engine import access_event
from medsecrets.monitor.events import (
    KEPT_TEXT,
    MAX_TEXT,
    AccessEvent,
    Operation,
    bounded_text,
)

T0 = 1_741_003_200.0  # Monday 2025-03-03 12:00 UTC
DECOY = "medessence/production/database/decoy"


def ev(
    ts: float,
    principal: str = "mallory",
    *,
    operation: Operation = "read",
    path: str = "medessence/production/database/primary",
    source: str = "10.0.0.1",
    outcome: Outcome = "success",
    emergency: bool = False,
) -> AccessEvent:
    parts = path.split("/")
    return AccessEvent(
        ts,
        principal,
        source,
        operation,
        operation,
        path,
        parts[1] if len(parts) > 1 else None,
        parts[2] if len(parts) > 2 else None,
        outcome,
        emergency,
        f"req-{ts}",
    )


def fired(alerts: Sequence[tuple[int, Alert]], detector: str, key: str) -> int:
    return sum(1 for _, a in alerts if a.detector == detector and a.key == key)


def is_decoy(path: str) -> bool:
    return path == DECOY


# --- memory: every table has a bound --------------------------------------------------------

_CACHES = {"_networks", "_origins", "_decoys"}  # pure caches: 65,536 entries, then cleared


Table = dict[object, object] | set[object] | deque[object]


def _tables(obj: object, name: str = "", depth: int = 0) -> Iterator[tuple[str, int, Table]]:
    """Every dict, set and deque held by a detector (and its parts), with its depth."""
    if isinstance(obj, dict | set | deque):
        yield name, depth, obj
        if isinstance(obj, dict):
            for value in obj.values():
                if isinstance(value, dict | set | deque) or _ours(value):
                    yield from _tables(value, name, depth + 1)
        return
    if not _ours(obj):
        return
    slots = [s for cls in type(obj).__mro__ for s in getattr(cls, "__slots__", ())]
    attrs = dict(getattr(obj, "__dict__", {}))
    attrs.update({s: getattr(obj, s) for s in slots if hasattr(obj, s)})
    for attr, value in attrs.items():
        if isinstance(value, tuple):
            for item in value:
                yield from _tables(item, attr, depth)
        else:
            yield from _tables(value, attr, depth)


def _ours(obj: object) -> bool:
    return type(obj).__module__ == "medsecrets.monitor.detectors"


def _flood(n: int) -> Iterator[AccessEvent]:
    """``n`` events, each with a new principal, source (IPv4 and IPv6 /64), path and category,
    every operation and outcome, some emergency, some on the decoy; very long strings too."""
    operations: tuple[Operation, ...] = ("read", "list", "describe", "write")
    outcomes: tuple[Outcome, ...] = ("success", "denied", "error")
    for i in range(n):
        source = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" if i % 2 else f"2001:db8:{i:x}::1"
        yield ev(
            T0 + i * 0.01,
            f"p{i}" + ("x" * 4096 if i % 997 == 0 else ""),
            operation=operations[i % 4],
            path=DECOY if i % 101 == 0 else f"medessence/production/c{i}/s{i}",
            source=source,
            outcome=outcomes[i % 3],
            emergency=i % 53 == 0,
        )


def test_every_table_stays_bounded_under_a_flood_of_distinct_keys() -> None:
    """20,000 new principals, addresses, paths and categories, 40 times ``max_keys``: every
    per-key table holds at most ``max_keys`` keys, every cache its bound (65,536), every
    per-key entry its cap."""
    config = DetectorConfig(max_keys=500)
    detectors = DetectorSet.default(config, is_decoy)
    events = list(_flood(20_000))
    for start in range(0, len(events), 4096):
        detectors.observe_many(events[start : start + 4096])
    seen = 0
    for name, depth, table in _tables(detectors):
        seen += 1
        # a key's entry: times (2 x limit + 2), items (2 x distinct), learned sets (8,192)
        bound = (65_536 if name in _CACHES else config.max_keys) if depth == 0 else 8192
        assert len(table) <= bound, (name, depth, len(table))
    assert seen > 20  # the walk found the tables


def test_a_principal_whose_source_changes_on_every_request() -> None:
    """After warm-up, one token used from a new /24 for each request: bounded state, one
    ``new_source`` alert per network (each a new key), which the dispatcher limits to 30
    a minute per channel and summarises."""
    config = DetectorConfig(max_keys=1000, warmup_days=0.0, warmup_events=5)
    detectors = DetectorSet.default(config)
    detectors.observe_many([ev(T0 + i, source="10.0.0.1") for i in range(5)])
    hopping = [
        ev(T0 + 10 + i * 0.01, source=f"198.{i >> 8 & 255}.{i & 255}.7") for i in range(5000)
    ]
    alerts = [a for _, a in detectors.observe_many(hopping)]
    new_source = [a for a in alerts if a.detector == "new_source"]
    assert len(new_source) == 5000  # one per new network: the dispatcher's to limit
    for name, _, table in _tables(detectors):
        assert len(table) <= (65_536 if name in _CACHES else 8192), name
    clock = ManualClock()
    channel = Recorder("slack")
    with AlertDispatcher([channel], clock=clock.monotonic) as dispatcher:
        for alert in new_source:
            dispatcher.raise_(alert)
        clock.advance(61)
        dispatcher.raise_(_alert("rate", "high", "svc-other"))  # the summary goes first
        assert dispatcher.flush()
    assert len(channel.sent) == 32  # 30, then the summary and the new alert
    summary = channel.sent[30]
    assert summary.detector == SUMMARY_DETECTOR
    assert summary.count == 4970
    assert dispatcher.stats()["channels"]["slack"]["rate_limited"] == 4970  # type: ignore[index]


# --- eviction: the flood must not push out the attacker's own window -------------------------


_Counting = RateDetector | BulkDetector | EnumerationDetector | FailedBurstDetector


def _evict_case(name: str) -> tuple[Callable[[DetectorConfig], object], Callable[..., AccessEvent]]:
    def read(ts: float, who: str, i: int) -> AccessEvent:
        return ev(ts, who)

    def distinct(ts: float, who: str, i: int) -> AccessEvent:
        return ev(ts, who, path=f"medessence/production/database/s{who}{i}")

    def listing(ts: float, who: str, i: int) -> AccessEvent:
        return ev(ts, who, operation="list", path="medessence/production/")

    def denied(ts: float, who: str, i: int) -> AccessEvent:
        return ev(ts, "", outcome="denied", source=who)

    cases = {
        "rate": (RateDetector, read),
        "bulk": (BulkDetector, distinct),
        "enumeration": (EnumerationDetector, listing),
        "failed_burst": (FailedBurstDetector, denied),
    }
    return cases[name]


@pytest.mark.parametrize(
    ("name", "before", "after", "attacker", "key"),
    [
        ("rate", 45, 10, "mallory", "mallory"),
        ("bulk", 15, 10, "mallory", "mallory"),
        ("enumeration", 15, 10, "mallory", "mallory"),
        ("failed_burst", 4, 2, "203.0.113.9", "source:203.0.113.9"),
    ],
)
def test_a_flood_of_new_keys_does_not_evict_the_window_about_to_catch_the_attacker(
    name: str, before: int, after: int, attacker: str, key: str
) -> None:
    """Just under the threshold, the attacker makes more than ``max_keys`` keys of their own
    (one event each: new tokens, new addresses), then goes on: the table drops the idle
    keys, not the busy window (it dropped the oldest keys, the attacker's first)."""
    make, event = _evict_case(name)
    detector = make(DetectorConfig(max_keys=100))
    assert isinstance(detector, _Counting)
    found = detector.observe_many([event(T0 + i * 0.5, attacker, i) for i in range(before)])
    noise = [
        f"198.51.{i >> 8}.{i & 255}" if name == "failed_burst" else f"n{i}" for i in range(150)
    ]
    found += detector.observe_many(
        [event(T0 + 25 + i * 0.01, who, 0) for i, who in enumerate(noise)]
    )
    assert fired(found, name, key) == 0
    late = [event(T0 + 30 + i * 0.5, attacker, before + i) for i in range(after)]
    assert fired(detector.observe_many(late), name, key) == 1


def test_honeytoken_and_emergency_alerts_survive_a_flood_that_fills_every_table() -> None:
    """State eviction never silences them: a read of the decoy and an emergency use after a
    flood that filled (and trimmed) every table, quiet periods included, each alert."""
    detectors = DetectorSet.default(DetectorConfig(max_keys=200), is_decoy)
    detectors.observe_many([ev(T0 - 10, path=DECOY), ev(T0 - 9, emergency=True)])  # quiet now
    detectors.observe_many(list(_flood(5000)))
    after = T0 + 3700  # mallory's quiet periods (1 h) ended; the flood's still run
    alerts = detectors.observe_many(
        [ev(after, path=DECOY), ev(after + 1, "eve", emergency=True, path="")]
    )
    assert fired(alerts, "honeytoken", f"mallory|{DECOY}") == 1
    assert fired(alerts, "emergency", "eve") == 1


# --- evasion ---------------------------------------------------------------------------------


def test_low_and_slow_reading_just_under_every_limit_is_not_flagged() -> None:
    """A documented trade-off (docs/audit.md): 49 distinct secrets every 300 s, evenly
    spread (about 10 a minute, under ``bulk``'s 20), for a day: no counting detector fires.
    ``monitor.rate_principal_limits`` (a lower limit for the principal) is the remedy."""
    day = [
        ev(T0 + window * 300 + i * (300 / 49), path=f"medessence/production/database/s{window}-{i}")
        for window in range(288)
        for i in range(49)
    ]
    assert DetectorSet.default().observe_many(day) == []
    strict = DetectorConfig(rate_principal_limits={"mallory": 40})
    assert {a.detector for _, a in DetectorSet.default(strict).observe_many(day)} == {"rate"}


def test_two_tokens_of_one_lineage_count_as_one_principal() -> None:
    """A stolen token's children ``svc/w0`` and ``svc/w1`` (and a grandchild) split 51 reads:
    the rate detector counts them together under ``svc``."""
    detector = RateDetector(DetectorConfig())
    start = dt.datetime.fromtimestamp(T0, dt.UTC)
    names = ("svc/w0", "svc/w1", "svc/w1/x")
    events = [
        access_event(
            AuditEvent(
                kind="response",
                time=start + dt.timedelta(seconds=i),
                request_id=f"r{i}",
                principal=names[i % 3],
                operation="secrets.read",
                path="medessence/production/database/primary",
                status=200,
            )
        )
        for i in range(51)
    ]
    alerts = detector.observe_many([e for e in events if e is not None])
    assert [(i, a.key, a.principal) for i, a in alerts] == [(50, "svc", "svc")]


def test_bursts_either_side_of_a_window_boundary_are_one_window() -> None:
    """The windows slide: 49 reads just before a 300 s boundary and 49 just after are 98
    in 300 s. Reads exactly one window apart are not in one window: (t - 300, t]."""
    detector = RateDetector(DetectorConfig())
    burst = [
        ev(
            T0 + 299.9,
        )
        for _ in range(49)
    ] + [ev(T0 + 300.1) for _ in range(49)]
    assert [i for i, _ in detector.observe_many(burst)] == [50]
    apart = RateDetector(DetectorConfig())
    spaced = [ev(T0) for _ in range(50)] + [ev(T0 + 300.0) for _ in range(50)]
    assert apart.observe_many(spaced) == []


def test_events_with_equal_timestamps_all_count() -> None:
    rate, bulk = RateDetector(DetectorConfig()), BulkDetector(DetectorConfig())
    assert [i for i, _ in rate.observe_many([ev(T0)] * 51)] == [50]
    same = [ev(T0, path=f"medessence/production/database/s{i}") for i in range(20)]
    assert [i for i, _ in bulk.observe_many(same)] == [19]


def _attack(name: str, ts: float, i: int) -> AccessEvent:
    if name == "bulk":
        return ev(ts, path=f"medessence/production/database/s{ts}-{i}")
    if name == "enumeration":
        return ev(ts, operation="list", path="medessence/production/")
    if name == "failed_burst":
        return ev(ts, outcome="denied")
    return ev(ts)


@pytest.mark.parametrize("name", ["rate", "bulk", "enumeration", "failed_burst"])
@pytest.mark.parametrize("back", [3600.0, 86_400.0])
def test_a_clock_set_back_does_not_blind_the_counting_detectors(name: str, back: float) -> None:
    """An online stream takes its time from the server clock: set back (by an hour, a day)
    after a burst that filled the principal's window and started a quiet period, a new
    burst alerts again (the quiet period lasted until the clock caught up, and a full
    window dropped each new read as older than every time it held)."""
    make = {
        "rate": RateDetector,
        "bulk": BulkDetector,
        "enumeration": EnumerationDetector,
        "failed_burst": FailedBurstDetector,
    }[name]
    detector = make(DetectorConfig())
    found = detector.observe_many([_attack(name, T0 + i * 0.2, i) for i in range(300)])
    assert any(a.detector == name for _, a in found)
    again = detector.observe_many([_attack(name, T0 - back + i * 0.5, i) for i in range(110)])
    assert any(a.detector == name for _, a in again)


@pytest.mark.parametrize("restart", [False, True])
@pytest.mark.parametrize("back", [3600.0, 86_400.0])
def test_a_clock_set_back_does_not_make_slow_reading_a_bulk_alert(
    back: float, restart: bool
) -> None:
    """One read just before the clock was set back stayed first in the principal's window
    and stopped its pruning: a secret read every 90 s then raised "20 distinct secrets in
    60 s" (and again at every read after). Only the reads in the window count, also when
    the clock went back across a restart (the window restored from a saved state)."""
    detector = BulkDetector(DetectorConfig())
    assert detector.observe_many([_attack("bulk", T0, 0)]) == []
    if restart:
        saved = detector.state()
        detector = BulkDetector(DetectorConfig())
        detector.load(saved)()
    slow = [_attack("bulk", T0 - back + i * 90, i) for i in range(30)]
    assert detector.observe_many(slow) == []
    burst = [_attack("bulk", T0 - back + 3000 + i * 0.5, i) for i in range(25)]
    assert [a.count for _, a in detector.observe_many(burst)] == [20]


def test_stragglers_out_of_order_offline_alert_once() -> None:
    """An offline log out of order (neighbours swapped, equal times): still one alert for 60
    reads in 60 s, at the 51st."""
    times = [T0 + i for i in range(60)]
    for i in range(0, 58, 2):
        times[i], times[i + 1] = times[i + 1], times[i]
    times[30] = times[31]
    alerts = RateDetector(DetectorConfig()).observe_many([ev(t) for t in times])
    assert [i for i, _ in alerts] == [50]


# --- alert floods ----------------------------------------------------------------------------


class Recorder:
    """A fake alert channel (in process): records what it is sent; waits on ``gate``."""

    def __init__(self, name: str, *, limited: bool = True, gate: threading.Event | None = None):
        self.name = name
        self.rate_limited = limited
        self.sent: list[Alert] = []
        self._gate = gate

    def send(self, alert: Alert) -> None:
        if self._gate is not None:
            self._gate.wait()
        self.sent.append(alert)

    def close(self) -> None:
        pass


def _alert(detector: str, severity: Severity, key: str) -> Alert:
    return Alert(
        detector=detector,
        severity=severity,
        time=dt.datetime.fromtimestamp(T0, dt.UTC),
        summary=f"{detector} {key}",
        key=key,
    )


def test_one_principal_raising_thousands_of_alerts_is_one_alert_counted() -> None:
    clock = ManualClock()
    channel = Recorder("slack")
    with AlertDispatcher([channel], clock=clock.monotonic) as dispatcher:
        for _ in range(5000):
            dispatcher.raise_(_alert("rate", "high", "mallory"))
        assert dispatcher.flush()
    assert len(channel.sent) == 1
    [kept] = dispatcher.recent()
    assert kept["count"] == 5000
    assert dispatcher.stats()["duplicates"] == 4999


def test_many_principals_each_raising_one_alert_are_limited_and_summarised() -> None:
    """5,000 principals, one alert each, and a honeytoken read in the middle: the critical
    alert reaches every channel; 30 others reach the limited one, whose summary counts the
    4,970 it missed; the log channel takes all; nothing is lost from the counts."""
    clock = ManualClock()
    slack, log = Recorder("slack"), Recorder("log", limited=False)
    hooked: list[Alert] = []
    with AlertDispatcher([slack, log], clock=clock.monotonic, on_alert=hooked.append) as d:
        for i in range(5000):
            d.raise_(_alert("bulk", "high", f"p{i}"))
            if i == 2500:
                d.raise_(_alert("honeytoken", "critical", f"p{i}|{DECOY}"))
        clock.advance(61)
        d.raise_(_alert("rate", "high", "late"))
        assert d.flush()
    assert any(a.detector == "honeytoken" for a in slack.sent)
    assert sum(a.detector == "honeytoken" for a in log.sent) == 1
    summaries = [a for a in slack.sent if a.detector == SUMMARY_DETECTOR]
    assert [s.count for s in summaries] == [4970]
    assert len(log.sent) == 5002
    assert len(hooked) == 5003  # every alert and the summary audited


def test_critical_alerts_keep_a_place_in_slow_queues() -> None:
    """A flood of lesser alerts while the log channel and the audit hook are slow: the
    queues fill and drop them (counted), but a honeytoken read that comes after is still
    logged and audited (the last tenth of a queue is kept for critical alerts)."""
    gate = threading.Event()
    log = Recorder("log", limited=False, gate=gate)
    hooked: list[Alert] = []

    def hook(alert: Alert) -> None:
        gate.wait()
        hooked.append(alert)

    dispatcher = AlertDispatcher([log], on_alert=hook, queue_size=100)
    dispatcher.start()
    try:
        for i in range(300):
            dispatcher.raise_(_alert("new_source", "medium", f"mallory|10.{i}.0.0/24"))
        dispatcher.raise_(_alert("honeytoken", "critical", f"mallory|{DECOY}"))
        gate.set()
        assert dispatcher.flush()
    finally:
        gate.set()
        dispatcher.stop()
    assert [a.detector for a in hooked].count("honeytoken") == 1
    assert [a.detector for a in log.sent].count("honeytoken") == 1
    stats = dispatcher.stats()
    assert stats["hook_failures"] == 300 - len(hooked) + 1  # the dropped ones are counted
    assert stats["channels"]["log"]["dropped"] == 300 - len(log.sent) + 1  # type: ignore[index]


# --- CPU: one event's cost does not grow with the state --------------------------------------


def _calls(observe: Callable[[], object]) -> int:
    """Python and C function calls made by ``observe()`` (a deterministic measure of work)."""
    count = 0

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        observe()
    finally:
        sys.setprofile(None)
    return count


def _probe(ts: float) -> list[AccessEvent]:
    """A batch of 50 events of every kind, by known and new principals."""
    return [
        ev(
            ts + i,
            f"probe{i % 5}" if i % 2 else f"new{ts}-{i}",
            operation=("read", "list", "describe", "write")[i % 4],
            outcome=("success", "denied")[i % 2],
            path=f"medessence/production/database/s{i}",
            source=f"192.0.2.{i}",
        )
        for i in range(50)
    ]


def test_one_events_cost_does_not_grow_with_the_state() -> None:
    """The same 50 events cost the same calls whether the tables hold 100 keys or 5,000
    (no table is scanned per event), and trimming a full table is amortised: a new key's
    share of the trims does not grow with ``max_keys``."""
    costs = []
    # the probe's addresses parsed once (``network_of``'s cache is shared by every set)
    DetectorSet.default(DetectorConfig(), is_decoy).observe_many(_probe(T0 + 500))
    for keys in (100, 5000):
        detectors = DetectorSet.default(DetectorConfig(max_keys=100_000), is_decoy)
        detectors.observe_many(list(_flood(keys)))
        costs.append(_calls(functools.partial(detectors.observe_many, _probe(T0 + 500))))
    assert costs[0] == costs[1]
    per_key = []
    for limit in (200, 2000):
        detector = RateDetector(DetectorConfig(max_keys=limit))
        events = [ev(T0 + i * 0.001, f"k{i}") for i in range(10 * limit)]
        per_key.append(_calls(functools.partial(detector.observe_many, events)) / len(events))
    assert per_key[1] < per_key[0] * 1.25


def test_decoy_probes_without_a_token_from_two_addresses_are_two_alerts() -> None:
    """Without a valid token the principal is unknown: the quiet period of the first
    outsider's read of the decoy (keyed by principal) silenced a second outsider's for an
    hour. Keyed by source, as ``emergency`` is, each alerts."""
    detector = DetectorSet.default(DetectorConfig(), is_decoy)
    probes = [
        ev(T0, "", path=DECOY, outcome="denied", source="203.0.113.1"),
        ev(T0 + 5, "", path=DECOY, outcome="denied", source="198.51.100.7"),
        ev(T0 + 9, "", path=DECOY, outcome="denied", source="198.51.100.7"),
    ]
    alerts = [a for _, a in detector.observe_many(probes) if a.detector == "honeytoken"]
    assert [(a.key, a.severity, a.source) for a in alerts] == [
        (f"203.0.113.1|{DECOY}", "critical", "203.0.113.1"),
        (f"198.51.100.7|{DECOY}", "critical", "198.51.100.7"),
    ]


def test_one_host_probing_a_decoy_from_many_ipv6_addresses_is_one_alert() -> None:
    """Keyed by the exact address, a host without a token raised a critical alert (never
    rate-limited, taking the dispatcher queues' critical reserve) for each of the 2^64
    addresses of its ``/64``: an outsider is its origin, as for ``failed_burst``; another
    ``/64`` still alerts."""
    detector = DetectorSet.default(DetectorConfig(), is_decoy)
    probes = [
        ev(T0 + i, "", path=DECOY, outcome="denied", source=f"2001:db8:1:2::{i + 1:x}")
        for i in range(200)
    ]
    probes.append(ev(T0 + 300, "", path=DECOY, outcome="denied", source="2001:db8:1:3::1"))
    alerts = [a for _, a in detector.observe_many(probes) if a.detector == "honeytoken"]
    assert [(a.key, a.severity, a.source) for a in alerts] == [
        (f"2001:db8:1:2::/64|{DECOY}", "critical", "2001:db8:1:2::1"),
        (f"2001:db8:1:3::/64|{DECOY}", "critical", "2001:db8:1:3::1"),
    ]


def _named_calls(observe: Callable[[], object], names: set[str]) -> dict[str, int]:
    """How often ``observe()`` calls each of the functions ``names`` (by ``co_name``) of the
    standard ``ipaddress`` module."""
    counts = dict.fromkeys(names, 0)

    def profile(frame: FrameType, event: str, arg: object) -> None:
        code = frame.f_code
        if event == "call" and code.co_name in counts and code.co_filename.endswith("ipaddress.py"):
            counts[code.co_name] += 1

    sys.setprofile(profile)
    try:
        observe()
    finally:
        sys.setprofile(None)
    return counts


@pytest.mark.parametrize("family", [4, 6])
def test_a_botnets_new_address_is_parsed_once_for_every_detector(family: int) -> None:
    """Each denied request from a new address (a botnet) went through ``ipaddress`` in
    ``new_source`` and again in ``failed_burst``, and each built an ``ip_network`` (tens of
    microseconds each, ~100 us an event): one parse now serves both, and the network's
    text is made without building it."""
    detectors = DetectorSet.default(DetectorConfig(), is_decoy)
    sources = [
        f"100.{64 + family}.{i >> 8}.{i & 255}" if family == 4 else f"2001:db8:b07:{i:x}::9"
        for i in range(300)
    ]
    events = [
        ev(T0 + i, f"bot{i % 7}", outcome="denied", source=source)
        for i, source in enumerate(sources)
    ]
    counts = _named_calls(
        functools.partial(detectors.observe_many, events), {"ip_address", "ip_network"}
    )
    assert counts == {"ip_address": len(sources), "ip_network": 0}


@pytest.mark.parametrize(
    "source",
    [
        "10.1.2.3",
        "::ffff:10.1.2.3",
        "2001:db8:1:2:3:4:5:6",
        "fe80::1%eth0",
        "fe80::%eth0",
        "::",
        "secretsmanager.amazonaws.com",
        "1.2.3",
    ],
)
@pytest.mark.parametrize("bits", [(24, 64), (0, 0), (32, 128), (17, 53), (None, None)])
def test_network_text_is_ip_networks(source: str, bits: tuple[int | None, int | None]) -> None:
    """``network_of`` gives exactly the text ``ip_network`` gave (saved baselines hold it)."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        expected = source
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        prefix = bits[0] if address.version == 4 else bits[1]
        expected = (
            str(address)
            if prefix is None
            else str(ipaddress.ip_network((address, prefix), strict=False))
        )
    assert network_of(source, *bits) == expected


# --- memory: long texts ------------------------------------------------------------------------


def _long_events(start: int, count: int, size: int) -> list[AccessEvent]:
    """Events whose principal, source and path are each over ``size`` characters long and
    new (offline, a log line may be 1 MiB), every operation, some emergency."""
    pad = "x" * size
    return [
        ev(
            T0 + i,
            f"p{i}-{pad}",
            operation=("read", "list", "describe", "write")[i % 4],
            path=f"medessence/production/c{i}/{pad}",
            source=f"s{i}-{pad}",
            outcome=("success", "denied")[i % 2],
            emergency=i % 50 == 0,
        )
        for i in range(start, start + count)
    ]


def test_long_texts_cost_the_state_a_bounded_size() -> None:
    """Texts of 32 KiB as principals, sources and paths: the detectors kept each (and
    texts made of them) as keys, about 130 KiB of state an event (100,000 keys: gigabytes).
    A text over ``MAX_TEXT`` is kept as its readable prefix and a digest: a few KiB an
    event, as for short texts (measured by ``tracemalloc``, after the events are gone)."""
    detectors = DetectorSet.default(DetectorConfig(), is_decoy)
    count, size = 600, 32 * 1024
    emergency: list[Alert] = []
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for start in range(0, count, 100):
            found = detectors.observe_many(_long_events(start, 100, size))
            emergency += [a for _, a in found if a.detector == "emergency"]
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before - sys.getsizeof(emergency)
        held -= sum(sys.getsizeof(a.principal) + sys.getsizeof(a.key) for a in emergency)
    finally:
        tracemalloc.stop()
    assert held / count < 12 * 1024  # each event carried 3 x 32 KiB
    assert len(emergency) == count // 50
    [first, *_] = emergency
    assert first.principal is not None
    assert first.principal.startswith("p0-" + "x" * (KEPT_TEXT - 3) + "…")
    assert len(first.principal) <= KEPT_TEXT + 1 + 32
    assert first.principal == bounded_text(_long_events(0, 1, size)[0].principal)


def test_long_texts_that_differ_only_at_their_end_stay_distinct() -> None:
    """Two principals sharing their first 4,000 characters (and a lone surrogate, as JSON
    may decode) each read 30 times: two keys under the limit of 50, no ``rate`` alert."""
    common = "arn:aws:sts::123456789012:assumed-role/" + "r" * 4000 + "\ud800"
    reads = [ev(T0 + i, common + ("a" if i % 2 else "b")) for i in range(60)]
    alerts = DetectorSet.default().observe_many(reads)
    assert [a for _, a in alerts if a.detector == "rate"] == []
    assert bounded_text(common + "a") != bounded_text(common + "b")
    assert bounded_text(common[:MAX_TEXT]) == common[:MAX_TEXT]
