"""The issue's must-show: anomaly detection on a labelled synthetic data set.

Data: ``medsecrets.testing.anomalies.generate(SEED, normal=10_000, per_kind=200)``
(the generator does not import the detectors): 10,000 normal records and 200
anomaly episodes of each of the nine kinds (``KINDS``). An episode is one or
more records; the labels list the request ids of each.

Each format (ours, CloudTrail, Vault) is written by the generator to real
files, read back by ``monitor.sources`` and analysed by ``monitor.analyze``
with the default ``DetectorConfig`` and the catalog's ``is_honeytoken`` (the
default catalog with the generator's decoy paths as ``honeytokens``).

Definitions:

- an alert *references* an event when ``alert.details["request_id"]`` is the
  event's id (our request id, CloudTrail ``eventID``, Vault ``request.id``);
- an episode of kind K is *detected* when an alert of detector K (not merely
  any alert) references one of its events; ``recall(K)`` = detected episodes
  of K / episodes of K, required ``>= 0.95`` for every K;
- a *normal event* is a record in no episode; the false-positive rate
  ``FPR`` = normal events referenced by at least one alert of any detector /
  normal events, required ``<= 0.01``.

Two more tests show the measure can fail: deaf thresholds lose recall, and
an over-eager baseline exceeds the false-positive budget.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest

from medsecrets.monitor.alert import Alert
from medsecrets.monitor.analyze import analyze
from medsecrets.monitor.detectors import DetectorConfig, DetectorSet
from medsecrets.monitor.sources import event_from_record
from medsecrets.testing.anomalies import KINDS, generate, write

SEED = 20260401
NORMAL = 10_000
PER_KIND = 200

Records = list[dict[str, object]]
Labels = dict[str, object]


@pytest.fixture(scope="module")
def dataset() -> tuple[Records, Labels]:
    return generate(SEED, NORMAL, PER_KIND)


def episodes(labels: Labels) -> list[dict[str, object]]:
    found = labels["anomalies"]
    assert isinstance(found, list)
    return found


def score(
    records: Sequence[dict[str, object]], labels: Labels, alerts: Iterable[Alert]
) -> tuple[dict[str, float], float, int]:
    """``(recall per kind, FPR, normal events)`` (definitions in the module docstring)."""
    flagged: dict[str, set[str]] = {}
    for alert in alerts:
        flagged.setdefault(str(alert.details["request_id"]), set()).add(alert.detector)
    anomalous: set[str] = set()
    total: Counter[str] = Counter()
    detected: Counter[str] = Counter()
    for episode in episodes(labels):
        kind, ids = str(episode["kind"]), episode["ids"]
        assert isinstance(ids, list) and ids
        anomalous.update(ids)
        total[kind] += 1
        if any(kind in flagged.get(i, ()) for i in ids):
            detected[kind] += 1
    normal = [str(r["request_id"]) for r in records if r["request_id"] not in anomalous]
    false_positives = sum(1 for i in normal if i in flagged)
    recall = {kind: detected[kind] / total[kind] for kind in total}
    return recall, false_positives / len(normal), len(normal)


def test_the_data_set_is_what_the_issue_asks(dataset: tuple[Records, Labels]) -> None:
    records, labels = dataset
    kinds = Counter(str(e["kind"]) for e in episodes(labels))
    assert kinds == dict.fromkeys(KINDS, PER_KIND)
    anomalous = {i for e in episodes(labels) for i in e["ids"]}  # type: ignore[attr-defined]
    assert len(records) - len(anomalous) == NORMAL
    assert len({r["request_id"] for r in records}) == len(records)


@pytest.mark.parametrize("fmt", ["ours", "cloudtrail", "vault"])
def test_recall_and_false_positive_rate(
    tmp_path: Path,
    dataset: tuple[Records, Labels],
    is_honeytoken: Callable[[str], bool],
    fmt: str,
) -> None:
    records, labels = dataset
    files = write(tmp_path, fmt, records, labels)
    report = analyze(files, is_honeytoken=is_honeytoken)
    assert set(report.formats.values()) == {fmt}
    assert report.events == len(records)  # every record parsed back, nothing else
    recall, fpr, normal = score(records, labels, report.alerts)
    assert normal >= 10_000
    assert set(recall) == set(KINDS)
    low = {kind: value for kind, value in recall.items() if value < 0.95}
    assert not low, f"{fmt}: recall below 95%: {low}"
    assert fpr <= 0.01, f"{fmt}: false-positive rate {fpr:.2%}"


def detect(
    records: Records, config: DetectorConfig, is_honeytoken: Callable[[str], bool]
) -> list[Alert]:
    detectors = DetectorSet.default(config, is_honeytoken)
    alerts: list[Alert] = []
    for record in records:
        event = event_from_record(record)
        assert event is not None
        alerts.extend(detectors.observe(event))
    return alerts


def test_deaf_thresholds_lose_recall(
    dataset: tuple[Records, Labels], is_honeytoken: Callable[[str], bool]
) -> None:
    records, labels = dataset
    deaf = DetectorConfig(rate_limit=10_000, bulk_distinct=10_000, failed_denials=10_000)
    recall, _, _ = score(records, labels, detect(records, deaf, is_honeytoken))
    assert recall["rate"] == recall["bulk"] == recall["failed_burst"] == 0.0
    assert recall["emergency"] == 1.0


def test_an_over_eager_baseline_exceeds_the_false_positive_budget(
    dataset: tuple[Records, Labels], is_honeytoken: Callable[[str], bool]
) -> None:
    records, labels = dataset
    eager = DetectorConfig(unusual_min_days=100)  # every hour is "rarely used"
    _, fpr, _ = score(records, labels, detect(records, eager, is_honeytoken))
    assert fpr > 0.01


def test_the_generator_command_line_writes_logs_and_labels(tmp_path: Path) -> None:
    from medsecrets.testing.anomalies import main

    out = tmp_path / "vault"
    argv = ["--out", str(out), "--format", "vault", "--seed", "5", "--normal", "400"]
    assert main([*argv, "--per-kind", "3"]) == 0
    labels = json.loads((out / "labels.json").read_text())
    assert labels["files"] == ["vault_audit.log"]
    assert labels["format"] == "vault"
    assert Counter(e["kind"] for e in labels["anomalies"]) == dict.fromkeys(KINDS, 3)
    report = analyze(out / "vault_audit.log")
    assert report.events == 400 + sum(len(e["ids"]) for e in labels["anomalies"])
    again = tmp_path / "again"
    assert (
        main(
            [
                "--out",
                str(again),
                "--format",
                "vault",
                "--seed",
                "5",
                "--normal",
                "400",
                "--per-kind",
                "3",
            ]
        )
        == 0
    )
    assert (again / "vault_audit.log").read_bytes() == (out / "vault_audit.log").read_bytes()
