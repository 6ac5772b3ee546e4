"""Audit devices and alert channels from the config file, and the stack built from them."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from medsecrets.audit.remote import RemoteLane
from medsecrets.catalog.loader import default_catalog
from medsecrets.errors import AuditFailure, ConfigError
from medsecrets.monitor.detectors import DetectorConfig, DetectorSet
from medsecrets.schema.seal import KeyFileSealConfig
from medsecrets.server.auditconfig import (
    AuditDeviceSettings,
    device_headers,
    secret_settings,
    siem_headers,
)
from medsecrets.server.auditsetup import build_audit, device_settings
from medsecrets.server.config import Settings, load_settings
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore
from medsecrets.testing.receivers import SmtpSink
from medsecrets.testing.serverproc import free_port, write_test_certificates
from medsecrets.wire import from_wire, to_wire
from tests.monitor.test_channels import make_alert


def settings_from(tmp_path: Path, text: str, **overrides: object):  # type: ignore[no-untyped-def]
    config = tmp_path / "server.toml"
    config.write_text(f'tls_disable = true\ndata_dir = "{tmp_path / "data"}"\n' + text)
    return load_settings(str(config), env={}, overrides=overrides)


def test_devices_and_channels_are_parsed_with_type_defaults(tmp_path: Path) -> None:
    s = settings_from(
        tmp_path,
        f"""
