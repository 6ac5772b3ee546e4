"""Each detector on hand-made event streams: fires at its threshold, not below, once per period."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json

import pytest

from medsecrets.catalog import default_catalog
from medsecrets.errors import ConfigError
from medsecrets.monitor import detectors as detectors_module
from medsecrets.monitor.alert import Alert
from medsecrets.monitor.detectors import (
    DETECTOR_NAMES,
    BulkDetector,
    Detector,
    DetectorConfig,
    DetectorSet,
    EmergencyDetector,
    EnumerationDetector,
    FailedBurstDetector,
    FirstCategoryDetector,
    HoneytokenDetector,
    NewSourceDetector,
    RateDetector,
    UnusualTimeDetector,
    hour_of_week,
)
from medsecrets.monitor.events import AccessEvent, Operation, parse_time

MONDAY = dt.datetime(2025, 3, 3, tzinfo=dt.UTC)
_ids = itertools.count()


def event(
    at: dt.datetime,
    *,
    principal: str = "svc-a",
    operation: Operation = "read",
    path: str = "medessence/production/database/primary",
    source: str = "10.0.0.1",
    outcome: str = "success",
    emergency: bool = False,
    raw: str = "",
) -> AccessEvent:
    parts = path.split("/")
    return AccessEvent.at(
        at,
        principal=principal,
        operation=operation,
        raw_operation=raw,
        source=source,
        path=path,
        environment=parts[1] if len(parts) > 1 else None,
        category=parts[2] if len(parts) > 2 else None,
        outcome=outcome,  # type: ignore[arg-type]
        emergency=emergency,
        request_id=f"req-{next(_ids)}",
    )


def feed(detector: Detector, events: list[AccessEvent]) -> list[tuple[AccessEvent, Alert]]:
    return [(e, a) for e in events for a in detector.observe(e)]


def seconds(n: float) -> dt.timedelta:
    return dt.timedelta(seconds=n)


# --- rate ------------------------------------------------------------------------------------


def test_rate_fires_on_the_51st_read_in_300_seconds_and_names_it() -> None:
    detector = RateDetector(DetectorConfig())
    reads = [event(MONDAY + seconds(i * 5)) for i in range(51)]  # 51 reads within 250 s
    found = feed(detector, reads)
    assert len(found) == 1
    trigger, alert = found[0]
    assert trigger is reads[50]
    assert alert.detector == "rate"
    assert alert.details["request_id"] == reads[50].request_id
    assert alert.count == 51
    assert alert.key == "svc-a"
    assert alert.principal == "svc-a"
    assert alert.time == reads[50].time


def test_rate_does_not_fire_at_50_or_when_reads_are_spread_out() -> None:
    detector = RateDetector(DetectorConfig())
    assert feed(detector, [event(MONDAY + seconds(i)) for i in range(50)]) == []
    spread = RateDetector(DetectorConfig())
    assert feed(spread, [event(MONDAY + seconds(i * 7)) for i in range(500)]) == []


def test_rate_counts_successful_reads_of_one_principal_only() -> None:
    detector = RateDetector(DetectorConfig())
    start = MONDAY
    mixed = [event(start + seconds(i), principal=f"p{i % 2}") for i in range(100)]
    mixed += [event(start + seconds(i), outcome="denied") for i in range(100)]
    mixed += [event(start + seconds(i), operation="list") for i in range(100)]
    assert feed(detector, mixed) == []


def test_rate_is_quiet_for_a_window_after_an_alert_then_fires_again() -> None:
    detector = RateDetector(DetectorConfig())
    burst = [event(MONDAY + seconds(i)) for i in range(200)]  # 200 reads in 200 s
    assert len(feed(detector, burst)) == 1
    later = [event(MONDAY + seconds(1000 + i)) for i in range(60)]
    assert len(feed(detector, later)) == 1


def test_rate_limits_per_principal_and_per_category() -> None:
    config = DetectorConfig(
        rate_principal_limits={"batch-job": 500}, rate_category_limits={"medical-encryption": 3}
    )
    detector = RateDetector(config)
    assert (
        feed(detector, [event(MONDAY + seconds(i), principal="batch-job") for i in range(400)])
        == []
    )
    phi = "medessence/production/medical-encryption/phi"
    found = feed(
        detector, [event(MONDAY + seconds(i), principal="svc-b", path=phi) for i in range(4)]
    )
    assert [a.key for _, a in found] == ["svc-b|medical-encryption"]
    assert "medical-encryption" in found[0][1].summary


# --- bulk and enumeration ----------------------------------------------------------------------


def test_bulk_fires_on_the_20th_distinct_secret_in_60_seconds() -> None:
    detector = BulkDetector(DetectorConfig())
    paths = [f"medessence/production/database/s{i}" for i in range(20)]
    reads = [event(MONDAY + seconds(i * 2), path=p) for i, p in enumerate(paths)]
    found = feed(detector, reads)
    assert [(e.request_id, a.count) for e, a in found] == [(reads[19].request_id, 20)]


def test_bulk_ignores_repeats_and_slow_browsing() -> None:
    detector = BulkDetector(DetectorConfig())
    same = [event(MONDAY + seconds(i)) for i in range(300)]
    slow = [
        event(MONDAY + seconds(1000 + i * 4), path=f"medessence/production/database/s{i}")
        for i in range(100)
    ]  # 15 distinct per minute at most
    assert feed(detector, same + slow) == []


def test_enumeration_fires_on_20_lists_in_60_seconds_only() -> None:
    detector = EnumerationDetector(DetectorConfig())
    lists = [event(MONDAY + seconds(i * 3), operation="list") for i in range(20)]
    found = feed(detector, lists)
    assert [e for e, _ in found] == [lists[19]]
    assert found[0][1].detector == "enumeration"
    calm = EnumerationDetector(DetectorConfig())
    assert feed(calm, [event(MONDAY + seconds(i * 4), operation="list") for i in range(100)]) == []


def test_metadata_reads_of_distinct_secrets_count_as_enumeration() -> None:
    """Reading the metadata of 20 secrets one by one maps the store as 20 lists do."""
    paths = [f"medessence/production/database/s{i}" for i in range(20)]
    described = [
        event(MONDAY + seconds(i * 2), operation="describe", path=path, raw="metadata.read")
        for i, path in enumerate(paths)
    ]
    found = feed(EnumerationDetector(DetectorConfig()), described)
    assert [e for e, _ in found] == [described[19]]
    assert found[0][1].detector == "enumeration"
    assert "read their metadata 20 times" in found[0][1].summary
    # lists and metadata reads add up; a metadata read of a missing secret (a probe) counts
    mixed = [event(MONDAY + seconds(i), operation="list") for i in range(10)] + [
        event(MONDAY + seconds(10 + i), operation="describe", path=p, outcome="error")
        for i, p in enumerate(paths[:10])
    ]
    assert len(feed(EnumerationDetector(DetectorConfig()), mixed)) == 1


def test_repeated_or_refused_metadata_reads_are_no_enumeration() -> None:
    """One secret's metadata read again and again (the SDK cache checking for a new version)
    counts once; refused reads are the failed-burst detector's."""
    detector = EnumerationDetector(DetectorConfig())
    paths = [f"medessence/production/database/s{i}" for i in range(3)]
    cache = [
        event(MONDAY + seconds(i), operation="describe", path=paths[i % 3]) for i in range(100)
    ]
    refused = [
        event(MONDAY + seconds(100 + i), operation="describe", path=f"x/{i}", outcome="denied")
        for i in range(30)
    ]
    assert feed(detector, cache + refused) == []
    # once out of the window, the same secret counts again
    later = [
        event(MONDAY + seconds(200 + i * 61), operation="describe", path=paths[0]) for i in range(3)
    ]
    assert feed(detector, later) == []
    assert len(detector._counts._times["svc-a"]) == 1


