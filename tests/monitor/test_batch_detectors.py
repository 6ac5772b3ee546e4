"""Batch detectors: ``observe_many`` over a sequence, in any slicing, is ``observe`` event by event.

The labelled synthetic data set (``medsecrets.testing.anomalies``) is run through every
detector, alone and as the default ``DetectorSet``, three ways: one ``observe_many`` call over
the whole list, ``observe_many`` over random slices of 1..500 events (state carries over
between calls), and ``observe`` one event at a time. The alerts (every field, and the index
of the event that raised each) and the per-detector counts must be identical.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence

import pytest

from medsecrets.errors import ConfigError
from medsecrets.monitor.alert import Alert
from medsecrets.monitor.detectors import (
    DETECTOR_NAMES,
    BatchDetector,
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
)
from medsecrets.monitor.events import AccessEvent
from medsecrets.monitor.sources import event_from_record
from medsecrets.testing.anomalies import generate

SEEDS = (1, 2, 3, 4)
"""Seeds of the random slicings."""

DEFAULT = DetectorConfig()
TIGHT = DetectorConfig(
    rate_limit=20,
    rate_principal_limits={"svc-backup-agent": 4, "alice": 6},
    rate_category_limits={"database": 8, "auth": 5},  # two alerts from one event, one detector
    bulk_distinct=6,
    enumeration_lists=4,
    failed_denials=2,
    warmup_events=10,
    warmup_days=1.0,
    new_source_scope="address",
    repeat_after=600.0,
    max_keys=12,  # fewer than the principals: the per-key tables are trimmed during the run
)
CONFIGS = {"default": DEFAULT, "tight": TIGHT}

Indexed = list[tuple[int, dict[str, object]]]


@pytest.fixture(scope="module")
def events() -> list[AccessEvent]:
    records, _ = generate(20261204, normal=3000, per_kind=10)
    found = [event_from_record(record) for record in records]
    assert all(event is not None for event in found)
    return [event for event in found if event is not None]


def make(name: str, config: DetectorConfig, is_honeytoken: Callable[[str], bool]) -> Detector:
    """A fresh detector of ``DETECTOR_NAMES``."""
    if name == "honeytoken":
        return HoneytokenDetector(config, is_honeytoken)
    kinds: dict[str, Callable[[DetectorConfig], Detector]] = {
        "rate": RateDetector,
        "bulk": BulkDetector,
        "enumeration": EnumerationDetector,
        "failed_burst": FailedBurstDetector,
        "unusual_time": UnusualTimeDetector,
        "new_source": NewSourceDetector,
        "first_category": FirstCategoryDetector,
        "emergency": EmergencyDetector,
    }
    return kinds[name](config)


def fields(alert: Alert) -> dict[str, object]:
    """Every field of an alert (details included), for comparison."""
    return dataclasses.asdict(alert)


def whole(detector: Detector, events: Sequence[AccessEvent]) -> Indexed:
    assert isinstance(detector, BatchDetector)
    return [(index, fields(alert)) for index, alert in detector.observe_many(events)]


def sliced(detector: Detector, events: Sequence[AccessEvent], seed: int) -> Indexed:
    """``observe_many`` over consecutive random slices of 1..500 events (global indexes)."""
    assert isinstance(detector, BatchDetector)
    rng = random.Random(seed)
    found: Indexed = []
    start = 0
    calls = 0
    while start < len(events):
        end = min(len(events), start + rng.randint(1, 500))
        found.extend(
            (start + index, fields(alert))
            for index, alert in detector.observe_many(events[start:end])
        )
        start = end
        calls += 1
    assert calls > 10  # really sliced
    return found


def one_by_one(detector: Detector, events: Sequence[AccessEvent]) -> Indexed:
    return [
        (index, fields(alert))
        for index, event in enumerate(events)
        for alert in detector.observe(event)
    ]


def by_detector(indexed: Indexed) -> dict[str, int]:
    counts = dict.fromkeys(DETECTOR_NAMES, 0)
    for _, alert in indexed:
        counts[str(alert["detector"])] += 1
    return counts


@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_the_set_gives_the_same_alerts_in_one_call_in_slices_and_event_by_event(
    events: list[AccessEvent], is_honeytoken: Callable[[str], bool], config_name: str
) -> None:
    config = CONFIGS[config_name]
    single = DetectorSet.default(config, is_honeytoken)
    expected = one_by_one(single, events)
    counts = dict(single.counts)

    # the data set makes every detector speak, so no comparison below is vacuous
    assert counts == by_detector(expected)
    assert all(counts[name] > 0 for name in DETECTOR_NAMES), counts

    batch = DetectorSet.default(config, is_honeytoken)
    assert whole(batch, events) == expected
    assert batch.counts == counts

    for seed in SEEDS:
        detectors = DetectorSet.default(config, is_honeytoken)
        assert sliced(detectors, events, seed) == expected, f"slicing seed {seed}"
        assert detectors.counts == counts, f"slicing seed {seed}"


@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("name", DETECTOR_NAMES)
def test_each_detector_alone_gives_the_same_alerts_in_one_call_in_slices_and_event_by_event(
    events: list[AccessEvent],
    is_honeytoken: Callable[[str], bool],
    config_name: str,
    name: str,
) -> None:
    config = CONFIGS[config_name]
    expected = one_by_one(make(name, config, is_honeytoken), events)
    assert expected, f"{name} raised nothing on the data set"
    assert {alert["detector"] for _, alert in expected} == {name}

    assert whole(make(name, config, is_honeytoken), events) == expected
    for seed in SEEDS:
        fresh = make(name, config, is_honeytoken)
        assert sliced(fresh, events, seed) == expected, f"slicing seed {seed}"

    # the set's alerts of this detector are exactly the detector's own, in the same order
    merged = whole(DetectorSet.default(config, is_honeytoken), events)
    assert [item for item in merged if item[1]["detector"] == name] == expected


@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_the_set_orders_alerts_by_event_then_detector(
    events: list[AccessEvent], is_honeytoken: Callable[[str], bool], config_name: str
) -> None:
    config = CONFIGS[config_name]
    by_event: dict[int, dict[str, Indexed]] = {}
    for name in DETECTOR_NAMES:
        for item in whole(make(name, config, is_honeytoken), events):
            by_event.setdefault(item[0], {}).setdefault(name, []).append(item)
    expected: Indexed = []
    for index in range(len(events)):
        for name in DETECTOR_NAMES:
            expected.extend(by_event.get(index, {}).get(name, []))
    merged = whole(DetectorSet.default(config, is_honeytoken), events)
    assert merged == expected
    # some event raised alerts from two detectors (else the order tested nothing)
    per_event: dict[int, set[str]] = {}
    for index, alert in merged:
        per_event.setdefault(index, set()).add(str(alert["detector"]))
    assert any(len(names) > 1 for names in per_event.values())


def test_a_set_refuses_the_same_detector_instance_twice() -> None:
    rate = RateDetector(DEFAULT)
    with pytest.raises(ConfigError, match="twice"):
        DetectorSet([rate, EmergencyDetector(DEFAULT), rate])
    # two instances of one class are two detectors (no shared state)
    DetectorSet([RateDetector(DEFAULT), EmergencyDetector(DEFAULT)])


class PlainDetectorDouble:
    """Test double: a plain ``Detector`` (``observe`` only, no ``observe_many``).

    It records every event it is given and raises two alerts (``first``, ``second``) on
    every emergency or honeytoken-path access, the events on which the real emergency and
    honeytoken detectors also alert, so that one event raises alerts from several detectors.
    """

    name = "double"

    def __init__(self, is_honeytoken: Callable[[str], bool]) -> None:
        self.seen: list[AccessEvent] = []
        self._is_honeytoken = is_honeytoken

    def observe(self, event: AccessEvent) -> list[Alert]:
        self.seen.append(event)
        if not (event.emergency or (event.path and self._is_honeytoken(event.path))):
            return []
        return [
            Alert(
                detector=self.name,
                severity="info",
                time=event.time,
                summary=f"{order} look at {event.request_id}",
                key=f"{order}|{event.request_id}",
                details={"request_id": event.request_id, "seen": len(self.seen)},
            )
            for order in ("first", "second")
        ]


def mixed_set(is_honeytoken: Callable[[str], bool]) -> tuple[DetectorSet, PlainDetectorDouble]:
    double = PlainDetectorDouble(is_honeytoken)
    detectors: list[Detector] = [
        EmergencyDetector(DEFAULT),
        double,
        HoneytokenDetector(DEFAULT, is_honeytoken),
        RateDetector(DEFAULT),
        FirstCategoryDetector(DEFAULT),
    ]
    return DetectorSet(detectors), double


def test_a_plain_detector_in_a_set_sees_every_event_once_in_order(
    events: list[AccessEvent], is_honeytoken: Callable[[str], bool]
) -> None:
    assert not isinstance(PlainDetectorDouble(is_honeytoken), BatchDetector)

    reference, reference_double = mixed_set(is_honeytoken)
    expected = one_by_one(reference, events)  # the definition: event by event, detector order
    assert [id(e) for e in reference_double.seen] == [id(e) for e in events]

    for seed in (None, *SEEDS):
        detectors, double = mixed_set(is_honeytoken)
        found = whole(detectors, events) if seed is None else sliced(detectors, events, seed)
        assert [id(e) for e in double.seen] == [id(e) for e in events], f"seed {seed}"
        assert found == expected, f"seed {seed}"
        assert detectors.counts == reference.counts

    names = ["emergency", "double", "honeytoken", "rate", "first_category"]
    assert reference.counts["double"] > 0
    per_event: dict[int, list[tuple[str, str]]] = {}
    for index, alert in expected:
        per_event.setdefault(index, []).append((str(alert["detector"]), str(alert["summary"])))
    shared = 0
    for index, raised in per_event.items():
        order = [names.index(name) for name, _ in raised]
        assert order == sorted(order), f"event {index}: {raised}"
        doubles = [summary for name, summary in raised if name == "double"]
        if doubles:
            assert [s.split()[0] for s in doubles] == ["first", "second"]
        if len({name for name, _ in raised}) > 1 and doubles:
            shared += 1
    assert shared > 0  # the double's alerts met other detectors' on one event
    # merged in index order overall
    indexes = [index for index, _ in expected]
    assert indexes == sorted(indexes)
