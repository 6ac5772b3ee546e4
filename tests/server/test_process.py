"""Real server processes: dev mode, TLS 1.3, refusals, warnings, graceful shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import stat
import time
from pathlib import Path

import httpx
import pytest

from medsecrets.schema.seal import ShamirSealConfig
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore
from medsecrets.testing.serverproc import EXPORT_LINE, ServerProcess, TestCertificates
from tests.server.conftest import run_server

DEV_SECRET = "medessence/development/database"


def _headers(token: str | None) -> dict[str, str]:
    assert token is not None
    return {"X-Medsecrets-Token": token}


def _log_lines(server: ServerProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]


def test_dev_start_prints_export_line_and_serves(dev_server: ServerProcess) -> None:
    match = EXPORT_LINE.search(dev_server.stdout_text())
    assert match is not None
    assert match.group(1) == dev_server.addr
    assert match.group(2).startswith("ms.")
    health = httpx.get(f"{dev_server.addr}/v1/sys/health")
    assert health.status_code == 200
    assert health.json()["initialized"] is True
    assert health.json()["sealed"] is False
    assert httpx.get(f"{dev_server.addr}/v1/secrets/{DEV_SECRET}").status_code == 401
    read = httpx.get(
        f"{dev_server.addr}/v1/secrets/{DEV_SECRET}", headers=_headers(dev_server.token)
    )
    assert read.status_code == 200
    assert read.json()["fields"]["password"]
    # every log line is JSON, and the token is in none of them
    assert all(line.startswith("{") for line in dev_server.log_text().splitlines())
    assert dev_server.token not in dev_server.log_text()


def test_second_start_reuses_data_and_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data, log_dir=tmp_path / "logs") as server:
        first_token = server.token
        url = f"{server.addr}/v1/secrets/{DEV_SECRET}"
        before = httpx.get(url, headers=_headers(first_token)).json()
        server.restart()
        assert server.token == first_token
        after = httpx.get(url, headers=_headers(server.token)).json()
        assert after["fields"] == before["fields"]
        assert after["number"] == before["number"] == 1
        assert len(EXPORT_LINE.findall(server.stdout_text())) == 2
        log = server.log_text()
    complaints = [  # the second start restored the first one's, with no complaint
        line
        for line in log.splitlines()
        if "monitor state" in line and '"level":"info"' not in line
    ]
    assert complaints == []
    assert "monitor state restored" in log
    # (the audit process saved the detectors' state when each server stopped)
    for name in ("dev-root-token", "unseal.key", "medsecrets.db", "monitor/detectors.state"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


def test_the_recent_alerts_outlive_a_restart(tmp_path: Path) -> None:
    """A failed-access burst raises an alert; after a restart ``GET /v1/sys/alerts`` still
    lists it (``monitor.history``), and the detectors' state file is beside it."""
    data = tmp_path / "data"
    with ServerProcess(data, log_dir=tmp_path / "logs") as server:
        url = f"{server.addr}/v1/secrets/{DEV_SECRET}"
        for _ in range(6):
            assert httpx.get(url, headers=_headers("ms.bogus")).status_code == 401
        alerts = f"{server.addr}/v1/sys/alerts"
        deadline = time.monotonic() + 20
        while True:
            before = httpx.get(alerts, headers=_headers(server.token)).json()["alerts"]
            if any(a["detector"] == "failed_burst" for a in before):
                break
            assert time.monotonic() < deadline, before
            time.sleep(0.2)
        server.restart()
        after = httpx.get(alerts, headers=_headers(server.token)).json()["alerts"]
        assert "alert history" not in server.log_text()

    def burst(found: list[dict[str, object]]) -> list[tuple[object, ...]]:
        return [
            (a["id"], a["summary"], a["time"]) for a in found if a["detector"] == "failed_burst"
        ]

    assert burst(after) == burst(before) != []
    assert stat.S_IMODE((data / "monitor" / "alerts.state").stat().st_mode) == 0o600


def _tls_version(port: int, context: ssl.SSLContext) -> str | None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.version()


