"""CLI commands that need no server: generate, catalog show/check, usage errors, help."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests.cli.conftest import _base_env

from medsecrets.catalog.generators import DEFAULT_SYMBOLS


def test_generate_password_default_and_length(cli):
    out = cli("generate", "password").ok().stdout
    value = out.rstrip("\n")
    assert out.endswith("\n") and out.count("\n") == 1
    assert len(value) == 25
    assert any(c in DEFAULT_SYMBOLS for c in value)
    value = cli("generate", "password", "--length", "40", "--no-symbols").ok().stdout.strip()
    assert len(value) == 40 and value.isalnum()


def test_generate_kinds_json_and_count(cli):
    data = cli("generate", "hex", "--bytes", "20", "-o", "json").ok().json()
    assert data["kind"] == "hex" and re.fullmatch(r"[0-9a-f]{40}", data["value"])
    data = cli("generate", "uuid", "--count", "3", "-o", "json").ok().json()
    assert len(set(data["values"])) == 3
    lines = cli("generate", "token", "-n", "2").ok().stdout.split()
    assert len(lines) == 2 and lines[0] != lines[1]
    value = cli("generate", "password", "-p", "length=12", "-p", "digits=false").ok().stdout
    assert len(value.strip()) == 12 and not any(c.isdigit() for c in value)


def test_generate_bad_input_is_usage_error(cli):
    assert "length" in cli("generate", "password", "--length", "3").error(2)
    assert "unknown generator kind" in cli("generate", "nope").error(2)
    assert "length" in cli("generate", "password", "-p", "length=x").error(2)
    assert "NAME=VALUE" in cli("generate", "password", "-p", "length").error(2)


def test_catalog_show_offline(cli):
    out = cli("catalog", "show").ok().stdout
    for name in ("database", "ai-providers", "medical-encryption", "auth", "external-services"):
        assert name in out
    data = cli("catalog", "show", "-o", "json").ok().json()
    assert data["prefix"] == "medessence"
    assert data["categories"][0]["name"] == "database"
    category = cli("catalog", "show", "database", "-o", "json").ok().json()
    assert {f["name"] for f in category["fields"]} >= {"username", "password", "host"}
    table = cli("catalog", "show", "database").ok().stdout
    assert "connection_string" in table and "password(" in table


def test_catalog_show_unknown_category_is_not_found(cli):
    assert "unknown secret category 'bogus'" in cli("catalog", "show", "bogus").error(3)


def test_catalog_check_ok_and_located_error(cli, tmp_path: Path):
    good = tmp_path / "good.yaml"
    good.write_text(
        "version: 1\nprefix: acme\ncategories:\n  db:\n    rotation: {interval_days: 30}\n"
        "    fields:\n      password:\n        source: generated\n        generator: password\n",
        encoding="utf-8",
    )
    out = cli("catalog", "check", str(good)).ok().stdout
    assert out.startswith(f"OK: {good}") and "db" in out
    assert cli("catalog", "show", "--file", str(good), "-o", "json").ok().json()["prefix"] == "acme"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\ncategories:\n  db:\n    rotation: {interval_days: 0}\n"
        "    fields:\n      password: {source: generated, generator: password}\n",
        encoding="utf-8",
    )
    line = cli("catalog", "check", str(bad)).error(1)
    assert line.startswith(f"error: {bad}:4: ")
    assert "interval_days" in line
    missing = cli("catalog", "check", str(tmp_path / "none.yaml")).error(1)
    assert "none.yaml" in missing


def test_usage_errors_exit_2_on_one_line(cli):
    assert "Missing argument" in cli("secrets", "get").error(2)
    assert "--bogus" in cli("secrets", "list", "--bogus").error(2)
    assert "No such command" in cli("nope").error(2)
    assert "--output" in cli("secrets", "list", "-o", "yaml").error(2)
    result = cli()
    assert result.code == 2 and "Usage" in result.stdout


def test_stray_arguments_are_not_echoed(cli, canary):
    line = cli("generate", "password", canary).error(2)
    assert canary not in line
    line = cli("secrets", "put", "medessence/x/auth", "smtp_password=ok", canary).error(2)
    assert canary not in line and "argument 2" in line


def test_help_documents_exit_codes_and_completion(cli):
    out = cli("--help").ok().stdout
    assert "Exit codes" in out and "3 not found" in out and "5 sealed" in out
    assert "--install-completion" in out and "--show-completion" in out
    assert "Usage" in cli("secrets", "put", "--help").ok().stdout


def test_shell_completion_script(cli):
    result = cli(
        env={
            "_MEDSECRETS_COMPLETE": "complete_bash",
            "COMP_WORDS": "medsecrets sec",
            "COMP_CWORD": "1",
        }
    )
    assert result.code == 0
    assert "secrets" in result.stdout


def test_version(cli):
    assert cli("--version").ok().stdout.startswith("medsecrets ")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_down_is_one_line_exit_1(cli):
    addr = f"http://127.0.0.1:{_closed_port()}"
    line = cli("secrets", "list", env={"MEDSECRETS_ADDR": addr, "MEDSECRETS_TOKEN": "ms.x"}).error(
        1
    )
    assert "cannot reach the server" in line and addr in line


def test_bad_address_is_usage_error(cli):
    line = cli("operator", "status", "--addr", "ftp://example").error(2)
    assert "http://" in line


def _command_paths() -> list[tuple[str, ...]]:
    import typer

    from medsecrets.cli.app import app

    root = typer.main.get_command(app)
    paths: list[tuple[str, ...]] = []

    def walk(command, prefix):
        subcommands = getattr(command, "commands", {})
        for name, sub in subcommands.items():
            paths.append((*prefix, name))
            walk(sub, (*prefix, name))

    walk(root, ())
    return paths


def test_every_command_renders_help(capsys):
    """In process (fast): every command's --help renders (Rich markup in help texts is valid)."""
    from medsecrets.cli.app import main

    paths = _command_paths()
    assert ("secrets", "put") in paths and ("operator", "rewrap") in paths and ("server",) in paths
    for path in paths:
        assert main([*path, "--help"]) == 0, path
        captured = capsys.readouterr()
        assert "Usage" in captured.out and captured.err == "", path


def test_python_dash_m_medsecrets_is_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "medsecrets", "--help"],
        capture_output=True, text=True, env=_base_env(), timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "audit" in done.stdout and "secrets" in done.stdout


def test_a_table_on_a_pipe_keeps_each_row_on_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Folded at 80 columns, ``secrets list | grep <path>`` missed long paths."""
    import io

    from medsecrets.cli.output import out, rows_table

    path = "medessence/development/external-services/" + "a-rather-long-secret-name-" * 4
    monkeypatch.delenv("COLUMNS", raising=False)
    piped = io.StringIO()
    out(piped).print(rows_table("secrets", [{"path": path, "version": 3}], ["path", "version"]))
    assert any(path in line for line in piped.getvalue().splitlines())
    monkeypatch.setenv("COLUMNS", "60")  # asked for: honoured
    narrow = io.StringIO()
    out(narrow).print(rows_table("secrets", [{"path": path, "version": 3}], ["path", "version"]))
    assert not any(path in line for line in narrow.getvalue().splitlines())