[audit]
database = true
[[audit.device]]
type = "file"
name = "primary"
path = "{tmp_path / "a.jsonl"}"
max_bytes = 1000
[[audit.device]]
type = "syslog"
address = "udp://127.0.0.1:514"
[[alerts.channel]]
type = "smtp"
host = "127.0.0.1"
sender = "a@example.test"
recipients = ["b@example.test"]
""",
    )
    devices = {d.name: d for d in device_settings(s)}
    assert set(devices) == {"primary", "syslog", "database"}
    assert devices["primary"].required and devices["primary"].max_bytes == 1000
    assert devices["syslog"].required is False  # not durable: optional by default
    assert s.monitor.channels[0].recipients == ("b@example.test",)


SMTP = (
    '[[alerts.channel]]\ntype = "smtp"\nhost = "smtp.example"\nsender = "a@b.c"\n'
    'recipients = ["x@y.z"]\n'
)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[[audit.device]]\ntype = "file"\n', "audit.device[0].path"),
        ('[[audit.device]]\ntype = "tape"\n', "audit.device[0].type"),
        ('[[audit.device]]\ntype = "stdout"\ncolour = 1\n', "audit.device[0].colour"),
        ('[[audit.device]]\ntype = "stdout"\nurl = "http://x"\n', "audit.device[0].url"),
        ('[[audit.device]]\ntype = "http"\nurl = "ftp://siem"\n', "audit.device[0].url"),
        ('[[audit.device]]\ntype = "file"\npath = 3\n', "audit.device[0].path"),
        (
            '[[audit.device]]\ntype = "stdout"\n[[audit.device]]\ntype = "stdout"\n',
            "audit.device[1].name",
        ),
        ('[[alerts.channel]]\ntype = "webhook"\nurl = "https://x"\nsecret = "short"\n', "secret"),
        ('[[alerts.channel]]\ntype = "smtp"\nhost = "h"\n', "alerts.channel[0]"),
        ("[audit]\ndevice = 3\n", "audit.device"),
        ("[audit]\ntimeout = 9.0\n", "audit.timeout"),
        # what the device and channel classes refuse is refused here, naming the entry
        ('[[audit.device]]\ntype = "http"\nurl = "http://s/x"\nbatch_size = 0\n', "batch_size"),
        ('[[audit.device]]\ntype = "http"\nurl = "http://s"\nspool_max_bytes = 0\n', "spool_max"),
        ('[[audit.device]]\ntype = "http"\nurl = "http://[::1/x"\n', "audit.device[0].url"),
        ('[[alerts.channel]]\ntype = "slack"\nurl = "http://u:PW@[::1/x"\n', "channel[0].url"),
        ('[[alerts.channel]]\ntype = "slack"\nurl = "http://h:99999/x"\n', "channel[0].url"),
        # settings that make no sense are refused, naming the setting
        (
            '[[audit.device]]\ntype = "syslog"\naddress = "udp://127.0.0.1:514"\nrequired = true\n',
            "audit.device[0].required",
        ),
        ('[[audit.device]]\ntype = "syslog"\naddress = "udp://127.0.0.1:0"\n', "[0].address"),
        ('[[audit.device]]\ntype = "syslog"\naddress = "log"\n', "audit.device[0].address"),
        ('[[audit.device]]\ntype = "http"\nurl = "http://s"\nspool_max_bytes = 100\n', "spool_max"),
        ('[[audit.device]]\ntype = "http"\nurl = "http://s"\nbatch_max_bytes = 10\n', "batch_max"),
        (
            '[[audit.device]]\ntype = "http"\nname = "a"\nurl = "http://s"\nspool_dir = "/x/s"\n'
            '[[audit.device]]\ntype = "http"\nname = "b"\nurl = "http://t"\nspool_dir = "/x/s/"\n',
            "audit.device[1].spool_dir",
        ),
        # alerts cross a network only over https (a Slack URL's path is its token)
        (
            '[[alerts.channel]]\ntype = "slack"\nurl = "http://hooks.slack.com/s/T/B/x"\n',
            "alerts.channel[0].url",
        ),
        (
            '[[alerts.channel]]\ntype = "webhook"\nurl = "http://soc.example/m"\n'
            'secret = "0123456789abcdef"\n',
            "alerts.channel[0].url",
        ),
        (SMTP + "port = 70000\n", "alerts.channel[0].port"),
        (SMTP + 'username = "u"\n', "alerts.channel[0]"),
        (SMTP + 'username = "u"\npassword = "p"\nstarttls = false\n', "alerts.channel[0].starttls"),
    ],
)
def test_bad_entries_name_the_setting(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace("[", r"\[").replace("]", r"\]")):
        settings_from(tmp_path, text)


@pytest.mark.parametrize(
    ("entry", "setting"),
    [
        ('sender = "medsecrets@example.test\\r\\nBcc: attacker@evil.test"\nrecipients = ["b@x.y"]',
         "sender"),
        ('sender = "a@b.c"\nrecipients = ["secops@example.test", "a@b\\nX-Injected: 1"]',
         "recipients"),
        ('sender = "a@b.c"\nrecipients = ["not an address @ all"]', "recipients"),
        ('sender = "Med Secrets <a@b.c>"\nrecipients = ["b@x.y"]', "sender"),
        ('sender = "a@b.c"\nrecipients = ["b@x.y", 3]', "recipients"),
    ],
)  # fmt: skip
def test_smtp_addresses_must_be_plain_and_are_never_echoed(
    tmp_path: Path, entry: str, setting: str
) -> None:
    """Such addresses passed and the server started; every alert then failed on the channel
    with a bare ``ValueError``."""
    text = f'[[alerts.channel]]\ntype = "smtp"\nhost = "127.0.0.1"\n{entry}\n'
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, text)
    assert f"alerts.channel[0].{setting}" in str(caught.value)
    for value in ("attacker", "Injected", "not an address", "Med Secrets"):
        assert value not in str(caught.value)


def test_a_spool_dir_that_is_not_a_spool_is_refused_and_left_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    (shared / "other.txt").write_text("x")
    text = f'[[audit.device]]\ntype = "http"\nurl = "http://s/x"\nspool_dir = "{shared}"\n'
    with pytest.raises(ConfigError, match=r"audit\.device\[0\]\.spool_dir.*not an audit spool"):
        settings_from(tmp_path, text)
    assert shared.stat().st_mode & 0o777 == 0o755
    (shared / "other.txt").unlink()  # an empty directory, or a spool, is fine
    assert settings_from(tmp_path, text).audit.devices[0].spool_dir == str(shared)


def test_sensible_settings_are_accepted(tmp_path: Path) -> None:
    s = settings_from(
        tmp_path,
        '[[audit.device]]\ntype = "syslog"\naddress = "tcp://127.0.0.1:514"\nrequired = true\n'
        '[[audit.device]]\ntype = "http"\nurl = "http://s/x"\nspool_max_bytes = 1048576\n'
        "batch_max_bytes = 65536\n",
    )
    syslog, http = s.audit.devices
    assert syslog.required is True
    assert (http.spool_max_bytes, http.batch_max_bytes) == (1 << 20, 1 << 16)


def test_plain_http_alert_urls_are_accepted_only_to_loopback(tmp_path: Path) -> None:
    hosts = ("127.0.0.1:8080", "localhost", "[::1]:9000")
    text = "".join(
        f'[[alerts.channel]]\ntype = "slack"\nname = "s{i}"\nurl = "http://{host}/hook"\n'
        for i, host in enumerate(hosts)
    )
    text += '[[alerts.channel]]\ntype = "slack"\nname = "remote"\nurl = "https://hooks.example/x"\n'
    assert len(settings_from(tmp_path, text).monitor.channels) == 4
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, '[[alerts.channel]]\ntype = "slack"\nurl = "http://h/T0K3N"\n')
    assert "https" in str(caught.value) and "T0K3N" not in str(caught.value)


def test_secret_settings_are_never_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from(
            tmp_path,
            '[[alerts.channel]]\ntype = "webhook"\nurl = "http://x"\nsecret = 12345\n',
        )
    assert "12345" not in str(caught.value)


def test_audit_can_be_switched_off_only_in_dev_mode(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"audit\.enabled"):
        settings_from(tmp_path, "[audit]\nenabled = false\n")
    assert settings_from(tmp_path, "[audit]\nenabled = false\n", dev=True).audit.enabled is False


@pytest.fixture
def store(tmp_path: Path) -> SecretStore:
    s = SecretStore(SqliteStorage(tmp_path / "store.db"), catalog=default_catalog())
    s.initialize(KeyFileSealConfig(path=str(tmp_path / "unseal.key")))
    return s


def test_every_device_type_is_built_started_and_stopped(tmp_path: Path, store: SecretStore) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.bind(("127.0.0.1", 0))
        collector.settimeout(5)
        port = collector.getsockname()[1]
        s = settings_from(
            tmp_path,
            f"""