def test_tls13_only(tmp_path: Path, certs: TestCertificates) -> None:
    with ServerProcess(
        tmp_path / "data", extra_args=certs.server_args(), ca_file=certs.ca_file
    ) as server:
        assert server.addr.startswith("https://")
        context = ssl.create_default_context(cafile=certs.ca_file)
        assert _tls_version(server.port, context) == "TLSv1.3"
        with httpx.Client(verify=context) as client:
            read = client.get(
                f"{server.addr}/v1/secrets/{DEV_SECRET}", headers=_headers(server.token)
            )
            assert read.status_code == 200
        old = ssl.create_default_context(cafile=certs.ca_file)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            _tls_version(server.port, old)
        with httpx.Client(verify=old) as client, pytest.raises(httpx.ConnectError):
            client.get(f"{server.addr}/v1/sys/health")
        # plain HTTP to the TLS port gets no API answer
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{server.port}/v1/sys/health").raise_for_status()


def test_refuses_to_start_without_tls(tmp_path: Path, port: int) -> None:
    done = run_server(["--data-dir", str(tmp_path / "data"), "--listen", f"127.0.0.1:{port}"])
    assert done.code == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "'tls.cert_file'" in lines[0]
    assert "TLS is required" in lines[0]
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("args", "env", "toml", "setting"),
    [
        ([], {"MEDSECRETS_WORKERS": "zero"}, None, "workers"),
        (["--listen", "localhost"], {}, None, "listen"),
        ([], {}, "dev = true\ncolour = 'blue'\n", "colour"),
        (
            [],
            {},
            "dev = true\n[tls]\ncert_file = 'missing.pem'\nkey_file = 'k.pem'\n",
            "tls.cert_file",
        ),
        ([], {"MEDSECRETS_LOG_LEVEL": "chatty"}, None, "log_level"),
    ],
)
def test_bad_setting_stops_start_with_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], toml: str | None, setting: str
) -> None:
    full = ["--dev", "--data-dir", str(tmp_path / "data"), *args]
    if toml is not None:
        (tmp_path / "server.toml").write_text(toml)
        full += ["--config", str(tmp_path / "server.toml")]
    done = run_server(full, env=env, cwd=tmp_path)
    assert done.code == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("medsecrets server: config error: ")
    assert f"'{setting}'" in lines[0]


def test_mismatched_tls_key_stops_start(tmp_path: Path, certs: TestCertificates, port: int) -> None:
    other = tmp_path / "other"
    from medsecrets.testing.serverproc import write_test_certificates

    wrong = write_test_certificates(other)
    done = run_server(
        [
            "--data-dir",
            str(tmp_path / "d"),
            "--listen",
            f"127.0.0.1:{port}",
            "--tls-cert",
            certs.cert_file,
            "--tls-key",
            wrong.key_file,
        ]
    )
    assert done.code == 2
    last = done.stderr.strip().splitlines()[-1]
    assert "'tls.cert_file'/'tls.key_file'" in last


def test_tls_disable_warns_at_every_start(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'tls_disable = true\ndata_dir = "{tmp_path / "data"}"\n')
    with ServerProcess(
        tmp_path / "data", dev=False, extra_args=["--config", str(config)], log_dir=tmp_path / "l"
    ) as server:
        health = httpx.get(f"{server.addr}/v1/sys/health").json()
        assert health["initialized"] is False
        server.restart()
        warnings = [
            line
            for line in _log_lines(server)
            if line["level"] == "warning" and "TLS is disabled" in str(line["msg"])
        ]
        assert len(warnings) == 2