def test_a_state_saved_without_a_part_restarts_that_detector_only() -> None:
    """A state saved before the enumeration detector counted metadata reads (no
    ``described`` part) restarts enumeration alone; the other detectors are restored."""
    detectors = DetectorSet.default()
    detectors.observe_many([event(MONDAY + seconds(i), operation="list") for i in range(5)])
    state = detectors.state()
    parts = state["enumeration"]["parts"]  # type: ignore[index]
    del parts["described"]
    assert DetectorSet.default().restore(state) == ["enumeration"]


# --- failed bursts -----------------------------------------------------------------------------


def test_failed_burst_per_principal_and_per_source() -> None:
    detector = FailedBurstDetector(DetectorConfig())
    denied = [
        event(MONDAY + seconds(i * 5), outcome="denied", source=f"10.0.0.{i}") for i in range(5)
    ]
    found = feed(detector, denied)
    assert [a.key for _, a in found] == ["principal:svc-a"]
    assert found[0][0] is denied[4]
    sprayed = [
        event(MONDAY + seconds(500 + i), principal="", source="203.0.113.9", outcome="denied")
        for i in range(5)
    ]
    assert [a.key for _, a in feed(detector, sprayed)] == ["source:203.0.113.9"]
    # one IPv6 host picks a new address in its /64 for every attempt; an IPv4 one may be
    # written as ::ffff:a.b.c.d (a dual-stack listener)
    rotating = [
        event(MONDAY + seconds(1000 + i), principal="", source=f"2001:db8:1:2::{i + 1:x}",
              outcome="denied")
        for i in range(5)
    ]  # fmt: skip
    assert [a.key for _, a in feed(detector, rotating)] == ["source:2001:db8:1:2::/64"]
    mixed = [
        event(MONDAY + seconds(2000 + i), principal="", source=source, outcome="denied")
        for i, source in enumerate(["198.51.100.7", "::ffff:198.51.100.7"] * 3)
    ]
    assert [a.key for _, a in feed(detector, mixed)] == ["source:198.51.100.7"]


