"""Review of the core's log line for an audit hook that raises: a refusal the broker makes
on purpose (no device configured, said once at start) is not logged again per request."""

from __future__ import annotations

import logging

import pytest

from medsecrets.audit.broker import AuditBroker
from medsecrets.auth.tokens import TokenStore
from medsecrets.clock import ManualClock
from medsecrets.core import Core, Request
from medsecrets.errors import AuditFailure
from medsecrets.store import SecretStore


def test_no_device_refusals_do_not_log_a_line_per_request(
    store: SecretStore, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = TokenStore(store.barrier, clock=clock)
    root = tokens.create_root()[0].reveal()
    core = Core(store, tokens, audit=AuditBroker([], prefix="medessence", keys=lambda n: None))
    with caplog.at_level(logging.WARNING, logger="medsecrets"):
        for _ in range(3):
            with pytest.raises(AuditFailure):
                core.handle(Request(method="GET", route="tokens.self", token=root))
        core.handle(Request(method="GET", route="sys.health"))  # exempt: served
    assert [r.getMessage() for r in caplog.records if r.name == "medsecrets.audit"] == []