[audit]
database = true
stdout = true
[[audit.device]]
type = "file"
path = "{tmp_path / "audit.jsonl"}"
[[audit.device]]
type = "syslog"
address = "udp://127.0.0.1:{port}"
[[audit.device]]
type = "http"
url = "http://127.0.0.1:9/ingest"
required = false
spool_dir = "{tmp_path / "spool"}"
""",
        )
        stack = build_audit(s, store)
        assert stack.broker is not None
        stack.start()
        try:
            from medsecrets.core.request import Request

            ticket = stack.broker.on_response(
                Request(method="GET", route="sys.health", request_id="r1"), None, 200, None
            )
            assert ticket is not None
            ticket.wait()
            assert b"sys.health" in collector.recv(65536)
            names = {d.name for d in stack.devices().devices}
            assert names == {"file", "syslog", "http", "database", "stdout"}
            assert stack.search({"operation": "sys.health"}, 10).device == "database"
        finally:
            stack.stop()


def test_only_optional_devices_is_refused(tmp_path: Path, store: SecretStore) -> None:
    s = settings_from(tmp_path, "[audit]\nstdout = true\n")
    with pytest.raises(ConfigError, match="required"):
        build_audit(s, store)


def test_no_device_outside_dev_mode_refuses_requests(tmp_path: Path, store: SecretStore) -> None:
    from medsecrets.core.request import Request

    stack = build_audit(settings_from(tmp_path, ""), store)
    assert stack.broker is not None
    with pytest.raises(AuditFailure):
        stack.broker.on_request(Request(method="GET", route="secrets.read"), None)


def test_dev_mode_writes_a_file_device_in_the_data_dir(tmp_path: Path) -> None:
    s = settings_from(tmp_path, "", dev=True)
    (device,) = device_settings(s)
    assert device.path == str(tmp_path / "data" / "audit" / "audit.jsonl")


@pytest.mark.parametrize("process", [True, False], ids=["audit-process", "in-process"])
def test_the_detectors_get_the_configured_thresholds(
    tmp_path: Path, store: SecretStore, process: bool
) -> None:
    """Both places the detectors run (the audit process's settings, the server's monitor
    thread) get every ``monitor.*`` threshold."""
    text = f"""
