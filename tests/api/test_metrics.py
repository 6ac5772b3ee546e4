"""Metrics: request counters and histograms, scrape-time providers, label hygiene."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from medsecrets.api.metrics import (
    ALERTS,
    ALERTS_PENDING,
    ALERTS_UNAUDITED,
    ANOMALIES,
    AUDIT_DEVICE_FAILURES,
    AUDIT_DEVICE_UP,
    AUDIT_RECORDS,
    AUDIT_SPOOL_PENDING,
    CONTENT_TYPE,
    MONITOR_DROPPED_EVENTS,
    REQUEST_BUCKETS,
    SEALED,
    SECRETS_DUE_FOR_ROTATION,
    MetricDefinitionError,
    Metrics,
    MetricSpec,
    Sample,
    scalar,
)

REQUESTS = "medsecrets_http_requests"
DURATION = "medsecrets_http_request_duration_seconds"


def scrape(metrics: Metrics) -> dict[str, Metric]:
    """Render and parse the exposition (the parser raises on malformed output)."""
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


def series(family: Metric, name: str | None = None) -> dict[tuple[tuple[str, str], ...], float]:
    """{sorted labels: value} of the family's samples called ``name`` (default: any)."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in family.samples
        if name is None or s.name == name
    }


def request_counts(metrics: Metrics) -> dict[tuple[str, str, str], float]:
    family = scrape(metrics)[REQUESTS]
    return {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for s in family.samples
        if s.name == REQUESTS + "_total"
    }


def test_observed_requests_appear_with_their_labels() -> None:
    metrics = Metrics()
    metrics.observe_request("secrets.read", "GET", 200, 0.0004)
    metrics.observe_request("secrets.read", "GET", 200, 0.002)
    metrics.observe_request("secrets.read", "GET", 404, 0.001)
    metrics.observe_request("secrets.write", "PUT", 201, 3.0)

    assert request_counts(metrics) == {
        ("secrets.read", "GET", "200"): 2.0,
        ("secrets.read", "GET", "404"): 1.0,
        ("secrets.write", "PUT", "201"): 1.0,
    }
    families = scrape(metrics)
    assert families[REQUESTS].type == "counter"
    duration = families[DURATION]
    assert duration.type == "histogram"
    buckets = {
        (s.labels["route"], float(s.labels["le"])): s.value
        for s in duration.samples
        if s.name == DURATION + "_bucket"
    }
    # cumulative: 0.0004 <= 0.0005; 0.001 <= 0.001 (a bound is inclusive); 0.002 <= 0.0025
    assert buckets[("secrets.read", 0.0005)] == 1.0
    assert buckets[("secrets.read", 0.001)] == 2.0
    assert buckets[("secrets.read", 0.0025)] == 3.0
    assert buckets[("secrets.read", float("inf"))] == 3.0
    assert buckets[("secrets.write", 2.5)] == 0.0
    assert buckets[("secrets.write", 5.0)] == 1.0
    assert {le for (route, le) in buckets if route == "secrets.read"} == {
        *REQUEST_BUCKETS,
        float("inf"),
    }
    counts = series(duration, DURATION + "_count")
    sums = series(duration, DURATION + "_sum")
    assert counts == {(("route", "secrets.read"),): 3.0, (("route", "secrets.write"),): 1.0}
    assert sums[(("route", "secrets.read"),)] == pytest.approx(0.0034)
    assert sums[(("route", "secrets.write"),)] == pytest.approx(3.0)


def test_a_long_request_lands_in_the_inf_bucket_and_a_bad_duration_counts_as_zero() -> None:
    metrics = Metrics()
    metrics.observe_request("sys.rekey", "POST", 200, 60.0)
    metrics.observe_request("sys.health", "GET", 200, float("nan"))
    metrics.observe_request("sys.health", "GET", 200, -1.0)
    duration = scrape(metrics)[DURATION]
    buckets = series(duration, DURATION + "_bucket")
    assert buckets[(("le", "5.0"), ("route", "sys.rekey"))] == 0.0
    assert buckets[(("le", "+Inf"), ("route", "sys.rekey"))] == 1.0
    assert buckets[(("le", "0.0005"), ("route", "sys.health"))] == 2.0
    assert series(duration, DURATION + "_sum")[(("route", "sys.health"),)] == 0.0