def test_four_denials_or_slow_denials_are_no_burst() -> None:
    detector = FailedBurstDetector(DetectorConfig())
    assert feed(detector, [event(MONDAY + seconds(i), outcome="denied") for i in range(4)]) == []
    slow = [event(MONDAY + seconds(100 + i * 20), outcome="denied") for i in range(30)]
    assert feed(detector, slow) == []
    errors = [event(MONDAY + seconds(2000 + i), outcome="error") for i in range(30)]
    assert feed(detector, errors) == []


# --- baselines ---------------------------------------------------------------------------------


def office_week(
    principal: str = "alice", days: int = 8, source: str = "10.1.0.7"
) -> list[AccessEvent]:
    """Weekdays 09:00-16:40, one read every 20 minutes, for ``days`` days from MONDAY."""
    events = []
    for day in range(days):
        start = MONDAY + dt.timedelta(days=day)
        if start.weekday() >= 5:
            continue
        for k in range(24):
            events.append(
                event(
                    start + dt.timedelta(hours=9, minutes=20 * k),
                    principal=principal,
                    source=source,
                )
            )
    return events


def test_hour_of_week_starts_on_monday() -> None:
    assert hour_of_week(MONDAY.timestamp()) == 0
    assert hour_of_week((MONDAY + dt.timedelta(days=6, hours=23)).timestamp()) == 167
    assert hour_of_week((MONDAY + dt.timedelta(days=9, hours=3)).timestamp()) == 2 * 24 + 3


def test_unusual_time_after_warm_up_only() -> None:
    detector = UnusualTimeDetector(DetectorConfig())
    night_early = event(MONDAY + dt.timedelta(days=1, hours=3))  # before warm-up: learned
    assert feed(detector, [night_early]) == []
    assert feed(detector, office_week("svc-a")) == []
    day = MONDAY + dt.timedelta(days=8)  # Tuesday of week 2
    usual = [event(day + dt.timedelta(hours=h)) for h in (9, 12, 16)]
    assert feed(detector, usual) == []
    # 17:xx is next to 16:xx (smoothing); 02:xx is next to the early 03:xx seen in warm-up
    edges = [event(day + dt.timedelta(hours=17)), event(day + dt.timedelta(hours=2))]
    assert feed(detector, edges) == []
    night = event(day + dt.timedelta(hours=22))
    weekend = event(MONDAY + dt.timedelta(days=12, hours=11))  # Saturday
    found = feed(detector, [night, weekend])
    assert [e for e, _ in found] == [night, weekend]
    assert found[0][1].details["hour_of_week"] == 24 + 22
    assert "Tue 22:00-22:59 UTC" in found[0][1].summary