[audit]
process = {str(process).lower()}
file = "{tmp_path / "audit.jsonl"}"
[monitor]
rate_threshold = 7
rate_category_limits = {{ database = 3 }}
warmup_events = 12
"""
    expected = DetectorConfig(rate_limit=7, rate_category_limits={"database": 3}, warmup_events=12)
    stack = build_audit(settings_from(tmp_path, text), store)
    assert stack.broker is not None
    if process:
        (lane,) = stack.broker.lanes
        assert isinstance(lane, RemoteLane) and lane.config.monitor is not None
        assert DetectorConfig(**lane.config.monitor["detectors"]) == expected  # type: ignore[arg-type]
    else:
        assert stack.detectors is not None

        def fingerprints(detectors: DetectorSet) -> dict[str, object]:
            return {name: doc["config"] for name, doc in detectors.state().items()}  # type: ignore[index]

        assert fingerprints(stack.detectors) == fingerprints(DetectorSet.default(expected))
        assert fingerprints(stack.detectors) != fingerprints(DetectorSet.default())


def test_workers_keep_no_detector_state(tmp_path: Path, store: SecretStore) -> None:
    """With ``workers > 1`` a worker's state could never be found again (its pid names
    it): none is kept, and no file piles up."""
    text = f'[audit]\nfile = "{tmp_path / "audit.jsonl"}"\n'
    kept = str(tmp_path / "data" / "monitor" / "detectors.state")
    for worker, where in ((True, None), (False, kept)):
        broker = build_audit(settings_from(tmp_path, text), store, worker=worker).broker
        assert broker is not None
        (lane,) = broker.lanes
        assert isinstance(lane, RemoteLane) and lane.config.monitor is not None
        assert lane.config.monitor["state_path"] == where


def test_smtp_channels_use_starttls_unless_told_not_to(
    tmp_path: Path, store: SecretStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An smtp entry without ``starttls`` sent every alert in clear, even to a server that
    offers STARTTLS. Here the server requires it: the alert arrives only over TLS."""
    certs = write_test_certificates(tmp_path / "certs")
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca_file))  # the default context trusts it
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(certs.cert_file, certs.key_file)
    sink, port = SmtpSink(), free_port()
    controller = Controller(
        sink, hostname="127.0.0.1", port=port, tls_context=server_tls, require_starttls=True
    )
    controller.start()
    text = f"""
[audit]
process = false
file = "{tmp_path / "audit.jsonl"}"
[[alerts.channel]]
type = "smtp"
host = "127.0.0.1"
port = {port}
sender = "medsecrets@example.test"
recipients = ["secops@example.test"]
"""
    try:
        settings = settings_from(tmp_path, text)
        assert settings.monitor.channels[0].starttls is True
        stack = build_audit(settings, store)
        assert stack.dispatcher is not None
        stack.start()
        try:
            stack.dispatcher.raise_(make_alert(summary="sent over TLS"))
            assert stack.dispatcher.flush(10)
        finally:
            stack.stop()
    finally:
        controller.stop()
    assert [m["Subject"] for m in sink.messages] == ["[medsecrets] high rate: sent over TLS"]
    assert (
        settings_from(tmp_path, SMTP + "starttls = false\n").monitor.channels[0].starttls is False
    )
    # a password to a remote server needs no starttls line now: it is the default
    remote = settings_from(tmp_path, SMTP + 'username = "u"\npassword = "p"\n')
    assert remote.monitor.channels[0].starttls is True


def test_the_alert_list_is_saved_when_the_stack_stops(tmp_path: Path, store: SecretStore) -> None:
    """``AuditStack.stop`` saves the dispatcher's alerts (``monitor.history``); the next
    stack over the same data directory lists them."""
    text = f'[audit]\nprocess = false\nfile = "{tmp_path / "audit.jsonl"}"\n'
    first = build_audit(settings_from(tmp_path, text), store)
    assert first.dispatcher is not None and first.history is not None
    first.start()
    first.dispatcher.raise_(make_alert(key="a", summary="saved by the saver thread"))
    deadline = time.monotonic() + 10
    while first.history.saves == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    first.dispatcher.raise_(make_alert(key="b", summary="saved at stop"))  # within its second
    first.stop()
    second = build_audit(settings_from(tmp_path, text), store)
    second.start()
    try:
        listed = second.alerts(10).alerts
    finally:
        second.stop()
    assert [a["summary"] for a in listed] == ["saved at stop", "saved by the saver thread"]


