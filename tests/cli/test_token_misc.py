"""``medsecrets token | provision | validate | catalog show --remote | server`` end to end."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from medsecrets.testing.serverproc import EXPORT_LINE, free_port

from .test_hostile import _closed_stdout


@pytest.mark.slow
def test_token_create_lookup_revoke(ms, dev_server):
    created = ms(
        "token",
        "create",
        "-p",
        "medessence/development/",
        "-c",
        "read",
        "-c",
        "list",
        "--ttl",
        "10m",
        "-n",
        "ci",
        "-o",
        "json",
    ).ok()
    data = created.json()
    child, info = data["token"], data["info"]
    assert child.startswith("ms.") and info["display_name"] == "ci"
    assert set(info["capabilities"]) == {"list", "read"}

    child_env = {"MEDSECRETS_TOKEN": child}
    me = ms("token", "lookup", "-o", "json", env=child_env).ok().json()
    assert me["accessor"] == info["accessor"] and child not in json.dumps(me)
    by_accessor = ms("token", "lookup", info["accessor"]).ok().stdout
    assert "ci" in by_accessor and child not in by_accessor
    by_token = ms("token", "lookup", "--token-stdin", "-o", "json", input=child + "\n").ok().json()
    assert by_token["accessor"] == info["accessor"]

    assert (
        ms("secrets", "get", "medessence/development/auth", "-f", "jwt_secret", env=child_env).code
        == 0
    )
    ms("secrets", "list", "medessence/development/", env=child_env).ok()
    ms("secrets", "list", env=child_env).error(4)  # list on every path is not granted

    table = ms("token", "create", "-p", "*", "-c", "read").ok()
    assert re.search(r"^Token: ms\.\S+$", table.stdout, re.M) and "ONCE" in table.stderr

    ms("token", "revoke", info["accessor"]).ok()
    assert "token" in ms("secrets", "list", "medessence/development/", env=child_env).error(4)
    ms("token", "lookup", info["accessor"]).error(3)

    # revoke --self
    other = ms("token", "create", "-p", "*", "-c", "read", "-o", "json").ok().json()["token"]
    ms("token", "revoke", "--self", env={"MEDSECRETS_TOKEN": other}).ok()
    ms("token", "lookup", env={"MEDSECRETS_TOKEN": other}).error(4)


def _token_creations(ms) -> int:
    """How many ``tokens.create`` requests the shared dev server's audit trail holds."""
    found = ms(
        "audit", "search", "--operation", "tokens.create", "--kind", "request",
        "--limit", "10000", "-o", "json",
    ).ok().json()  # fmt: skip
    records = found["records"] if isinstance(found, dict) else found
    assert isinstance(records, list)
    return len(records)