SECRET_PATH = "medessence/production/database/primary"
TOKEN = "ms.Zx9-Qm2_aB7cD8eF9gH0iJ1kL2mN3oP4qR5sT6uV7wX"  # shaped like a token, not a real one


def test_labels_hold_route_names_only() -> None:
    metrics = Metrics()
    for route in (f"/v1/secrets/{SECRET_PATH}", SECRET_PATH, TOKEN, "-", "x" * 65, "Secrets.Read"):
        metrics.observe_request(route, "GET", 200, 0.001)
    metrics.observe_request("secrets.read", "BREW", 200, 0.001)
    metrics.observe_request("secrets.read", "GET", 1000, 0.001)
    metrics.observe_request("secrets.read", "GET", -5, 0.001)

    assert request_counts(metrics) == {
        ("other", "GET", "200"): 6.0,
        ("secrets.read", "other", "200"): 1.0,
        ("secrets.read", "GET", "0"): 2.0,
    }
    text = metrics.render().decode()
    for leaked in (SECRET_PATH, TOKEN, "/v1/", "BREW", "1000"):
        assert leaked not in text


def test_an_allow_list_of_routes_is_strict() -> None:
    metrics = Metrics(routes=["secrets.read", "openapi"])
    metrics.observe_request("secrets.read", "GET", 200, 0.001)
    metrics.observe_request("openapi", "GET", 200, 0.001)
    metrics.observe_request("secrets.write", "PUT", 200, 0.001)  # a route name, but not listed
    assert request_counts(metrics) == {
        ("secrets.read", "GET", "200"): 1.0,
        ("openapi", "GET", "200"): 1.0,
        ("other", "PUT", "200"): 1.0,
    }


def test_many_distinct_raw_routes_are_still_counted_exactly() -> None:
    # more raw label tuples than the cell cache keeps: the overflow is normalised per call
    metrics = Metrics()
    for i in range(5000):
        metrics.observe_request(f"/v1/secrets/app/{i}", "GET", 200, 0.001)
    metrics.observe_request("secrets.read", "GET", 200, 0.001)
    assert request_counts(metrics) == {
        ("other", "GET", "200"): 5000.0,
        ("secrets.read", "GET", "200"): 1.0,
    }