@pytest.mark.parametrize("value", ["nan", "inf", "-nan", "+inf"])
def test_a_device_number_that_is_not_finite_is_refused(tmp_path: Path, value: str) -> None:
    """TOML has nan and inf: rotate_interval = nan passed every check (nan < 0 is false) and
    silently meant 'never rotate'."""
    with pytest.raises(ConfigError) as caught:
        settings_from(
            tmp_path,
            f'[[audit.device]]\ntype = "file"\npath = "{tmp_path / "a.jsonl"}"\n'
            f"rotate_interval = {value}\n",
        )
    assert caught.value.message.startswith(
        "setting 'audit.device[0].rotate_interval' (config file server.toml): "
        "must be a finite number"
    )


# -- the SIEM device's trust, headers and timeout ---------------------------------------------

TOKEN = "Splunk hec-canary-5d1f0b"
SIEM = '[[audit.device]]\ntype = "http"\nurl = "https://siem.example/services/collector"\n'


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_test_certificates(tmp_path_factory.mktemp("siem-ca")).ca_file


def _headers_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "siem-headers"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_siem_trust_headers_and_timeout_are_parsed(tmp_path: Path, ca_file: str) -> None:
    extra = _headers_file(tmp_path, f"# tenant\n\nX-Tenant:  icu-7 \nX-Token: {TOKEN}\n")
    s = settings_from(
        tmp_path,
        SIEM + f'timeout = 2.5\nca_file = "{ca_file}"\nheaders_file = "{extra}"\n'
        f'headers = {{ Authorization = "{TOKEN}", "X-Source" = "medsecrets" }}\n',
    )
    (device,) = s.audit.devices
    assert (device.timeout, device.ca_file, device.headers_file) == (2.5, ca_file, str(extra))
    assert dict(device.headers) == {"Authorization": TOKEN, "X-Source": "medsecrets"}
    # the file's headers are read where the device is built (every worker), checked together
    assert siem_headers(device.url, device.headers, device.headers_file, "d") == {
        "Authorization": TOKEN,
        "X-Source": "medsecrets",
        "X-Tenant": "icu-7",
        "X-Token": TOKEN,
    }
    assert AuditDeviceSettings(type="http", name="x").timeout == 5.0  # the default


def test_siem_header_values_stay_out_of_reprs_and_are_named_as_secrets(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        f'tls_disable = true\ndata_dir = "{tmp_path / "data"}"\n'
        + SIEM
        + f'headers = {{ Authorization = "{TOKEN}" }}\n'
    )
    config.chmod(0o644)  # other users may read it: the start-up warning must name the headers
    s = load_settings(str(config), env={}, overrides={})
    assert TOKEN not in repr(s) and TOKEN not in repr(s.audit.devices[0])
    assert TOKEN not in str(s.audit.devices[0].headers)
    assert secret_settings(s.audit.devices, ()) == ["audit.device[0].headers"]
    (warning,) = [w for w in s.warnings if "holds secret settings" in w]
    assert "audit.device[0].headers" in warning and TOKEN not in warning