def test_unusual_time_needs_both_warm_up_events_and_days() -> None:
    config = DetectorConfig(warmup_events=1000)
    detector = UnusualTimeDetector(config)
    feed(detector, office_week())
    assert feed(detector, [event(MONDAY + dt.timedelta(days=9, hours=2), principal="alice")]) == []


def test_unusual_time_repeats_once_an_hour_and_anomalies_do_not_teach() -> None:
    detector = UnusualTimeDetector(DetectorConfig())
    feed(detector, office_week())
    night = MONDAY + dt.timedelta(days=8, hours=23)
    burst = [event(night + seconds(i * 60), principal="alice") for i in range(30)]
    assert len(feed(detector, burst)) == 1
    next_week = [event(night + dt.timedelta(days=7), principal="alice")]
    assert len(feed(detector, next_week)) == 1


def test_new_source_network_and_address_scopes() -> None:
    warm = office_week(source="10.1.0.7")
    detector = NewSourceDetector(DetectorConfig())
    assert feed(detector, warm) == []
    later = MONDAY + dt.timedelta(days=8, hours=10)
    same_network = event(later, principal="alice", source="10.1.0.99")
    outside = event(later + seconds(60), principal="alice", source="198.51.100.4")
    found = feed(detector, [same_network, outside])
    assert [e for e, _ in found] == [outside]
    assert found[0][1].details["network"] == "198.51.100.0/24"
    assert found[0][1].key == "alice|198.51.100.0/24"
    strict = NewSourceDetector(DetectorConfig(new_source_scope="address"))
    feed(strict, warm)
    assert [e for e, _ in feed(strict, [same_network])] == [same_network]


def test_new_source_sees_ipv4_clients_of_a_dual_stack_listener_as_ipv4() -> None:
    """On a listener bound to ``[::]`` IPv4 clients arrive as ``::ffff:a.b.c.d``: they all
    fell into ``::/64``, one network, so no IPv4 client was ever new."""
    detector = NewSourceDetector(DetectorConfig())
    assert feed(detector, office_week(source="::ffff:10.1.0.7")) == []
    later = MONDAY + dt.timedelta(days=8, hours=10)
    same_network = event(later, principal="alice", source="10.1.0.99")
    outside = event(later + seconds(60), principal="alice", source="::ffff:198.51.100.4")
    found = feed(detector, [same_network, outside])
    assert [e for e, _ in found] == [outside]
    assert found[0][1].details["network"] == "198.51.100.0/24"