def test_port_in_use_names_listen(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_server(
            ["--dev", "--data-dir", str(tmp_path / "d"), "--listen", f"127.0.0.1:{port}"]
        )
    assert done.code == 2
    assert "'listen'" in done.stderr.strip().splitlines()[-1]


def test_sigterm_finishes_the_request_in_flight(tmp_path: Path) -> None:
    path = "medessence/grace/ai-providers/in-flight"
    value = os.urandom(16).hex()
    body = json.dumps({"fields": {"azure_cognitive_key": value}}).encode()
    with ServerProcess(tmp_path / "data", log_dir=tmp_path / "logs") as server:
        conn = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        conn.sendall(
            (
                f"PUT /v1/secrets/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"X-Medsecrets-Token: {server.token}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
            ).encode()
        )
        # 100 Continue: the app is reading the body, so the request is in flight
        assert conn.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        server.send_signal(signal.SIGTERM)
        while True:  # shutdown has begun once new connections are refused (or reset)
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
            except (ConnectionRefusedError, ConnectionResetError):
                break
        conn.sendall(body)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
        conn.close()
        assert reply.startswith(b"HTTP/1.1 200 ")
        assert server.wait(30) == 0
        assert any(line["msg"] == "stopped" for line in _log_lines(server))
        server.start()
        read = httpx.get(f"{server.addr}/v1/secrets/{path}", headers=_headers(server.token))
        assert read.json()["fields"] == {"azure_cognitive_key": value}


def test_shamir_store_starts_sealed(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text("tls_disable = true\n")
    with ServerProcess(
        tmp_path / "data", dev=False, extra_args=["--config", str(config)], log_dir=tmp_path / "l"
    ) as server:
        init = httpx.post(
            f"{server.addr}/v1/sys/init",
            json={"seal": {"type": "shamir", "shares": 1, "threshold": 1}},
        )
        assert init.status_code == 200, init.text
        share, token = init.json()["shares"][0], init.json()["root_token"]
        server.restart()
        assert httpx.get(f"{server.addr}/v1/sys/health").json()["sealed"] is True
        denied = httpx.get(f"{server.addr}/v1/metadata", headers=_headers(token))
        assert denied.status_code == 503
        unseal = httpx.post(f"{server.addr}/v1/sys/unseal", json={"share": share})
        assert unseal.json()["sealed"] is False
        listed = httpx.get(f"{server.addr}/v1/metadata", headers=_headers(token))
        assert listed.status_code == 200
        assert share not in server.log_text()
        assert token not in server.log_text()


def test_two_workers(tmp_path: Path) -> None:
    with ServerProcess(
        tmp_path / "data", env={"MEDSECRETS_WORKERS": "2"}, log_dir=tmp_path / "l"
    ) as server:
        with httpx.Client(headers=_headers(server.token)) as client:
            for _ in range(6):  # new connections: both workers serve
                read = client.get(
                    f"{server.addr}/v1/secrets/{DEV_SECRET}", headers={"Connection": "close"}
                )
                assert read.status_code == 200
        told = [e for e in _log_lines(server) if e.get("workers") == 2]
        assert [e["level"] for e in told] == ["info"]
        assert "one monitor process watches every worker" in str(told[0]["msg"])
        monitor = told[0]["pid"]
        assert isinstance(monitor, int) and monitor in server.children(monitor=True)
        # SIGKILL of the server process takes its workers with it (PR_SET_PDEATHSIG)
        server.kill(signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
            except ConnectionRefusedError:
                break
            except ConnectionResetError:
                pass  # a dying worker's listening socket: look again
            assert time.monotonic() < deadline, "a worker outlived the server process"
            time.sleep(0.05)
        # and the monitor process ends with it (its stdin, the server's pipe, closed)
        while (
            Path(f"/proc/{monitor}/cmdline").exists()
            and Path(f"/proc/{monitor}/cmdline").read_bytes()
        ):
            assert time.monotonic() < deadline, "the monitor process outlived the server"
            time.sleep(0.05)


def test_an_operator_seal_seals_every_worker(tmp_path: Path) -> None:
    """One worker serves the seal; the others refuse from their next request, and their
    latch watchers drop the keys within a tick even when no request comes."""
    data = tmp_path / "data"
    env = {"MEDSECRETS_WORKERS": "2", "MEDSECRETS_METRICS_UNAUTHENTICATED": "true"}
    with ServerProcess(data, env=env, log_dir=tmp_path / "l") as server:
        close = {"Connection": "close"}  # new connections: both workers serve
        url = f"{server.addr}/v1/secrets/{DEV_SECRET}"
        with httpx.Client(headers=_headers(server.token)) as client:
            reads = [client.get(url, headers=close) for _ in range(8)]
            assert {read.status_code for read in reads} == {200}
            value = str(reads[0].json()["fields"]["password"])
            latches = [p for p in os.listdir(data) if p.startswith(".seal-latch-")]
            assert len(latches) == 1
            assert client.post(f"{server.addr}/v1/sys/seal", headers=close).status_code == 200
            # open metrics do not look at the latch: each worker's gauge shows its watcher's
            # tick (0.1 s), polled for 5 s (50 ticks) for a loaded machine; not longer: with
            # no watcher, a worker showed sealed after about 15 s by some other path
            deadline = time.monotonic() + 5
            while True:
                metrics = f"{server.addr}/v1/sys/metrics"
                gauges = [client.get(metrics, headers=close) for _ in range(12)]
                if all("\nmedsecrets_sealed 1" in gauge.text for gauge in gauges):
                    break
                assert time.monotonic() < deadline, "a worker's latch watcher kept its keys"
                time.sleep(0.1)
            after = [client.get(url, headers=close) for _ in range(30)]
            assert [read.status_code for read in after] == [503] * 30
            assert not any(value in read.text for read in after)
            unseals = [
                client.post(f"{server.addr}/v1/sys/unseal", json={}, headers=close)
                for _ in range(8)
            ]
            assert [unseal.status_code for unseal in unseals] == [403] * 8
    assert not [p for p in os.listdir(data) if p.startswith(".seal-latch-")]


def test_two_workers_initialised_through_one(tmp_path: Path, port: int) -> None:
    """The worker that did not serve ``sys/init`` follows it (auto-unseal); a Shamir seal,
    whose shares each worker would need, is refused, and so is a Shamir store at start."""
    data = tmp_path / "data"
    config = tmp_path / "server.toml"
    config.write_text("tls_disable = true\nworkers = 2\n")
    close = {"Connection": "close"}  # new connections: both workers serve
    with ServerProcess(
        data, dev=False, extra_args=["--config", str(config)], log_dir=tmp_path / "l"
    ) as server:
        shamir = httpx.post(
            f"{server.addr}/v1/sys/init",
            json={"seal": {"type": "shamir", "shares": 1, "threshold": 1}},
            headers=close,
        )
        assert shamir.status_code == 400
        assert "needs an auto-unseal seal" in shamir.json()["error"]["message"]
        statuses = [
            httpx.get(f"{server.addr}/v1/sys/seal-status", headers=close).json() for _ in range(6)
        ]
        assert [status["initialized"] for status in statuses] == [False] * 6
        init = httpx.post(
            f"{server.addr}/v1/sys/init",
            json={"seal": {"type": "keyfile", "path": str(tmp_path / "unseal.key")}},
            headers=close,
        )
        assert init.status_code == 200
        token = init.json()["root_token"]
        listed = [
            httpx.get(f"{server.addr}/v1/metadata", headers={**_headers(token), **close})
            for _ in range(12)
        ]
        assert [answer.status_code for answer in listed] == [200] * 12
    # a store sealed with Shamir shares cannot be served by several workers
    (tmp_path / "shamir").mkdir(mode=0o700)
    store = SecretStore(SqliteStorage(tmp_path / "shamir" / "medsecrets.db"))
    store.initialize(ShamirSealConfig(shares=1, threshold=1))
    store.close()
    done = run_server(
        ["--data-dir", str(tmp_path / "shamir"), "--listen", f"127.0.0.1:{port}"],
        env={"MEDSECRETS_WORKERS": "2", "MEDSECRETS_TLS_DISABLE": "true"},
    )
    assert done.code == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "medsecrets server: config error: setting 'workers': more than one worker needs an "
        "auto-unseal seal (keyfile or awskms), and the store has a shamir seal"
    )


def test_sighup_is_ignored(tmp_path: Path) -> None:
    """It used to kill the process with no graceful stop (a closed terminal sends it)."""
    with ServerProcess(tmp_path / "data", log_dir=tmp_path / "l") as server:
        os.kill(server.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while not any("SIGHUP ignored" in str(e.get("msg")) for e in _log_lines(server)):
            assert time.monotonic() < deadline, "no SIGHUP warning"
            time.sleep(0.05)
        read = httpx.get(f"{server.addr}/v1/secrets/{DEV_SECRET}", headers=_headers(server.token))
        assert read.status_code == 200


def test_a_dead_worker_is_replaced_and_stays_sealed(tmp_path: Path) -> None:
    """A worker killed (the OOM killer, a crash) is respawned instead of the whole server
    stopping, and the new one keeps an operator's seal (the latch)."""
    with ServerProcess(
        tmp_path / "data", env={"MEDSECRETS_WORKERS": "2"}, log_dir=tmp_path / "l"
    ) as server:
        close = {**_headers(server.token), "Connection": "close"}
        url = f"{server.addr}/v1/secrets/{DEV_SECRET}"
        assert httpx.post(f"{server.addr}/v1/sys/seal", headers=close).status_code == 200
        workers = server.children()
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 60  # a safety net while granian respawns it
        while len(set(server.children()) - {workers[0]}) < 2:
            assert time.monotonic() < deadline, "the worker was not replaced"
            time.sleep(0.1)
        codes = [httpx.get(url, headers=close).status_code for _ in range(12)]
        assert codes == [503] * 12
        assert httpx.get(f"{server.addr}/v1/sys/health").json()["sealed"] is True


def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path: Path, port: int) -> None:
    """Two servers appending to one audit file would fork its chain for good."""
    data = tmp_path / "data"
    with ServerProcess(data, log_dir=tmp_path / "l") as server:
        done = run_server(["--dev", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}"])
        assert done.code == 2
        last = done.stderr.strip().splitlines()[-1]
        assert "is written by another process (another server on this data directory?)" in last
        assert httpx.get(f"{server.addr}/v1/sys/health").status_code == 200


def test_uvicorn_backend_tls13(tmp_path: Path, certs: TestCertificates) -> None:
    with ServerProcess(
        tmp_path / "data",
        extra_args=certs.server_args(),
        env={"MEDSECRETS_BACKEND": "uvicorn"},
        ca_file=certs.ca_file,
        log_dir=tmp_path / "l",
    ) as server:
        context = ssl.create_default_context(cafile=certs.ca_file)
        assert _tls_version(server.port, context) == "TLSv1.3"
        with httpx.Client(verify=context) as client:
            read = client.get(
                f"{server.addr}/v1/secrets/{DEV_SECRET}", headers=_headers(server.token)
            )
            assert read.status_code == 200
        old = ssl.create_default_context(cafile=certs.ca_file)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            _tls_version(server.port, old)
        assert any(line.get("backend") == "uvicorn" for line in _log_lines(server))
    assert server.returncode == 0


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="abstract Unix sockets: Linux")
def test_a_listen_address_claimed_by_another_server_is_refused(tmp_path: Path, port: int) -> None:
    """granian binds with SO_REUSEPORT: without the claim, two servers started together
    could share one port. Holding the claim (as a server starting a moment earlier does)
    makes the next start fail, before it binds anything, with one line."""
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    claim.bind(f"\0medsecrets/listen/127.0.0.1:{port}")
    try:
        args = ["--dev", "--data-dir", str(tmp_path / "data"), "--listen", f"127.0.0.1:{port}"]
        done = run_server(args, cwd=tmp_path)
    finally:
        claim.close()
    assert done.code == 2
    lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("{")]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        f"medsecrets server: config error: setting 'listen': cannot listen on 127.0.0.1:{port} "
        "(another medsecrets server on this host has claimed it"
    )
    assert not (tmp_path / "data").exists()  # refused before any set-up


def test_the_audit_process_logs_to_the_server_s_log_file(tmp_path: Path) -> None:
    """Its lines went to stderr as plain text, missing from a configured log file."""
    data = tmp_path / "data"
    (data / "monitor").mkdir(parents=True, mode=0o700)
    os.mkfifo(data / "monitor" / "detectors.state")  # the audit process warns about it
    log_file = tmp_path / "server.log"
    env = {"MEDSECRETS_LOG_FILE": str(log_file)}
    with ServerProcess(data, env=env, log_dir=tmp_path / "l") as server:
        read = httpx.get(f"{server.addr}/v1/secrets/{DEV_SECRET}", headers=_headers(server.token))
        assert read.status_code == 200
        deadline = time.monotonic() + 30
        while True:
            lines = [json.loads(line) for line in log_file.read_text().splitlines()]
            state = [e for e in lines if "monitor state" in str(e.get("msg"))]
            if state:
                break
            assert time.monotonic() < deadline, "the audit process's warning never came"
            time.sleep(0.1)
        assert state[0]["level"] in ("warning", "error")  # a JSON line of the server's log
        assert "monitor state" not in server.log_text()  # not on stderr as plain text