def test_siem_settings_reach_the_workers(tmp_path: Path, ca_file: str) -> None:
    """A worker gets the settings as JSON (``runner.worker_app``), not the config file."""
    extra = _headers_file(tmp_path, "X-Tenant: icu\n")
    s = settings_from(
        tmp_path,
        SIEM + f'timeout = 9\nca_file = "{ca_file}"\nheaders_file = "{extra}"\n'
        f'headers = {{ Authorization = "{TOKEN}" }}\n',
    )
    again = from_wire(Settings, json.loads(json.dumps(to_wire(s))))
    assert again.audit.devices == s.audit.devices
    assert dict(again.audit.devices[0].headers) == {"Authorization": TOKEN}


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        (f'headers = {{ Authorization = "{TOKEN}\\r\\nX-Injected: 1" }}', "headers.Authorization"),
        (f'headers = {{ Authorization = "{TOKEN}\\u0000" }}', "headers.Authorization"),
        (f'headers = {{ Authorization = " {TOKEN}" }}', "headers.Authorization"),
        (f'headers = {{ Authorization = "{TOKEN}é" }}', "headers.Authorization"),
        ('headers = { Authorization = "" }', "headers.Authorization"),
        (f'headers = {{ Authorization = "{"x" * 8193}" }}', "headers.Authorization"),
        (f'headers = {{ Authorization = {{ value = "{TOKEN}" }} }}', "headers.Authorization"),
        # a name that is no token is not shown: it may be a pasted "Name: value" line, and a
        # newline in it would split the one-line error
        (f'headers = {{ "X Token" = "{TOKEN}" }}', "headers"),
        (f'headers = {{ "X-Token:" = "{TOKEN}" }}', "headers"),
        (f'headers = {{ "Authorization: {TOKEN}" = "" }}', "headers"),
        (f'headers = {{ "X-Token\\n{TOKEN}" = "v" }}', "headers"),
        (f'headers = {{ Host = "{TOKEN}" }}', "headers.Host"),
        (f'headers = {{ "content-type" = "{TOKEN}" }}', "headers.content-type"),
        (f'headers = {{ "Content-Length" = "{TOKEN}" }}', "headers.Content-Length"),
        (f'headers = {{ "Transfer-Encoding" = "{TOKEN}" }}', "headers.Transfer-Encoding"),
        (f'headers = {{ Authorization = "{TOKEN}", authorization = "x" }}',
         "headers.authorization"),
        (f'headers = "Authorization: {TOKEN}"', "headers"),
        ("headers = { " + ", ".join(f'X-{i} = "v"' for i in range(33)) + " }", "headers"),
        ("timeout = 0", "timeout"),
        ("timeout = -1.0", "timeout"),
        ("timeout = 60.5", "timeout"),
        ('timeout = "5"', "timeout"),
        ('ca_file = ""', "ca_file"),
        ('ca_file = "/nonexistent/ca.pem"', "ca_file"),
        ('ca_file = "/dev/null"', "ca_file"),
        ("verify_tls = false", "verify_tls"),
        ('headers_file = ""', "headers_file"),
        ('headers_file = "/nonexistent/headers"', "headers_file"),
        # a header line where its file's path belongs: the path is never echoed either
        (f'headers_file = "Authorization: {TOKEN}"', "headers_file"),
        (f'headers_file = {{ Authorization = "{TOKEN}" }}', "headers_file"),
    ],
)  # fmt: skip
def test_bad_siem_settings_name_the_key_and_never_the_value(
    tmp_path: Path, entry: str, key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, SIEM + entry + "\n")
    message = caught.value.message
    assert message.startswith(f"setting 'audit.device[0].{key}' (config file server.toml): ")
    assert "hec-canary" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("content", "shown"),
    [
        ("", "is not a PEM certificate bundle"),  # cadata="" would mean the system store
        ("just text\n", "is not a PEM certificate bundle"),
        ("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", "no usable"),
    ],
)
def test_a_ca_file_that_is_no_pem_bundle_is_refused(
    tmp_path: Path, content: str, shown: str
) -> None:
    path = tmp_path / "ca.pem"
    path.write_text(content)
    with pytest.raises(ConfigError, match=r"audit\.device\[0\]\.ca_file.*" + shown):
        settings_from(tmp_path, SIEM + f'ca_file = "{path}"\n')


@pytest.mark.parametrize(
    ("url", "entry", "key"),
    [
        # a CA for a plain http URL would be ignored: refused
        ("http://127.0.0.1:9/x", 'ca_file = "CA"', "ca_file"),
        # credentials twice: httpx would send the URL's basic auth over the header
        ("https://user:pw@siem.example/x", 'headers = { Authorization = "T" }', "headers"),
        # header credentials in clear to another host
        ("http://siem.example/x", 'headers = { Authorization = "T" }', "headers"),
    ],
)
def test_siem_settings_that_contradict_the_url_are_refused(
    tmp_path: Path, ca_file: str, url: str, entry: str, key: str
) -> None:
    text = f'[[audit.device]]\ntype = "http"\nurl = "{url}"\n' + entry.replace("CA", ca_file)
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, text + "\n")
    assert caught.value.message.startswith(f"setting 'audit.device[0].{key}' (config file")


