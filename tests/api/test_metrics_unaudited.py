"""``medsecrets_alerts_unaudited_total``: alerts that never reached the audit trail.

Every alert is written to the audit trail by the dispatcher's ``on_alert`` hook. When the
hook's queue is full (a flood of alerts while it is slow: here, before the dispatcher's
threads run) an alert is dropped unaudited; it used to be counted in the dispatcher's
``hook_failures`` only, which no metric showed. The server's real parts: settings, the
core, the audit stack and the metrics built as ``server.runner`` builds them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from medsecrets.core.audit import AuditAdmin, AuditHook, NullAuditHook
from medsecrets.monitor.alert import Alert
from medsecrets.server.auditsetup import AuditStack, build_audit
from medsecrets.server.bootstrap import build_core
from medsecrets.server.config import load_settings
from medsecrets.server.telemetry import build_metrics
from medsecrets.store import SecretStore


def _unaudited(text: str) -> float:
    [family] = [
        f for f in text_string_to_metric_families(text) if f.name == "medsecrets_alerts_unaudited"
    ]
    assert family.type == "counter"
    [sample] = [s for s in family.samples if s.name == "medsecrets_alerts_unaudited_total"]
    return sample.value


def test_alerts_the_audit_hook_dropped_are_a_metric(tmp_path: Path) -> None:
    settings = load_settings(None, env={}, overrides={"data_dir": str(tmp_path), "dev": True})
    stacks: list[AuditStack] = []

    def audit(store: SecretStore) -> tuple[AuditHook, AuditAdmin]:
        stack = build_audit(settings, store)
        stacks.append(stack)
        return (stack.broker if stack.broker is not None else NullAuditHook()), stack

    core, _ = build_core(settings, audit=audit)
    [stack] = stacks
    try:
        metrics = build_metrics(core, stack)
        assert _unaudited(metrics.render().decode()) == 0.0
        dispatcher = stack.dispatcher
        assert dispatcher is not None
        # not started yet: the audit hook's queue (10,000, the last tenth kept for critical
        # alerts) fills, and the lesser alerts after it are dropped unaudited
        now = dt.datetime.now(dt.UTC)
        for i in range(9_005):
            dispatcher.raise_(
                Alert(detector="new_source", severity="medium", time=now, summary="s", key=f"{i}")
            )
        assert dispatcher.stats()["hook_failures"] == 5
        assert _unaudited(metrics.render().decode()) == 5.0
    finally:
        stack.stop()
        core.store.close()