def test_a_flood_of_new_principals_does_not_push_baselines_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Minted tokens are new principals: their warm-ups go first when a table is full, and
    a saved state keeps finished baselines first."""
    config = DetectorConfig(max_keys=100)
    sources = NewSourceDetector(config)
    hours = UnusualTimeDetector(config)
    warm = office_week(source="10.1.0.7")
    feed(sources, warm)
    feed(hours, warm)
    later = MONDAY + dt.timedelta(days=8, hours=9)
    flood = [event(later + seconds(i), principal=f"minted-{i}") for i in range(1000)]
    feed(sources, flood)
    feed(hours, flood)
    night = event(later + dt.timedelta(hours=14), principal="alice", source="198.51.100.4")
    assert [a.detector for _, a in feed(sources, [night])] == ["new_source"]
    assert [a.detector for _, a in feed(hours, [night])] == ["unusual_time"]
    monkeypatch.setattr(detectors_module, "STATE_KEYS", 10)
    for detector in (sources, hours):
        kept = json.dumps(detector.state())
        assert '"alice"' in kept, type(detector).__name__


def test_new_source_ipv6_networks_and_non_ip_sources() -> None:
    detector = NewSourceDetector(DetectorConfig())
    assert detector.network("2001:db8:1:2::5") == "2001:db8:1:2::/64"
    assert detector.network("secretsmanager.amazonaws.com") == "secretsmanager.amazonaws.com"
    feed(detector, office_week(source="2001:db8:1:2::5"))
    later = MONDAY + dt.timedelta(days=8, hours=10)
    near = event(later, principal="alice", source="2001:db8:1:2::ffff")
    far = event(later + seconds(1), principal="alice", source="2001:db8:9:9::1")
    assert [e for e, _ in feed(detector, [near, far])] == [far]


def test_first_category_after_warm_up() -> None:
    detector = FirstCategoryDetector(DetectorConfig())
    feed(detector, office_week())  # database only
    later = MONDAY + dt.timedelta(days=8, hours=10)
    known = event(later, principal="alice", path="medessence/staging/database/replica")
    new = event(later + seconds(5), principal="alice", path="medessence/production/auth/jwt")
    again = event(
        later + seconds(10), principal="alice", path="medessence/production/auth/sessions"
    )
    found = feed(detector, [known, new, again])
    assert [e for e, _ in found] == [new]  # the repeat is inside the quiet hour
    assert found[0][1].key == "alice|auth"
    assert found[0][1].category == "auth"
    next_day = event(
        later + dt.timedelta(days=1), principal="alice", path="medessence/production/auth/jwt"
    )
    assert [e for e, _ in feed(detector, [next_day])] == [next_day]  # not learned from an alert


# --- single events -------------------------------------------------------------------------------


def test_every_emergency_access_alerts_once_an_hour() -> None:
    detector = EmergencyDetector(DetectorConfig())
    normal = event(MONDAY, principal="break-glass-1")
    first = event(MONDAY + seconds(10), principal="break-glass-1", emergency=True)
    repeat = event(MONDAY + seconds(20), principal="break-glass-1", emergency=True)
    later = event(MONDAY + seconds(4000), principal="break-glass-1", emergency=True)
    found = feed(detector, [normal, first, repeat, later])
    assert [e for e, _ in found] == [first, later]
    assert {a.severity for _, a in found} == {"critical"}


def test_honeytoken_reads_alert_whatever_their_outcome() -> None:
    catalog = dataclasses.replace(
        default_catalog(), honeytokens=frozenset({"production/database/legacy-admin"})
    )
    detector = HoneytokenDetector(DetectorConfig(), catalog.is_honeytoken)
    decoy = "medessence/production/database/legacy-admin"
    allowed = event(MONDAY, path=decoy)
    refused = event(MONDAY + seconds(1), principal="mallory", path=decoy, outcome="denied")
    listing = event(MONDAY + seconds(2), principal="eve", path=decoy, operation="list")
    real = event(MONDAY + seconds(3), principal="eve")
    metadata = event(
        MONDAY + seconds(4), principal="insider", path=decoy, operation="other", raw="metadata.read"
    )
    found = feed(detector, [allowed, refused, listing, real, metadata])
    assert [e for e, _ in found] == [allowed, refused, listing, metadata]
    assert found[1][1].path == decoy
    # reading the decoy is critical; touching it otherwise (its metadata, a list under it) high
    assert [a.severity for _, a in found] == ["critical", "critical", "high", "high"]
    assert "touched (metadata.read)" in found[3][1].summary
    # having touched it first does not silence the critical alert of a read
    insider_read = event(MONDAY + seconds(5), principal="insider", path=decoy)
    assert [a.severity for _, a in feed(detector, [insider_read])] == ["critical"]


# --- the set and the configuration -----------------------------------------------------------


def test_the_default_set_has_every_detector_and_counts_alerts() -> None:
    detectors = DetectorSet.default()
    assert tuple(d.name for d in detectors.detectors) == DETECTOR_NAMES
    alerts = detectors.observe(event(MONDAY, emergency=True))
    assert [a.detector for a in alerts] == ["emergency"]
    assert detectors.counts["emergency"] == 1
    assert sum(detectors.counts.values()) == 1


@pytest.mark.parametrize(
    "setting",
    [
        {"rate_limit": 0},
        {"bulk_window": 0},
        {"failed_denials": True},
        {"rate_category_limits": {"database": -1}},
        {"warmup_days": -1},
        {"new_source_scope": "planet"},
        {"ipv4_prefix": 33},
    ],
)
def test_bad_settings_are_named(setting: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        DetectorConfig(**setting)  # type: ignore[arg-type]
    assert next(iter(setting)).split("_")[0] in str(info.value)


def test_state_stays_bounded_with_many_principals() -> None:
    config = DetectorConfig(max_keys=100)
    detectors = DetectorSet.default(config)
    for i in range(5000):
        detectors.observe(event(MONDAY + seconds(i), principal=f"p{i}", source=f"10.{i % 250}.0.1"))
    rate = detectors.detectors[0]
    assert isinstance(rate, RateDetector)
    assert len(rate._counts._times) <= 100
    unusual = detectors.detectors[4]
    assert isinstance(unusual, UnusualTimeDetector)
    assert len(unusual._profiles) <= 100


def test_a_busy_principal_costs_bounded_memory_and_still_alerts() -> None:
    """20,000 reads in 200 s (within every window): the counting detectors keep a few
    entries per principal, not one per read, and give the same alerts as below the caps."""
    config = DetectorConfig()
    rate, bulk = RateDetector(config), BulkDetector(config)
    enumeration, failed = EnumerationDetector(config), FailedBurstDetector(config)
    events = [
        event(
            MONDAY + dt.timedelta(milliseconds=10 * i),
            path=f"medessence/production/database/s{i % 5000}",
            operation="list" if i % 2 else "read",
            outcome="denied" if i % 3 == 0 else "success",
        )
        for i in range(20_000)
    ]
    alerts = {d.name: d.observe_many(events) for d in (rate, bulk, enumeration, failed)}
    assert all(len(found) >= 1 for found in alerts.values())  # each fired (once per quiet period)
    assert [i for i, _ in alerts["rate"]] == [152]  # the 51st successful read (i % 6 in {2, 4})
    assert len(rate._counts._times["svc-a"]) <= 2 * config.rate_limit + 2
    assert len(bulk._distinct._state["svc-a"]) <= 2 * config.bulk_distinct
    assert len(enumeration._counts._times["svc-a"]) <= 2 * config.enumeration_lists
    assert len(failed._counts._times["principal:svc-a"]) <= 2 * config.failed_denials


def test_a_late_read_does_not_make_a_secret_older_for_bulk() -> None:
    config = DetectorConfig(bulk_distinct=3, bulk_window=60)
    detector = BulkDetector(config)
    base = MONDAY
    stream = [
        event(base + dt.timedelta(seconds=100), path="medessence/production/database/a"),
        event(base + dt.timedelta(seconds=90), path="medessence/production/database/a"),  # late
        event(base + dt.timedelta(seconds=120), path="medessence/production/database/b"),
        event(base + dt.timedelta(seconds=155), path="medessence/production/database/c"),
    ]
    assert [i for i, _ in detector.observe_many(stream)] == [3]  # a (last seen 100) still counts


def test_capped_counts_are_reported_as_at_least_and_caps_are_per_key() -> None:
    config = DetectorConfig(rate_principal_limits={"batch-job": 1_000_000})
    rate = RateDetector(config)
    # 20 reads a second for 400 s: an alert at the 51st, another after the 300 s quiet period
    events = [event(MONDAY + dt.timedelta(milliseconds=50 * i)) for i in range(8000)]
    alerts = [alert for _, alert in rate.observe_many(events)]
    assert "read secrets 51 times" in alerts[0].summary
    assert len(alerts) == 2 and "read secrets at least 102 times" in alerts[1].summary
    assert rate._counts._times["svc-a"].maxlen == 2 * config.rate_limit + 2  # not the batch job's


@pytest.mark.parametrize(
    "text", ["2025-03-03T10:00:infZ", "2025-03-03T10:00:nanZ", "2025-03-03T10:00:61Z"]
)
def test_parse_time_refuses_seconds_that_are_not_seconds(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)