def test_headers_to_a_loopback_siem_over_plain_http_are_accepted(tmp_path: Path) -> None:
    text = '[[audit.device]]\ntype = "http"\nurl = "http://127.0.0.1:9/x"\n'
    s = settings_from(tmp_path, text + 'headers = { Authorization = "T" }\n')
    assert dict(s.audit.devices[0].headers) == {"Authorization": "T"}


@pytest.mark.parametrize(
    ("text", "mode", "shown"),
    [
        (f"X-Token: {TOKEN}\n", 0o644, "other users may read"),
        (f"X-Token: {TOKEN}\n", 0o604, "other users may read"),
        (f"X-Token {TOKEN}\n", 0o600, "line 1: not 'Name: value'"),
        (f"# c\n{TOKEN}: x\n", 0o600, "line 2: the header name is not an RFC 7230 token"),
        (f"Host: {TOKEN}\n", 0o600, r"line 1 \(Host\): set by the forwarder"),
        (f"X-Token: {TOKEN}\nx-token: {TOKEN}\n", 0o600, r"line 2 \(x-token\): given twice"),
        (f"X-Token: {TOKEN}\x01\n", 0o600, "line 1 .*printable ASCII"),
        ("X-Token: \xff\n", 0o600, "line 1 .*printable ASCII"),
        # only LF (CRLF) ends a line: a vertical tab or U+2028 in a value made a second header
        (f"X-Token: {TOKEN}\x0bX-Injected: 1\n", 0o600, r"line 1 \(X-Token\).*printable"),
        (f"X-Token: {TOKEN}\u2028X-Injected: 1\n", 0o600, r"line 1 \(X-Token\).*printable"),
        (f"X-Token: {TOKEN}\rX-Injected: 1\r\n", 0o600, r"line 1 \(X-Token\).*printable"),
        # its group may rewrite the token (640 is the most a group gets)
        (f"X-Token: {TOKEN}\n", 0o660, "its group may change"),
        (f"X-Token: {TOKEN}\n", 0o620, "its group may change"),
        ("# the token goes here\n\n", 0o600, "holds no header"),  # a rotation half done
    ],
)
def test_a_bad_headers_file_names_the_line_and_never_a_value(
    tmp_path: Path, text: str, mode: int, shown: str
) -> None:
    path = _headers_file(tmp_path, text, mode)
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, SIEM + f'headers_file = "{path}"\n')
    message = caught.value.message
    assert message.startswith("setting 'audit.device[0].headers_file' (config file server.toml)")
    assert re.search(shown, message), message
    assert "hec-canary" not in message


def test_a_header_in_both_the_table_and_the_file_is_refused(tmp_path: Path) -> None:
    path = _headers_file(tmp_path, f"authorization: {TOKEN}\n")
    with pytest.raises(ConfigError) as caught:
        settings_from(
            tmp_path,
            SIEM + f'headers_file = "{path}"\nheaders = {{ Authorization = "{TOKEN}" }}\n',
        )
    assert caught.value.message.startswith(
        "setting 'audit.device[0].headers.authorization' (config file server.toml): given twice"
    )
    assert "hec-canary" not in caught.value.message


def test_a_headers_file_spoiled_after_the_check_does_not_stop_the_device_build(
    tmp_path: Path, store: SecretStore
) -> None:
    """A worker builds its device from the settings long after the load checked the file
    (a respawned one, hours later, maybe while the file is being replaced): it sends the
    headers read at load and reads no file, so a spoiled file cannot stop it."""
    path = _headers_file(tmp_path, "X-Tenant: icu\n")
    file_device = f'[[audit.device]]\ntype = "file"\npath = "{tmp_path / "a.jsonl"}"\n'
    s = settings_from(tmp_path, SIEM + f'required = false\nheaders_file = "{path}"\n' + file_device)
    path.write_text(f"X-Tenant: icu\nHost: {TOKEN}\n")
    build_audit(s, store)  # no ConfigError
    path.unlink()
    build_audit(s, store)
    assert device_headers(s.audit.devices[0]) == {"X-Tenant": "icu"}


