"""An encrypted audit file over a Shamir-sealed store (a real server process each time).

The device's key is a secret in the store, which a Shamir seal keeps sealed at start: the
device writes the sealed spell's records plain (they hold no HMAC and no value) and
encrypts from the first write after the unseal, with or without the audit process. A key
that cannot be read then fails the device: nothing is served, nothing is written in clear.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from medsecrets.testing.serverproc import ServerProcess

KEY = "medessence/production/medical-encryption#audit_log_encryption_key"
SECRET = "medessence/production/database"
CANARY = "shamir-canary-Vq3x9"


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _config(tmp_path: Path, *, process: bool, encrypt: str | None) -> Path:
    config = tmp_path / "server.toml"
    text = (
        f"tls_disable = true\n[audit]\nprocess = {'true' if process else 'false'}\n"
        f'[[audit.device]]\ntype = "file"\nname = "primary"\n'
        f'path = "{tmp_path / "audit" / "audit.jsonl"}"\n'
    )
    if encrypt:
        text += f'encrypt = "{encrypt}"\n'
    config.write_text(text)
    config.chmod(0o600)
    return config


def _initialised(tmp_path: Path, process: bool) -> tuple[ServerProcess, str, str]:
    """A server on a Shamir store with production's medical-encryption and a canary secret
    provisioned, stopped; its share and root token."""
    config = _config(tmp_path, process=process, encrypt=None)
    server = ServerProcess(
        tmp_path / "data",
        dev=False,
        extra_args=["--config", str(config)],
        env={"MEDSECRETS_AUDIT_FILE": ""},  # the configured device is the only one
        log_dir=tmp_path / "l",
    )
    server.start()
    try:
        init = httpx.post(
            f"{server.addr}/v1/sys/init",
            json={"seal": {"type": "shamir", "shares": 1, "threshold": 1}},
        )
        assert init.status_code == 200, init.text
        share, root = init.json()["shares"][0], init.json()["root_token"]
        assert httpx.post(f"{server.addr}/v1/sys/unseal", json={"share": share}).status_code == 200
        provisioned = httpx.post(
            f"{server.addr}/v1/provision",
            headers=_h(root),
            json={"environment": "production", "categories": ["medical-encryption"]},
        )
        assert provisioned.status_code == 200, provisioned.text
        written = httpx.put(
            f"{server.addr}/v1/secrets/{SECRET}",
            headers=_h(root),
            json={"fields": {"password": CANARY + "-Aa1!" * 4, "username": "app"}},
        )
        assert written.status_code == 200, written.text
    finally:
        server.stop()
    return server, share, root


def _lines(tmp_path: Path) -> list[bytes]:
    return (tmp_path / "audit" / "audit.jsonl").read_bytes().splitlines()


@pytest.mark.parametrize("process", [True, False], ids=["audit-process", "in-process"])
def test_the_device_encrypts_from_the_unseal_on(tmp_path: Path, process: bool) -> None:
    server, share, root = _initialised(tmp_path, process)
    before = len(_lines(tmp_path))
    _config(tmp_path, process=process, encrypt=KEY)
    server.start()  # refused at load before: the key could not be read while sealed
    try:
        assert httpx.get(f"{server.addr}/v1/sys/health").json()["sealed"] is True
        unsealed = httpx.post(f"{server.addr}/v1/sys/unseal", json={"share": share})
        assert unsealed.status_code == 200, unsealed.text
        read = httpx.get(f"{server.addr}/v1/secrets/{SECRET}", headers=_h(root))
        assert read.status_code == 200
        assert read.json()["fields"]["password"].startswith(CANARY)
        verified = httpx.get(f"{server.addr}/v1/sys/audit/verify", headers=_h(root)).json()
        assert verified["ok"] is True, verified
        who = httpx.get(
            f"{server.addr}/v1/sys/audit/who-read", params={"path": SECRET}, headers=_h(root)
        ).json()
        assert len(who["reads"]) == 1 and who["unreadable"] == 0, who
    finally:
        server.stop()
    since = _lines(tmp_path)[before:]
    plain = [json.loads(line) for line in since if b'"kind":"sealed"' not in line]
    sealed = [line for line in since if b'"kind":"sealed"' in line]
    assert sealed, "nothing was encrypted after the unseal"
    assert {record["operation"] for record in plain} <= {"sys.health", "sys.unseal"}
    assert not any(b"secrets.read" in line for line in since)  # only sealed lines hold it
    assert CANARY.encode() not in b"".join(since)
    assert b"".join(_lines(tmp_path)).count(root.encode()) == 0


def test_a_key_that_cannot_be_read_after_the_unseal_fails_the_device(tmp_path: Path) -> None:
    server, share, root = _initialised(tmp_path, True)
    before = len(_lines(tmp_path))
    _config(tmp_path, process=True, encrypt=KEY.replace("audit_log_encryption_key", "nope"))
    server.start()
    try:
        httpx.post(f"{server.addr}/v1/sys/unseal", json={"share": share})
        read = httpx.get(f"{server.addr}/v1/secrets/{SECRET}", headers=_h(root))
        assert read.status_code == 503
        assert read.json()["error"]["code"] == "audit_failure"
        assert CANARY not in read.text
        assert "has no field 'nope'" in server.log_text()
    finally:
        server.stop()
    since = _lines(tmp_path)[before:]
    assert not any(b"secrets.read" in line for line in since)
    records = subprocess.run(
        [
            sys.executable,
            "-m",
            "medsecrets",
            "audit",
            "verify",
            str(tmp_path / "audit" / "audit.jsonl"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert records.returncode == 0, records.stdout + records.stderr


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medsecrets", *args], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("process", [True, False], ids=["audit-process", "in-process"])
def test_a_file_of_several_starts_reads_back_whole(tmp_path: Path, process: bool) -> None:
    """Each start adds a plain sealed spell and sealed lines after it (an audit process
    killed after the unseal too): the server's and the CLI's readers (with the key) read
    the file whole, and no plain line written since holds an HMAC."""
    server, share, root = _initialised(tmp_path, process)
    before = len(_lines(tmp_path))
    _config(tmp_path, process=process, encrypt=KEY)
    key = ""
    for start in range(3):
        server.start()
        try:
            httpx.get(f"{server.addr}/v1/sys/health")
            assert httpx.post(f"{server.addr}/v1/sys/unseal", json={"share": share}).is_success
            if process and start == 1:  # a new audit process gets the key before writing
                (audit_process,) = server.children()
                os.kill(audit_process, signal.SIGKILL)
                read = _read_when_served(server.addr, root)
            else:
                read = httpx.get(f"{server.addr}/v1/secrets/{SECRET}", headers=_h(root))
            assert read.status_code == 200, read.text
            key = httpx.get(f"{server.addr}/v1/secrets/{KEY.partition('#')[0]}", headers=_h(root))
            key = key.json()["fields"][KEY.partition("#")[2]]
            verified = httpx.get(f"{server.addr}/v1/sys/audit/verify", headers=_h(root)).json()
            assert verified["ok"] is True, verified
            who = httpx.get(
                f"{server.addr}/v1/sys/audit/who-read", params={"path": SECRET}, headers=_h(root)
            ).json()
            assert len(who["reads"]) == start + 1 and who["unreadable"] == 0, who
        finally:
            server.stop()
    since = _lines(tmp_path)[before:]
    plain = [json.loads(line) for line in since if b'"kind":"sealed"' not in line]
    assert plain and all(record["accessor"] is None for record in plain)
    key_file = tmp_path / "audit.key"
    key_file.write_text(key)
    key_file.chmod(0o600)
    audit = str(tmp_path / "audit" / "audit.jsonl")
    verified = _cli("audit", "verify", "--key-file", str(key_file), audit)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    read = _cli("audit", "read", "--key-file", str(key_file), audit)
    assert read.returncode == 0, read.stderr
    assert len(read.stdout.splitlines()) == len(_lines(tmp_path))
    assert CANARY not in read.stdout
    who = _cli(
        "audit", "who-read", "-o", "json", "--file", audit, "--key-file", str(key_file), SECRET
    )
    assert who.returncode == 0, who.stderr
    found = json.loads(who.stdout)
    assert len(found["reads"]) == 3 and found["unreadable"] == 0, found


def _read_when_served(addr: str, root: str) -> httpx.Response:
    """Read the canary secret once the audit process is back (refused while it restarts)."""
    deadline = time.monotonic() + 30
    while True:
        read = httpx.get(f"{addr}/v1/secrets/{SECRET}", headers=_h(root))
        if read.status_code != 503 or time.monotonic() > deadline:
            return read
        time.sleep(0.2)
