"""The SIEM forwarder's trust, headers and timeout from the configuration file, end to end.

Real server processes with an ``http`` audit device pointed at a local HTTPS receiver whose
certificate comes from a throwaway CA (the ``certs`` fixture): records arrive with the
configured headers (from ``headers`` and from ``headers_file``), in every worker of a
multi-worker server; without ``ca_file`` the device's health names the TLS failure and the
records stay spooled until a start with ``ca_file`` ships them; a canary header value never
appears in the server's log, stdout, audit files, data directory, health or metrics; a bad
setting stops the start with one line naming the key, never its value.

Asynchronous deliveries are polled with a generous deadline (a safety net, not a timing
assertion).
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socket import socket
from typing import Any

import httpx
import pytest

from medsecrets.audit.forwarder import HttpForwarderDevice
from medsecrets.testing.serverproc import ServerProcess, TestCertificates
from tests.server.conftest import run_server

SECRET = "medessence/development/database"
CANARY = "Splunk canary-3f9c1d7e-hec-token"
FILE_CANARY = "tenant-canary-8b2e4a61"
DEADLINE = 60.0  # a safety net for asynchronous deliveries, not a timing threshold
CLOSE = {"Connection": "close"}  # a new connection per request: every worker serves


class TlsSiem:
    """A SIEM stand-in over HTTPS with a certificate of the test CA: keeps every POST's
    headers (lower-cased names) and body, answers 200. A client that does not trust the
    CA fails its handshake (counted in ``refused_handshakes``)."""

    def __init__(self, certs: TestCertificates) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.refused_handshakes = 0
        self._lock = threading.Lock()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.cert_file, certs.key_file)
        siem = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with siem._lock:
                    siem.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def get_request(self) -> tuple[socket, Any]:
                conn, address = self.socket.accept()  # the handshake in the request's thread
                return context.wrap_socket(
                    conn, server_side=True, do_handshake_on_connect=False
                ), address

            def handle_error(self, request: object, client_address: object) -> None:
                with siem._lock:
                    siem.refused_handshakes += 1

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}/services/collector"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    def bodies(self) -> bytes:
        with self._lock:
            return b"".join(body for _, body in self.posts)

    def headers(self) -> list[dict[str, str]]:
        with self._lock:
            return [headers for headers, _ in self.posts]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def siem(certs: TestCertificates) -> Iterator[TlsSiem]:
    receiver = TlsSiem(certs)
    yield receiver
    receiver.close()


def wait_for(check: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def headers_file(tmp_path: Path) -> Path:
    path = tmp_path / "siem-headers"
    path.write_text(f"# the tenant header, kept out of the config file\nX-Tenant: {FILE_CANARY}\n")
    path.chmod(0o600)
    return path


def write_config(tmp_path: Path, data: Path, siem: TlsSiem, extra: str) -> Path:
    config = tmp_path / "server.toml"
    config.write_text(
        "[[audit.device]]\n"
        'type = "file"\n'
        f'path = "{data / "audit" / "audit.jsonl"}"\n'
        "[[audit.device]]\n"
        'type = "http"\n'
        'name = "siem"\n'
        "required = false\n"
        f'url = "{siem.url}"\n'
        "batch_size = 5\n"
        "timeout = 3.0\n"
        f'headers = {{ Authorization = "{CANARY}" }}\n' + extra
    )
    config.chmod(0o600)
    return config


def start(tmp_path: Path, data: Path, config: Path, logs: str, **env: str) -> ServerProcess:
    return ServerProcess(
        data,
        extra_args=["--config", str(config)],
        env={"MEDSECRETS_METRICS_UNAUTHENTICATED": "true", **env},
        log_dir=tmp_path / logs,
    )


def read_secrets(server: ServerProcess, times: int) -> None:
    auth = {"Authorization": f"Bearer {server.token}", **CLOSE}
    for _ in range(times):
        assert httpx.get(f"{server.addr}/v1/secrets/{SECRET}", headers=auth).is_success


def siem_health(server: ServerProcess) -> dict[str, object]:
    auth = {"Authorization": f"Bearer {server.token}"}
    devices = httpx.get(f"{server.addr}/v1/sys/audit/devices", headers=auth)
    assert devices.status_code == 200, devices.text
    found = [d for d in devices.json()["devices"] if d["name"] == "siem"]
    return dict(found[0])


def test_records_reach_an_https_siem_with_its_private_ca_and_the_configured_headers(
    tmp_path: Path, siem: TlsSiem, certs: TestCertificates
) -> None:
    data = tmp_path / "data"
    extra = f'ca_file = "{certs.ca_file}"\nheaders_file = "{headers_file(tmp_path)}"\n'
    config = write_config(tmp_path, data, siem, extra)
    # the most verbose log: the values must stay out of it at every level
    with start(tmp_path, data, config, "logs", MEDSECRETS_LOG_LEVEL="debug") as server:
        read_secrets(server, 3)
        wait_for(lambda: siem.bodies().count(b'"secrets.read"') >= 6, "the reads at the SIEM")
        health = siem_health(server)
        metrics = httpx.get(f"{server.addr}/v1/sys/metrics").text
        sys_health = httpx.get(f"{server.addr}/v1/sys/health").text
    assert siem.refused_handshakes == 0
    for headers in siem.headers():
        assert headers["authorization"] == CANARY
        assert headers["x-tenant"] == FILE_CANARY
        assert headers["content-type"] == "application/x-ndjson"
    assert health["delivery_error"] is None and health["up"] is True
    # the header values are secrets: nowhere but on the wire to the SIEM
    shown = {
        "health": json.dumps(health),
        "metrics": metrics,
        "sys/health": sys_health,
        "server log": server.log_text(),
        "stdout": server.stdout_text(),
    }
    shown |= {
        str(path): path.read_bytes().decode(errors="replace")
        for path in data.rglob("*")
        if path.is_file()  # the audit files, the spool, the store, the detectors' state
    }
    assert any("audit" in name and name.endswith(".jsonl") for name in shown)
    for name, text in shown.items():
        for canary in (CANARY, "canary-3f9c1d7e", FILE_CANARY):
            assert canary not in text, f"{canary!r} leaked into {name}"


def test_without_the_ca_file_the_tls_failure_shows_and_records_stay_spooled(
    tmp_path: Path, siem: TlsSiem, certs: TestCertificates
) -> None:
    """The test CA is not in the system trust store: the SIEM's certificate is refused, the
    health says so by kind, nothing is delivered, and the spool keeps the records until a
    start that trusts the CA ships them."""
    data = tmp_path / "data"
    config = write_config(tmp_path, data, siem, "")
    with start(tmp_path, data, config, "l1") as server:
        read_secrets(server, 3)
        wait_for(lambda: (siem_health(server)["delivery_failures"] or 0) >= 1, "a failure")
        health = siem_health(server)
        assert health["delivery_error"] == "TLSCertificateError"
        assert (health["spool_pending"] or 0) >= 6
        # the SIEM's thread counts the handshake the server gave up, maybe after its health did
        wait_for(lambda: siem.refused_handshakes >= 1, "the refused handshake at the SIEM")
        assert siem.posts == []
    assert CANARY not in server.log_text() and CANARY not in json.dumps(health)
    config = write_config(tmp_path, data, siem, f'ca_file = "{certs.ca_file}"\n')
    with start(tmp_path, data, config, "l2") as server:
        wait_for(lambda: siem_health(server)["spool_pending"] == 0, "the spool drained")
        assert siem_health(server)["delivery_error"] is None
    assert siem.bodies().count(b'"secrets.read"') >= 6  # the first run's records
    assert {h["authorization"] for h in siem.headers()} == {CANARY}


def test_every_worker_sends_the_headers_and_trusts_the_ca(
    tmp_path: Path, siem: TlsSiem, certs: TestCertificates
) -> None:
    """With ``workers > 1`` each worker builds its own device from the settings it is
    handed (not the config file): the headers, the file's headers and the CA reach all."""
    data = tmp_path / "data"
    extra = f'ca_file = "{certs.ca_file}"\nheaders_file = "{headers_file(tmp_path)}"\n'
    config = write_config(tmp_path, data, siem, extra)

    def nodes() -> set[str]:
        lines = siem.bodies().splitlines()
        return {json.loads(line)["node"] for line in lines if b'"secrets.read"' in line}

    with start(tmp_path, data, config, "logs", MEDSECRETS_WORKERS="2") as server:
        deadline = time.monotonic() + DEADLINE
        while len(nodes()) < 2:  # new connections until both workers have served reads
            assert time.monotonic() < deadline, "the reads of both workers never arrived"
            read_secrets(server, 4)
            time.sleep(0.2)
    assert siem.refused_handshakes == 0
    assert {(h["authorization"], h["x-tenant"]) for h in siem.headers()} == {(CANARY, FILE_CANARY)}
    assert CANARY not in server.log_text() and FILE_CANARY not in server.log_text()


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        (f'headers = {{ Authorization = "{CANARY}\\r\\nX-Evil: 1" }}', "headers.Authorization"),
        (f'headers = {{ Host = "{CANARY}" }}', "headers.Host"),
        (f'headers = {{ "Content-Length" = "{CANARY}" }}', "headers.Content-Length"),
        (f'headers = "Authorization: {CANARY}"', "headers"),
        ('ca_file = "/nonexistent/ca.pem"', "ca_file"),
        ('ca_file = "/dev/null"', "ca_file"),
        ("timeout = 0", "timeout"),
        ("timeout = 61", "timeout"),
        ("verify_tls = false", "verify_tls"),  # there is no way to switch verification off
    ],
)
def test_a_bad_setting_is_one_line_naming_the_key_and_never_its_value(
    tmp_path: Path, entry: str, key: str
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        f'tls_disable = true\n[[audit.device]]\ntype = "http"\nurl = "https://siem.example/x"\n'
        f"{entry}\n"
    )
    config.chmod(0o600)
    done = run_server(["--config", str(config), "--data-dir", str(tmp_path / "data")])
    assert done.code == 2, done.stderr
    assert done.stderr.startswith("medsecrets server: config error: setting ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"'audit.device[0].{key}'" in done.stderr
    assert "canary" not in done.stderr + done.stdout


def test_a_headers_file_others_may_read_stops_the_start_naming_it(tmp_path: Path) -> None:
    path = headers_file(tmp_path)
    path.chmod(0o644)
    config = tmp_path / "server.toml"
    config.write_text(
        'tls_disable = true\n[[audit.device]]\ntype = "http"\nurl = "https://siem.example/x"\n'
        f'headers_file = "{path}"\n'
    )
    done = run_server(["--config", str(config), "--data-dir", str(tmp_path / "data")])
    assert done.code == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "'audit.device[0].headers_file'" in done.stderr and "chmod 600" in done.stderr
    assert FILE_CANARY not in done.stderr


def test_the_device_names_a_tls_failure_by_kind(tmp_path: Path, siem: TlsSiem) -> None:
    """httpx calls an untrusted certificate a ``ConnectError``, as it does a refused
    connection; the health tells them apart."""
    device = HttpForwarderDevice(
        "siem",
        url=siem.url,
        spool_dir=tmp_path / "spool",
        spool_max_bytes=1 << 20,
        backoff_initial=0.05,
        backoff_max=0.1,
    )
    device.open()
    try:
        device.write([b'{"device":"siem"}\n'])
        wait_for(lambda: device.health()["consecutive_failures"], "a delivery failure")
        assert device.health()["last_error"] == "TLSCertificateError"
        assert device.health()["pending"] == 1
    finally:
        device.close()


def test_a_ca_file_that_cannot_be_read_at_open_keeps_the_records_spooled_until_it_can(
    tmp_path: Path, siem: TlsSiem, certs: TestCertificates
) -> None:
    """A worker started (or respawned) while the CA bundle is missing or half rotated opens
    its device all the same (raising there stopped the whole server: granian's crash loop
    detection); each attempt is a ``CAFileError``, nothing is sent, and once the bundle is
    back the spooled records are shipped."""
    ca_file = tmp_path / "siem-ca.pem"
    device = HttpForwarderDevice(
        "siem",
        url=siem.url,
        spool_dir=tmp_path / "spool",
        spool_max_bytes=1 << 20,
        verify_tls=str(ca_file),
        flush_interval=0.05,
        backoff_initial=0.05,
        backoff_max=0.1,
    )
    device.open()
    try:
        device.write([b'{"device":"siem","n":1}\n'])
        wait_for(lambda: device.health()["consecutive_failures"], "a delivery failure")
        assert device.health()["last_error"] == "CAFileError"
        ca_file.write_text("")  # a rotation half done: still no certificate
        device.write([b'{"device":"siem","n":2}\n'])
        assert device.health()["pending"] == 2 and siem.posts == []
        ca_file.write_bytes(Path(certs.ca_file).read_bytes())
        wait_for(lambda: device.health()["pending"] == 0, "the spool shipped")
        assert device.health()["consecutive_failures"] == 0
    finally:
        device.close()
    assert siem.bodies() == b'{"device":"siem","n":1}\n{"device":"siem","n":2}\n'


def workers_of(server: ServerProcess) -> set[int]:
    return set(server.children())


@pytest.mark.parametrize("spoiled", ["ca_file", "headers_file"])
def test_a_worker_respawned_while_a_siem_file_is_missing_serves_and_ships_later(
    tmp_path: Path, siem: TlsSiem, certs: TestCertificates, spoiled: str
) -> None:
    """A worker that dies (the OOM killer) is respawned; the CA bundle or the headers file
    may be missing just then (a rotation under way). The new worker must start and serve
    (a configuration error there made granian see a crash loop and stop the whole server)
    and ship its records with the headers read at load: at once without the headers file,
    once the CA bundle is back without it (spooled meanwhile)."""
    data = tmp_path / "data"
    ca_file = tmp_path / "siem-ca.pem"
    ca_file.write_bytes(Path(certs.ca_file).read_bytes())
    extra = f'ca_file = "{ca_file}"\nheaders_file = "{headers_file(tmp_path)}"\n'
    config = write_config(tmp_path, data, siem, extra)
    spoil = {"ca_file": ca_file, "headers_file": tmp_path / "siem-headers"}[spoiled]
    kept = spoil.read_bytes()

    def nodes() -> set[str]:
        lines = siem.bodies().splitlines()
        return {json.loads(line)["node"] for line in lines if b'"secrets.read"' in line}

    with start(tmp_path, data, config, "logs", MEDSECRETS_WORKERS="2") as server:
        read_secrets(server, 2)
        before = workers_of(server)
        assert len(before) == 2
        spoil.unlink()
        os.kill(min(before), signal.SIGKILL)
        wait_for(lambda: len(workers_of(server) - before) == 1, "the respawned worker")
        (new,) = workers_of(server) - before
        if spoiled == "ca_file":  # back once the new worker's device found it missing
            wait_for(
                lambda: not server.running or "CA bundle cannot be used" in server.log_text(),
                "the new worker's device",
            )
            spoil.write_bytes(kept)
        deadline = time.monotonic() + DEADLINE
        while not any(node.endswith(f"-{new}") for node in nodes()):
            assert server.running, "the server stopped"
            assert time.monotonic() < deadline, "the new worker's reads never arrived"
            read_secrets(server, 4)
            time.sleep(0.2)
    assert {(h["authorization"], h["x-tenant"]) for h in siem.headers()} == {(CANARY, FILE_CANARY)}