def _files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        yield from (p for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
def test_token_create_field_token_prints_the_bare_token_for_scripts(ms, dev_server):
    """``TOKEN=$(medsecrets token create ... --field token)``: the token alone on one line,
    no warning (it used to take ``-o json`` and a JSON parser); ``--field`` overrides
    ``-o``; no other field (the token is shown once); never in the server's files."""
    name = f"script-{os.getpid()}-{time.monotonic_ns()}"
    args = ("token", "create", "-p", "medessence/development/", "-c", "read", "-n", name)
    created = ms(*args, "--field", "token").ok()
    assert re.fullmatch(r"ms\.\S+\n", created.stdout) and created.stderr == ""
    token = created.stdout.strip()
    me = ms("token", "lookup", "-o", "json", env={"MEDSECRETS_TOKEN": token}).ok().json()
    assert me["display_name"] == name
    also = ms(*args, "-f", "token", "-o", "json").ok()
    assert re.fullmatch(r"ms\.\S+\n", also.stdout) and also.stdout != created.stdout

    assert "--field" in ms(*args, "--field", "accessor").error(2)
    before = _token_creations(ms)
    assert before >= 2  # the two above, at least
    closed = _closed_stdout(
        *args,
        "--field",
        "token",
        env={"MEDSECRETS_ADDR": dev_server.addr, "MEDSECRETS_TOKEN": dev_server.token},
    )
    assert closed.error(1) == "error: cannot print the result: standard output is closed"
    assert _token_creations(ms) == before  # refused before the server made a token

    for path in _files_under(dev_server.data_dir, dev_server.log_path.parent):
        assert token.encode() not in path.read_bytes(), path


def test_token_usage_errors(ms):
    assert "--path" in ms("token", "create", "-c", "read").error(2)
    assert "--ttl" in ms("token", "create", "-p", "*", "-c", "read", "--ttl", "soon").error(2)
    ms("token", "revoke").error(2)
    ms("token", "create", "-p", "*", "-c", "read", "--ttl", "90d").error(2)  # over 31 days


@pytest.mark.slow
def test_provision_and_validate(ms):
    report = ms("provision", "--env", "test", "-o", "json").ok().json()
    assert report["environment"] == "test"
    by_category = {i["category"]: i for i in report["items"]}
    assert set(by_category) == {
        "database",
        "ai-providers",
        "medical-encryption",
        "auth",
        "external-services",
    }
    assert by_category["database"]["status"] == "created"
    again = ms("provision", "--env", "test").ok().stdout
    assert "0 created, 5 existed already" in again and "medessence/test/database" in again

    refused = ms("provision", "--env", "production").error(2)
    assert "provided" in refused
    assert ms("secrets", "list", "medessence/production/", "-o", "json").ok().json() == []
    ms("provision", "--env", "staging", "-c", "nope").error(3)

    ok = ms("validate", "medessence/test/database", "-o", "json").ok().json()
    assert ok["valid"] is True and ok["problems"] == []
    assert "yes" in ms("validate", "medessence/test/database").ok().stdout
    ms("validate", "medessence/test/database/nothing-here").error(3)
    ms("validate", "medessence/test/nothing-here/x").error(2)  # not a catalog category


def test_provision_with_provided_values(ms, tmp_path, canary):
    provided = {
        "ai-providers": {
            "openai_api_key": "sk-" + "a" * 48,
        }
    }
    (tmp_path / "p.json").write_text(json.dumps(provided), encoding="utf-8")
    result = ms(
        "provision",
        "--env",
        "dev",
        "-c",
        "auth",
        "-c",
        "ai-providers",
        "--provided",
        str(tmp_path / "p.json"),
        "-o",
        "json",
    )
    items = result.ok().json()["items"]
    assert {i["category"] for i in items} == {"auth", "ai-providers"}
    bad = ms("provision", "--env", "dev", "--provided", "-", input=f"{canary} not json")
    assert canary not in bad.error(2)


def test_provision_that_fails_partway_says_what_it_did(ms, tmp_path, canary):
    """auth is provisioned, then ai-providers is refused: the table shows auth, and the
    one error line names the category and what stays provisioned."""
    env = "local"  # a development environment (dummies allowed) no other test provisions
    bad = {"ai-providers": {"openai_api_key": canary}}  # not an OpenAI key: refused (422)
    (tmp_path / "p.json").write_text(json.dumps(bad), encoding="utf-8")
    args = ("provision", "--env", env, "-c", "auth", "-c", "ai-providers")
    result = ms(*args, "--provided", str(tmp_path / "p.json"))
    line = result.error(2)
    assert line.startswith("error: category 'ai-providers': field 'openai_api_key'")
    assert "1 category before it provisioned" in line and canary not in line
    assert f"medessence/{env}/auth" in result.stdout and canary not in result.stdout
    data = ms(*args, "--provided", str(tmp_path / "p.json"), "-o", "json")
    data.error(2)
    report = json.loads(data.stdout)
    assert report["failed_category"] == "ai-providers"
    assert [i["status"] for i in report["items"]] == ["exists"]


def test_catalog_show_remote(ms):
    data = ms("catalog", "show", "--remote", "-o", "json").ok().json()
    assert data["prefix"] == "medessence"
    names = [c["name"] for c in data["categories"]]
    assert "database" in names
    assert "password" in ms("catalog", "show", "database", "--remote").ok().stdout
    ms("catalog", "show", "nope", "--remote").error(3)


def test_server_command_dev_mode(tmp_path, cli):
    """``medsecrets server --dev`` delegates to the server runner and prints the export line."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSECRETS_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medsecrets.cli",
            "server",
            "--dev",
            "--data-dir",
            str(tmp_path / "data"),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        match = None
        deadline = time.monotonic() + 60
        while match is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            match = EXPORT_LINE.search(line)
        assert match is not None, "no export line"
        addr, token = match.group(1), match.group(2)
        assert addr == f"http://127.0.0.1:{port}"
        health = httpx.get(f"{addr}/v1/sys/health", timeout=5).json()
        assert health["initialized"] is True and health["sealed"] is False
        listed = cli(
            "secrets",
            "list",
            "-o",
            "json",
            env={"MEDSECRETS_ADDR": addr, "MEDSECRETS_TOKEN": token},
        )
        assert len(listed.ok().json()) == 5
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("flag", ["--listen", "--data-dir", "--config"])
def test_server_command_rejects_missing_flag_values(cli, flag):
    cli("server", flag).error(2)
