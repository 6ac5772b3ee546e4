"""The audit trail and the monitor in a real server process.

- alerts raised online (rate detector) reach a local webhook (HMAC-signed)
  and a local SMTP server, are listed by ``GET /v1/sys/alerts``, and are
  themselves written to the audit trail;
- ``/v1/sys/metrics`` counts requests and reports the audit device;
- canary values written, read, generated and hashed over HTTP appear in no
  audit record and no log line, in raw, base64, hex or JSON-escaped form, and
  the HMACs in the records match ``POST /v1/sys/audit/hash``;
- the audit file of the run verifies clean (chain and signed checkpoints).

Every test runs twice: with the file device written in the server process and
in an audit process (``audit.process = true``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from medsecrets.audit.checkpoint import load_public_key, read_checkpoints
from medsecrets.audit.verify import verify_files
from medsecrets.monitor.channels import verify_webhook_signature
from medsecrets.testing.receivers import HttpReceiver, SmtpSink
from medsecrets.testing.serverproc import ServerProcess
from tests.support.leaks import leak_forms

P = "medessence/development/ai-providers"
CANARY = "sk-Canary0e2eAuditZ9q7Xw3Lm5Np8Rt1Vb4"
WEBHOOK_SECRET = "e2e-webhook-signing-secret-0123"


@pytest.fixture(scope="module", params=[False, True], ids=["in-process", "audit-process"])
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    smtp: tuple[SmtpSink, int],
    webhook: HttpReceiver,
) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("audit-e2e")
    config = base / "server.toml"
    config.write_text(
        f"""
[audit]
checkpoint_every = 10
process = {str(request.param).lower()}

[monitor]
rate_threshold = 5

[[alerts.channel]]
type = "webhook"
url = "{webhook.base}/alerts"
secret = "{WEBHOOK_SECRET}"

[[alerts.channel]]
type = "smtp"
host = "127.0.0.1"
port = {smtp[1]}
starttls = false
sender = "medsecrets@example.test"
recipients = ["secops@example.test"]
""",
        encoding="utf-8",
    )
    with ServerProcess(
        base / "data", extra_args=["--config", str(config)], log_dir=base / "logs"
    ) as proc:
        yield proc


def headers(server: ServerProcess) -> dict[str, str]:
    assert server.token is not None
    return {"X-Medsecrets-Token": server.token}


def wait_for(check: object, what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def audit_file(server: ServerProcess) -> Path:
    return server.data_dir / "audit" / "audit.jsonl"


def test_rate_alert_is_delivered_listed_and_audited(
    server: ServerProcess, webhook: HttpReceiver, smtp: tuple[SmtpSink, int]
) -> None:
    h = headers(server)
    for _ in range(8):
        assert httpx.get(f"{server.addr}/v1/secrets/{P}", headers=h).status_code == 200
    wait_for(lambda: webhook.requests, "the webhook alert")
    hook = webhook.requests[0]
    assert verify_webhook_signature(
        WEBHOOK_SECRET.encode(),
        hook.headers["X-Medsecrets-Timestamp"],
        hook.body,
        hook.headers["X-Medsecrets-Signature"],
    )
    assert json.loads(hook.body)["detector"] == "rate"
    wait_for(lambda: smtp[0].messages, "the alert e-mail")
    assert "rate" in str(smtp[0].messages[0]["Subject"])
    listed = httpx.get(f"{server.addr}/v1/sys/alerts", headers=h).json()["alerts"]
    assert any(a["detector"] == "rate" for a in listed)

    def audited() -> bool:
        text = audit_file(server).read_text()
        return any(json.loads(line).get("kind") == "alert" for line in text.splitlines() if line)

    wait_for(audited, "the alert record")


def test_metrics_count_requests_and_report_the_device(server: ServerProcess) -> None:
    h = headers(server)
    httpx.get(f"{server.addr}/v1/sys/health")
    assert httpx.get(f"{server.addr}/v1/sys/metrics").status_code == 401
    text = httpx.get(f"{server.addr}/v1/sys/metrics", headers=h).text
    assert 'medsecrets_http_requests_total{method="GET",route="sys.health",status="200"}' in text
    assert 'medsecrets_audit_device_up{device="file"} 1.0' in text
    assert "medsecrets_sealed 0.0" in text
    assert server.token not in text
    # the detectors' series in both modes (in the audit process or in the server process),
    # every detector from the start
    for detector in ("rate", "honeytoken", "failed_burst"):
        assert f'medsecrets_anomalies_total{{detector="{detector}"}}' in text
    assert "medsecrets_monitor_dropped_events_total" in text
    for channel in ("webhook", "smtp"):  # nothing stuck: every delivery sent or given up
        assert f'medsecrets_alert_deliveries_pending{{channel="{channel}"}} 0.0' in text

    def scrapes_audited() -> bool:  # scrapes serve no secret: their records are not awaited
        records = [json.loads(x) for x in audit_file(server).read_text().splitlines() if x]
        scrapes = [
            r for r in records if r["kind"] == "response" and r["operation"] == "sys.metrics"
        ]
        return {r["outcome"] for r in scrapes} >= {"denied", "success"}

    wait_for(scrapes_audited, "a record of every scrape")


def test_no_canary_in_audit_or_logs_and_hmacs_match(server: ServerProcess) -> None:
    h = headers(server)
    put = httpx.put(
        f"{server.addr}/v1/secrets/{P}",
        headers=h,
        json={"fields": {"openai_api_key": CANARY}},
    )
    assert put.status_code == 200, put.text
    assert (
        httpx.get(f"{server.addr}/v1/secrets/{P}", headers=h).json()["fields"]["openai_api_key"]
        == CANARY
    )
    generated = httpx.post(f"{server.addr}/v1/generate", headers=h, json={"kind": "token"})
    secret_values = [CANARY, generated.json()["value"], server.token]
    created = httpx.post(
        f"{server.addr}/v1/auth/token/create",
        headers=h,
        json={"paths": ["*"], "capabilities": ["read"], "ttl": 60},
    ).json()
    secret_values.append(created["token"])
    hashed = httpx.post(
        f"{server.addr}/v1/sys/audit/hash", headers=h, json={"input": CANARY}
    ).json()["hash"]

    def written() -> bool:
        return hashed in audit_file(server).read_text()

    wait_for(written, "the write record with the canary's HMAC")
    records = [json.loads(x) for x in audit_file(server).read_text().splitlines() if x]
    write = next(
        r for r in records if r["kind"] == "request" and r["operation"] == "secrets.write"
        and r["path"] == P and r["data"]["fields"].get("openai_api_key") == hashed
    )  # fmt: skip
    assert write["accessor"].startswith("hmac-sha256:")
    exposed = audit_file(server).read_bytes() + server.log_text().encode()
    for value in secret_values:
        assert value
        for form in leak_forms(str(value)):
            assert form not in exposed, "a secret value leaked into the audit trail or logs"


def test_the_audit_file_verifies_with_its_checkpoints(server: ServerProcess) -> None:
    h = headers(server)
    for _ in range(12):
        httpx.get(f"{server.addr}/v1/sys/health")
    key = httpx.get(f"{server.addr}/v1/sys/audit/public-key", headers=h).json()
    exported = server.data_dir / "audit" / "checkpoints.jsonl"
    wait_for(exported.exists, "an exported checkpoint")
    report = verify_files(
        [audit_file(server)],
        public_key=load_public_key(key["public_key_pem"]),
        checkpoints=read_checkpoints(exported),
    )
    assert report.ok, report.problem
    assert report.checkpoints_verified >= 1
