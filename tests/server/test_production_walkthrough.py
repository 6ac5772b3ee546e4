"""The production path, step by step as README.md and docs/*.md tell an operator.

No ``--dev``: a TOML configuration file (docs/configuration.md) with TLS from a throwaway CA,
four audit devices (a file with exported checkpoints, the database, syslog over TCP to a local
collector, and the SIEM forwarder to a local HTTP receiver with credentials in its URL), an
SMTP and a webhook alert channel to local receivers, and non-default monitor thresholds.

- ``test_shamir_production_walkthrough``: ``operator init`` with Shamir 5/3, production secrets
  provisioned, a least-privilege token for an application (``read`` on one category of one
  environment), reads with the CLI and the SDK over TLS (``MEDSECRETS_CACERT``, ``cacert=``),
  a burst of denied reads that trips ``failed_burst`` and reaches the SMTP server and the
  webhook (signed), ``audit verify`` (server side and offline with the public key and the
  exported checkpoints), ``audit search``, ``audit who-read``, ``alerts list``, ``audit
  devices``, ``/v1/sys/metrics`` with a Prometheus token; no token, share or secret value in
  the server log or any audit copy; then seal, restart, unseal with three other shares, and
  everything is still there.
- ``test_encrypted_audit_file_bootstrap``: an encrypted file device, in the documented order
  (a key-file seal; init and provision the key before the device names it), read back and
  verified with the key in a 0600 file.

Real processes and real local receivers; asynchronous deliveries (alerts, the SIEM, syslog)
are polled with generous deadlines, never timed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from medsecrets import Client
from medsecrets.monitor.channels import verify_webhook_signature
from medsecrets.testing.receivers import HttpReceiver, SmtpSink
from medsecrets.testing.serverproc import ServerProcess, TestCertificates
from tests.audit.test_syslog_device import Collector

DB = "medessence/production/database"
WEBHOOK_SECRET = "walkthrough-webhook-signing-secret"
SIEM_USER, SIEM_PASSWORD = "medsecrets", "siem-ingest-password-0123"
DEADLINE = 60.0  # a safety net for asynchronous deliveries, not a timing threshold


@pytest.fixture(scope="module")
def siem() -> Iterator[HttpReceiver]:
    with HttpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def syslog() -> Iterator[Collector]:
    collector = Collector("tcp")
    yield collector
    collector.close()


def wait_for(check: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Operator:
    """The operator's shell: ``medsecrets`` commands with MEDSECRETS_ADDR/CACERT/TOKEN set."""

    def __init__(self, server: ServerProcess, ca_file: str, cwd: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSECRETS_")}
        self.env |= {"MEDSECRETS_ADDR": server.addr, "MEDSECRETS_CACERT": ca_file}
        self.cwd = cwd

    def run(
        self, command: str, *, token: str | None = None, stdin: str | None = None, code: int = 0
    ) -> str:
        """``medsecrets COMMAND`` (split as a shell would); its stdout. Asserts the exit
        ``code``, and for a failure one ``error:`` line on stderr."""
        args = shlex.split(command)
        env = dict(self.env)
        if token is not None:
            env["MEDSECRETS_TOKEN"] = token
        done = subprocess.run(
            [sys.executable, "-m", "medsecrets", *args],
            env=env,
            cwd=self.cwd,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == code, (args, done.returncode, done.stderr)
        if code:  # every error: one line on stderr, no traceback
            assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
        return done.stdout

    def json(self, command: str, *, token: str | None = None) -> object:
        return json.loads(self.run(command + " -o json", token=token))


def write_config(path: Path, text: str) -> Path:
    """The configuration file, 0600 (it holds the webhook secret and the SIEM credentials)."""
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def start(base: Path, config: Path, certs: TestCertificates) -> ServerProcess:
    # the TLS files come from the configuration file: tell the harness the scheme
    server = ServerProcess(
        base / "data",
        dev=False,
        extra_args=["--config", str(config)],
        env={"MEDSECRETS_AUDIT_FILE": ""},  # only the configured devices
        ca_file=certs.ca_file,
        log_dir=base / "logs",
    )
    server.scheme = "https"
    server.start()
    return server


def production_config(
    base: Path,
    certs: TestCertificates,
    smtp_port: int,
    webhook: HttpReceiver,
    siem: HttpReceiver,
    syslog: Collector,
) -> str:
    siem_url = siem.base.replace("http://", f"http://{SIEM_USER}:{SIEM_PASSWORD}@")
    return f"""
data_dir = "{base / "data"}"
log_file = "{base / "logs" / "medsecrets.log"}"

[seal]
type = "shamir"

[tls]
cert_file = "{certs.cert_file}"
key_file = "{certs.key_file}"

[audit]
checkpoint_every = 10
checkpoint_export = "{base / "checkpoints" / "checkpoints.jsonl"}"

[[audit.device]]
type = "file"
name = "primary"
path = "{base / "audit" / "audit.jsonl"}"

[[audit.device]]
type = "database"
name = "db"

[[audit.device]]
type = "syslog"
address = "{syslog.address}"
required = false

[[audit.device]]
type = "http"
name = "siem"
url = "{siem_url}/ingest"
batch_size = 50

[monitor]
failed_denials = 3
failed_window = 600
rate_threshold = 40

[[alerts.channel]]
type = "webhook"
url = "{webhook.base}/medsecrets"
secret = "{WEBHOOK_SECRET}"

[[alerts.channel]]
type = "smtp"
host = "127.0.0.1"
port = {smtp_port}
starttls = false
sender = "medsecrets@hospital.test"
recipients = ["secops@hospital.test"]
"""


def unseal(op: Operator, shares: list[str]) -> None:
    for index, share in enumerate(shares, 1):
        out = op.run("operator unseal -", stdin=share + "\n")
        assert ("Unsealed." if index == 3 else f"{index} of 3") in out


def test_shamir_production_walkthrough(
    tmp_path: Path,
    certs: TestCertificates,
    smtp: tuple[SmtpSink, int],
    webhook: HttpReceiver,
    siem: HttpReceiver,
    syslog: Collector,
) -> None:
    config = write_config(
        tmp_path / "server.toml",
        production_config(tmp_path, certs, smtp[1], webhook, siem, syslog),
    )
    server = start(tmp_path, config, certs)
    try:
        op = Operator(server, certs.ca_file, tmp_path)
        # -- init (Shamir 5/3): shares and root token shown once; init leaves it unsealed
        init = op.json("operator init --shares 5 --threshold 3")
        assert isinstance(init, dict) and len(init["shares"]) == 5 and init["threshold"] == 3
        root: str = init["root_token"]
        status = op.json("operator status")
        assert isinstance(status, dict)
        assert (status["sealed"], status["seal_type"]) == (False, "shamir")

        # -- production secrets: generated categories, then one with provided fields
        op.run("provision --env production --category auth", token=root)
        provided = tmp_path / "provided.json"
        provided.write_text(
            json.dumps(
                {
                    "database": {
                        "username": "ehr_app",
                        "host": "db.test",
                        "port": "5432",
                        "database": "ehr",
                    }
                }
            )
        )
        op.run(f"provision --env production --category database --provided {provided}", token=root)
        password = op.run(f"secrets get {DB} --field password", token=root).strip()
        assert len(password) >= 16

        # -- a least-privilege token for the application: read on one category only
        app = op.run(
            f"token create --path {DB} --capability read --ttl 1h"
            " --display-name ehr-app --field token",
            token=root,
        ).strip()
        assert op.run(f"secrets get {DB} --field username", token=app) == "ehr_app\n"
        sdk_env = {
            "MEDSECRETS_ADDR": server.addr,
            "MEDSECRETS_TOKEN": app,
            "MEDSECRETS_CACERT": certs.ca_file,
        }
        with Client(env=sdk_env) as client:
            assert client.get(DB).fields["password"] == password
        with Client(server.addr, app, cacert=certs.ca_file) as client:
            assert client.get(DB).fields["host"] == "db.test"

        # -- a denied burst: 3 denials in the window trip failed_burst (non-default threshold)
        for path in (
            "medessence/production/auth",
            "medessence/staging/database",
            "medessence/production/medical-encryption",
        ):
            op.run(f"secrets get {path}", token=app, code=4)
        op.run(f"secrets put {DB} -", stdin='{"username": "x"}', token=app, code=4)

        def alerted(messages: list[bytes]) -> bool:
            return any(b"failed_burst" in m for m in messages)

        wait_for(lambda: alerted([r.body for r in webhook.requests]), "the webhook alert")
        hook = next(r for r in webhook.requests if b"failed_burst" in r.body)
        assert verify_webhook_signature(
            WEBHOOK_SECRET.encode(),
            hook.headers["X-Medsecrets-Timestamp"],
            hook.body,
            hook.headers["X-Medsecrets-Signature"],
        )
        wait_for(lambda: alerted([str(m).encode() for m in smtp[0].messages]), "the e-mail")
        assert smtp[0].envelopes[0] == ("medsecrets@hospital.test", ["secops@hospital.test"])

        def delivered() -> bool:
            alerts = op.json("alerts list", token=root)
            assert isinstance(alerts, dict)
            burst = [a for a in alerts["alerts"] if a["detector"] == "failed_burst"]
            return bool(burst) and all(
                a["delivery"][c]["status"] == "sent" for a in burst for c in ("webhook", "smtp")
            )

        wait_for(delivered, "alerts list showing the deliveries sent")

        # -- the audit trail: every device up, verified, searchable
        devices = op.json("audit devices", token=root)
        assert isinstance(devices, dict)
        assert {d["name"]: d["up"] for d in devices["devices"]} == {
            "primary": True,
            "db": True,
            "syslog": True,
            "siem": True,
        }
        for device in ("primary", "db"):
            assert f"ok: device {device}:" in op.run(f"audit verify --device {device}", token=root)
        (tmp_path / "audit-signing.pub").write_text(op.run("audit public-key", token=root))
        log = tmp_path / "audit" / "audit.jsonl"
        exported = tmp_path / "checkpoints" / "checkpoints-primary.jsonl"
        offline = op.run(
            f"audit verify {log} --public-key {tmp_path}/audit-signing.pub"
            f" --checkpoints {exported} --from-start"
        )
        assert "the chain is intact" in offline and "all consistent with the log" in offline
        denied = op.json("audit search --outcome denied --principal ehr-app", token=root)
        assert isinstance(denied, dict) and len(denied["records"]) == 4
        reads = op.json(f"audit who-read {DB}", token=root)
        assert isinstance(reads, dict)
        assert [r["principal"] for r in reads["reads"]] == ["root", "ehr-app", "ehr-app", "ehr-app"]
        found = op.json("audit search --kind alert", token=root)
        assert isinstance(found, dict) and found["records"]

        # -- the SIEM (basic auth from the URL's credentials) and syslog get the same trail
        basic = "Basic " + base64.b64encode(f"{SIEM_USER}:{SIEM_PASSWORD}".encode()).decode()

        def shipped(operation: bytes) -> bool:
            return any(operation in r.body for r in siem.requests)

        wait_for(lambda: shipped(b'"failed_burst"'), "the alert record at the SIEM")
        assert {r.headers["Authorization"] for r in siem.requests} == {basic}
        syslogged = syslog.take(20)
        assert all(b"medsecrets" in m for m in syslogged)

        # -- metrics for a Prometheus scraper with a token of its own
        scraper = op.run(
            "token create -p sys/metrics -c read --ttl 7d --field token", token=root
        ).strip()
        with httpx.Client(verify=ssl.create_default_context(cafile=certs.ca_file)) as http:
            metrics = http.get(
                f"{server.addr}/v1/sys/metrics", headers={"Authorization": f"Bearer {scraper}"}
            )
            assert metrics.status_code == 200
            refused = http.get(
                f"{server.addr}/v1/sys/metrics", headers={"Authorization": f"Bearer {app}"}
            )
            assert refused.status_code == 403
        assert 'medsecrets_audit_device_up{device="siem"} 1.0' in metrics.text
        bursts = re.search(
            r'^medsecrets_anomalies_total\{detector="failed_burst"\} (\S+)$', metrics.text, re.M
        )
        assert bursts is not None and float(bursts.group(1)) >= 1

        # -- nothing secret in the log or any copy of the trail
        secrets = [root, app, scraper, password, *init["shares"]]
        copies = {
            "server log": (tmp_path / "logs" / "medsecrets.log").read_bytes()
            + server.log_path.read_bytes(),
            "audit file": (tmp_path / "audit" / "audit.jsonl").read_bytes(),
            "siem": b"".join(r.body for r in siem.requests),
            "syslog": b"".join(syslogged),
        }
        for where, text in copies.items():
            for secret in secrets:
                assert secret.encode() not in text, where
        assert SIEM_PASSWORD.encode() not in copies["server log"]
        assert b"other users may read" not in copies["server log"]  # the file is 0600
        assert b"in clear" not in copies["server log"]  # every receiver is on loopback
        assert WEBHOOK_SECRET.encode() not in copies["server log"]

        # -- emergency seal, restart, unseal with three other holders' shares
        assert "Sealed." in op.run("operator seal", token=root)
        op.run(f"secrets get {DB}", token=app, code=5)
        server.restart()
        status = op.json("operator status")
        assert isinstance(status, dict) and status["sealed"] is True
        op.run("alerts list", token=root, code=5)
        unseal(op, [init["shares"][4], init["shares"][2], init["shares"][0]])
        assert op.run(f"secrets get {DB} --field username", token=app) == "ehr_app\n"
        alerts = op.json("alerts list", token=root)
        assert isinstance(alerts, dict)
        assert {a["detector"] for a in alerts["alerts"]} == {"failed_burst"}
        reads = op.json(f"audit who-read {DB}", token=root)
        assert isinstance(reads, dict) and len(reads["reads"]) == 5
        for device in ("primary", "db"):
            op.run(f"audit verify --device {device}", token=root)
    finally:
        server.stop()


def test_encrypted_audit_file_bootstrap(tmp_path: Path, certs: TestCertificates) -> None:
    """docs/audit.md "Encryption at rest": a key-file seal; the key exists before the device
    names it; the lines written since are sealed; read and verified with the key."""
    audit_file = tmp_path / "audit" / "audit.jsonl"
    device = f'[[audit.device]]\ntype = "file"\nname = "primary"\npath = "{audit_file}"\n'
    head = f"""
data_dir = "{tmp_path / "data"}"
[seal]
type = "keyfile"
[tls]
cert_file = "{certs.cert_file}"
key_file = "{certs.key_file}"
"""
    config = write_config(tmp_path / "server.toml", head + device)
    server = start(tmp_path, config, certs)
    try:
        op = Operator(server, certs.ca_file, tmp_path)
        init = op.json(f"operator init --key-file {tmp_path}/unseal.key")
        assert isinstance(init, dict)
        root: str = init["root_token"]
        op.run("provision --env production --category medical-encryption", token=root)
        server.stop()
        key = "medessence/production/medical-encryption#audit_log_encryption_key"
        write_config(config, head + device + f'encrypt = "{key}"\n')
        server.start()  # the key-file seal unseals at start: the device reads its key
        op.run("secrets get medessence/production/medical-encryption", token=root)
        key_file = tmp_path / "audit.key"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # umask 077
        with os.fdopen(fd, "w") as handle:
            handle.write(
                op.run(
                    "secrets get medessence/production/medical-encryption"
                    " --field audit_log_encryption_key",
                    token=root,
                )
            )
        last = json.loads(audit_file.read_text().splitlines()[-1])
        assert "operation" not in last  # sealed: only prev, seq and hash in clear
        plain = op.run(f"audit read {audit_file} --key-file {key_file}")
        assert '"operation":"secrets.read"' in plain.replace(" ", "")
        verified = op.run(f"audit verify {audit_file} --key-file {key_file}")
        assert "the chain is intact" in verified
        op.run("audit verify --device primary", token=root)
        assert root.encode() not in audit_file.read_bytes()
    finally:
        server.stop()