@pytest.mark.parametrize(
    "text",
    [
        "\ufeffX-Tenant: icu\r\nX-Token: T\r\n",  # a BOM and CRLF (a Windows editor)
        "X-Tenant: icu\nX-Token: T",  # no newline at the end
    ],
)
def test_a_headers_file_from_a_windows_editor_is_read(tmp_path: Path, text: str) -> None:
    path = _headers_file(tmp_path, text)
    s = settings_from(tmp_path, SIEM + f'headers_file = "{path}"\n')
    device = s.audit.devices[0]
    assert siem_headers(device.url, device.headers, device.headers_file, "d") == {
        "X-Tenant": "icu",
        "X-Token": "T",
    }


def test_a_headers_file_of_another_user_is_refused(tmp_path: Path) -> None:
    """Whoever owns the file may rewrite the token or open it to everyone at any time: only
    the server's user or root may own it (a symlink is followed: its target is checked)."""
    path = _headers_file(tmp_path, f"X-Token: {TOKEN}\n")
    link = tmp_path / "link"
    link.symlink_to(path)
    assert settings_from(tmp_path, SIEM + f'headers_file = "{link}"\n')  # ours: fine
    os.chown(path, 65534, 65534)  # nobody (the tests run as root)
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, SIEM + f'headers_file = "{link}"\n')
    message = caught.value.message
    assert message.startswith("setting 'audit.device[0].headers_file' (config file server.toml)")
    assert "belongs to another user (uid 65534)" in message and "hec-canary" not in message


def test_the_headers_file_is_read_once_at_load_for_every_worker(tmp_path: Path) -> None:
    """The parent reads ``headers_file`` at load and hands what it held to the workers with
    the settings: a worker started later (respawned hours after) sends the same headers as
    the others, and needs no file that may be missing or half rewritten by then."""
    path = _headers_file(tmp_path, f"X-Token: {TOKEN}\n")
    s = settings_from(
        tmp_path, SIEM + f'headers_file = "{path}"\nheaders = {{ Authorization = "T" }}\n'
    )
    path.unlink()
    again = from_wire(Settings, json.loads(json.dumps(to_wire(s))))  # what a worker gets
    for device in (s.audit.devices[0], again.audit.devices[0]):
        assert device_headers(device) == {"Authorization": "T", "X-Token": TOKEN}
        assert dict(device.headers) == {"Authorization": "T"}  # the config file's alone
        assert TOKEN not in repr(device)
    assert secret_settings(s.audit.devices, ()) == ["audit.device[0].headers"]


@pytest.mark.parametrize("key", ["headers_file", "ca_file"])
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "directory", "huge"])
def test_a_siem_file_that_is_no_small_regular_file_is_refused_at_once(
    tmp_path: Path, key: str, kind: str
) -> None:
    """A FIFO without a writer would block the start for ever, ``/dev/zero`` never end; a
    huge file is read only up to the bound."""
    path = tmp_path / "siem-file"
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "directory":
        path.mkdir(mode=0o700)
    elif kind == "huge":
        limit = (64 << 10) if key == "headers_file" else (16 << 20)
        path.write_bytes(b"# " + b"x" * limit + b"\n")
        path.chmod(0o600)
    else:
        path = Path(kind)
    caught: list[BaseException] = []

    def load() -> None:
        try:
            settings_from(tmp_path, SIEM + f'{key} = "{path}"\n')
        except BaseException as exc:  # handed to the test's thread
            caught.append(exc)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    loader.join(30.0)  # a safety net against a blocked open, not a timing threshold
    assert not loader.is_alive(), f"loading a {kind} {key} blocked"
    (error,) = caught
    assert isinstance(error, ConfigError)
    assert error.message.startswith(f"setting 'audit.device[0].{key}' (config file server.toml)")
    assert "\n" not in error.message