def test_concurrent_observations_are_all_counted() -> None:
    metrics = Metrics()
    per_thread = 5000
    routes = ("secrets.read", "secrets.write", "metadata.list", "sys.health")
    start = threading.Barrier(len(routes) * 2)

    def work(route: str) -> None:
        start.wait()
        for _ in range(per_thread):
            metrics.observe_request(route, "GET", 200, 0.001)

    threads = [threading.Thread(target=work, args=(r,)) for r in routes * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert request_counts(metrics) == {(r, "GET", "200"): 2.0 * per_thread for r in routes}
    counts = series(scrape(metrics)[DURATION], DURATION + "_count")
    assert counts == {(("route", r),): 2.0 * per_thread for r in routes}


class CountingProvider:
    """A provider that records how often it is called."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples
        self.calls = 0

    def __call__(self) -> Iterable[Sample]:
        self.calls += 1
        return list(self.samples)


def test_providers_are_called_at_scrape_time_only() -> None:
    metrics = Metrics()
    provider = CountingProvider([(("file",), 1.0), (("siem",), 0.0)])
    metrics.provide(AUDIT_DEVICE_UP, provider)
    for _ in range(100):
        metrics.observe_request("secrets.read", "GET", 200, 0.001)
    assert provider.calls == 0

    families = scrape(metrics)
    assert provider.calls == 1
    assert series(families["medsecrets_audit_device_up"]) == {
        (("device", "file"),): 1.0,
        (("device", "siem"),): 0.0,
    }
    provider.samples = [(("file",), 0.0)]
    families = scrape(metrics)
    assert provider.calls == 2
    assert series(families["medsecrets_audit_device_up"]) == {(("device", "file"),): 0.0}


def test_register_exposes_a_counter_under_its_given_name() -> None:
    metrics = Metrics()
    metrics.register(
        "medsecrets_alerts_total",
        "counter",
        "Alert deliveries.",
        ["channel", "status"],
        lambda: [(("smtp", "sent"), 3), (("webhook", "failed"), 1)],
    )
    text = metrics.render().decode()
    assert 'medsecrets_alerts_total{channel="smtp",status="sent"} 3.0' in text
    family = scrape(metrics)["medsecrets_alerts"]
    assert family.type == "counter"
    assert family.documentation == "Alert deliveries."


def test_every_standard_family_renders_and_parses() -> None:
    metrics = Metrics()
    sealed = {"value": True}
    metrics.provide(SEALED, scalar(lambda: sealed["value"]))
    metrics.provide(AUDIT_DEVICE_UP, lambda: [(("file",), 1.0)])
    metrics.provide(AUDIT_DEVICE_FAILURES, lambda: [(("file",), 2.0)])
    metrics.provide(AUDIT_RECORDS, lambda: [(("file",), 120.0)])
    metrics.provide(AUDIT_SPOOL_PENDING, lambda: [(("siem",), 7.0)])
    metrics.provide(ANOMALIES, lambda: [(("rate",), 4.0), (("honeytoken",), 1.0)])
    metrics.provide(MONITOR_DROPPED_EVENTS, scalar(lambda: 0))
    metrics.provide(ALERTS, lambda: [(("slack", "sent"), 5.0)])
    metrics.provide(ALERTS_PENDING, lambda: [(("slack",), 2.0)])
    metrics.provide(ALERTS_UNAUDITED, scalar(lambda: 1))

    families = scrape(metrics)
    assert families["medsecrets_alerts_unaudited"].type == "counter"
    assert series(families["medsecrets_alerts_unaudited"]) == {(): 1.0}
    assert families["medsecrets_alert_deliveries_pending"].type == "gauge"
    assert series(families["medsecrets_alert_deliveries_pending"]) == {(("channel", "slack"),): 2.0}
    assert series(families["medsecrets_sealed"]) == {(): 1.0}
    assert families["medsecrets_audit_device_failures"].type == "counter"
    assert series(families["medsecrets_audit_spool_pending"]) == {(("device", "siem"),): 7.0}
    assert series(families["medsecrets_anomalies"], "medsecrets_anomalies_total") == {
        (("detector", "rate"),): 4.0,
        (("detector", "honeytoken"),): 1.0,
    }
    assert series(families["medsecrets_monitor_dropped_events"]) == {(): 0.0}
    # rotation is not there until something provides it
    assert "medsecrets_secrets_due_for_rotation" not in families
    sealed["value"] = False
    metrics.provide(SECRETS_DUE_FOR_ROTATION, scalar(lambda: 3))
    families = scrape(metrics)
    assert series(families["medsecrets_sealed"]) == {(): 0.0}
    assert series(families["medsecrets_secrets_due_for_rotation"]) == {(): 3.0}


def failing() -> Iterable[Sample]:
    raise RuntimeError("provider broke")


@pytest.mark.parametrize(
    "provider",
    [
        failing,
        lambda: [(("file", "extra"), 1.0)],  # too many label values
        lambda: [((), 1.0)],  # too few
        lambda: [((7,), 1.0)],  # not a string
        lambda: [(("file",), 1.0), (("file",), 2.0)],  # one series twice
        lambda: [(("file",), "not a number")],
    ],
    ids=["raises", "extra-label", "missing-label", "non-string", "duplicate", "bad-value"],
)
def test_a_bad_provider_costs_only_its_own_family(
    provider: object, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    metrics.provide(SEALED, scalar(lambda: False))
    metrics.register("medsecrets_broken", "gauge", "Broken.", ["device"], provider)  # type: ignore[arg-type]
    metrics.provide(AUDIT_DEVICE_UP, lambda: [(("file",), 1.0)])
    metrics.observe_request("secrets.read", "GET", 200, 0.001)

    with caplog.at_level(logging.WARNING, logger="medsecrets.metrics"):
        families = scrape(metrics)
    [record] = [r for r in caplog.records if r.name == "medsecrets.metrics"]
    assert "medsecrets_broken" not in families
    assert series(families["medsecrets_sealed"]) == {(): 0.0}
    assert series(families["medsecrets_audit_device_up"]) == {(("device", "file"),): 1.0}
    assert series(families[REQUESTS], REQUESTS + "_total") == {
        (("method", "GET"), ("route", "secrets.read"), ("status", "200")): 1.0
    }
    assert record.__dict__["metric"] == "medsecrets_broken"
    assert record.exc_info is not None


def test_a_provider_that_recovers_is_back_on_the_next_scrape() -> None:
    metrics = Metrics()
    state = {"broken": True}

    def flaky() -> Iterable[Sample]:
        if state["broken"]:
            raise OSError("device unreachable")
        return [((), 1.0)]

    metrics.register("medsecrets_flaky", "gauge", "Flaky.", [], flaky)
    assert "medsecrets_flaky" not in scrape(metrics)
    state["broken"] = False
    assert series(scrape(metrics)["medsecrets_flaky"]) == {(): 1.0}


@pytest.mark.parametrize(
    ("spec", "rule"),
    [
        (MetricSpec("medsecrets bad", "gauge", "x"), "not a Prometheus name"),
        (MetricSpec("medsecrets_x", "summary", "x"), "kind"),  # type: ignore[arg-type]
        (MetricSpec("medsecrets_events", "counter", "x"), "_total"),
        (MetricSpec("medsecrets_x", "gauge", "x", ("a", "a")), "repeats"),
        (MetricSpec("medsecrets_x", "gauge", "x", ("bad-label",)), "bad label"),
        (MetricSpec("medsecrets_x", "gauge", "x", ("__reserved",)), "bad label"),
        (MetricSpec("medsecrets_http_requests_total", "counter", "x"), "registered already"),
        (MetricSpec("medsecrets_http_request_duration_seconds_count", "gauge", "x"), "already"),
    ],
)
def test_malformed_or_clashing_registrations_are_refused(spec: MetricSpec, rule: str) -> None:
    metrics = Metrics()
    with pytest.raises(MetricDefinitionError, match=rule):
        metrics.provide(spec, lambda: [])


def test_a_name_can_be_registered_once() -> None:
    metrics = Metrics()
    metrics.provide(ANOMALIES, lambda: [])
    with pytest.raises(MetricDefinitionError, match="registered already"):
        metrics.register("medsecrets_anomalies_total", "counter", "again", ["detector"], list)
    # a gauge whose series would clash with the counter's is refused too
    with pytest.raises(MetricDefinitionError, match="registered already"):
        metrics.register("medsecrets_anomalies", "gauge", "clash", [], list)


def test_two_instances_are_independent() -> None:
    first, second = Metrics(), Metrics()
    first.observe_request("secrets.read", "GET", 200, 0.001)
    first.provide(SEALED, scalar(lambda: True))
    second.provide(SEALED, scalar(lambda: False))  # same name, other instance: allowed
    second.observe_request("sys.health", "GET", 200, 0.001)

    assert request_counts(first) == {("secrets.read", "GET", "200"): 1.0}
    assert request_counts(second) == {("sys.health", "GET", "200"): 1.0}
    assert series(scrape(first)["medsecrets_sealed"]) == {(): 1.0}
    assert series(scrape(second)["medsecrets_sealed"]) == {(): 0.0}
    assert first.registry is not second.registry


def test_an_empty_instance_renders_valid_exposition() -> None:
    families = scrape(Metrics())
    assert families[REQUESTS].samples == []
    assert families[DURATION].samples == []


def test_content_type_is_the_text_format() -> None:
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")
